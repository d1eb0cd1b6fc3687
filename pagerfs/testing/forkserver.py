"""A mount starter with the daemon's imports done once: `pagerfs mount` by fork.

Each `python -m pagerfs mount` pays for a Python start and the imports of trio, pyfuse3
and the store (most of a mount's time). A test suite mounts hundreds of times, so
pagerfs.testing keeps one of these per process: it has imported all that, runs no
threads, and for each request forks a child that runs the very `pagerfs mount` command
line (pagerfs.cli.main), which forks the daemon as usual.

Protocol, one JSON line each way on stdin/stdout:
    request  {"argv": [...], "timeout": seconds}
    answer   {"status": exit status, "stderr": what the command wrote on stderr}
It ends at EOF on stdin (its owner exited), and ignores SIGINT (a Ctrl-C is its
owner's to handle).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys


def _preload() -> None:
    # Everything `pagerfs mount` imports, so that a forked child imports nothing.
    import pyfuse3  # noqa: F401
    import trio  # noqa: F401

    import pagerfs.cli  # noqa: F401
    import pagerfs.fuse.daemon  # noqa: F401
    import pagerfs.fuse.faults_file  # noqa: F401
    import pagerfs.fuse.operations  # noqa: F401
    import pagerfs.pager.user_pager  # noqa: F401


def _run(argv: list[str], timeout: float) -> dict:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 2
        try:
            os.close(read_end)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)  # the daemon must not hold our answers' pipe
            os.dup2(write_end, 2)
            os.close(null)
            os.close(write_end)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            from pagerfs.cli import main

            status = main(argv)
        finally:
            os._exit(status if isinstance(status, int) else 2)
    os.close(write_end)
    pidfd = os.pidfd_open(pid)
    chunks = []
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
        while select.select([read_end], [], [], 0)[0] and (chunk := os.read(read_end, 65536)):
            chunks.append(chunk)
    finally:
        os.close(pidfd)
        os.close(read_end)
    return {"status": os.waitstatus_to_exitcode(wait_status),
            "stderr": b"".join(chunks).decode(errors="replace")}


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        answer = _run([str(a) for a in request["argv"]], float(request.get("timeout", 10)))
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
