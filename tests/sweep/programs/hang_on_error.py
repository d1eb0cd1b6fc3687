"""Reads a file; on a read error it waits forever, ignoring SIGTERM, with a child of its
own that outlives it: what a sweep's timeout and process-group kill must clean up."""
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
    subprocess.Popen(["sleep", "3600"])
    while True:
        time.sleep(3600)
print(len(data))
