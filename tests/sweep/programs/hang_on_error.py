"""Reads a file; on a read error it waits forever, ignoring SIGTERM, with a child of its
own that outlives it: what a sweep's timeout and process-group kill must clean up.
A second argument names a FIFO to announce the hang on, for a test to wait on."""
import os
import signal
import subprocess
import sys
import time

try:
    with open(sys.argv[1], "rb") as f:
        data = f.read()
except OSError:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The child is named after this process's argv[0] (`exec -a NAME`), so that a test
    # can look for both by that name.
    with open("/proc/self/cmdline", "rb") as f:
        name = f.read().split(b"\0")[0].decode()
    subprocess.Popen([f"{name}-child", "3600"], executable="sleep")
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as fifo:
            fifo.write("hung\n")
    while True:
        time.sleep(3600)
print(len(data))
