"""How pagerfs.testing runs `pagerfs mount`: through its forkserver when it can."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pagerfs

# The daemon runs the very pagerfs this process imported.
_PACKAGE_ROOT = str(Path(pagerfs.__file__).resolve().parents[1])


class Starter:
    """Runs `pagerfs mount` command lines, through a forkserver when one can be had
    (see pagerfs.testing.forkserver: it saves the Python start and the imports, most
    of a mount's time), else as a plain subprocess."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: the signal sweep stops the server
        self._server: subprocess.Popen | None = None
        self._broken = False
        self._pid = os.getpid()

    @staticmethod
    def env() -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        return env

    def _start(self) -> subprocess.Popen | None:
        if self._pid != os.getpid():
            # A forked child: the server's pipes are its parent's to use.
            self._server, self._pid = None, os.getpid()
        if self._server is not None and self._server.poll() is None:
            return self._server
        self._stop()
        if self._broken:
            return None
        server = subprocess.Popen([sys.executable, "-m", "pagerfs.testing.forkserver"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, env=self.env(), text=True,
                                  start_new_session=True)
        try:
            hello = json.loads(server.stdout.readline() or "{}")
        except ValueError:
            hello = {}
        if "ready" not in hello:
            self._server = server
            self._stop()
            self._broken = True
            return None
        self._server = server
        return server

    def run(self, argv: list[str], timeout: float) -> tuple[int, str]:
        with self._lock:
            server = self._start()
            if server is not None:
                try:
                    server.stdin.write(json.dumps({"argv": argv, "timeout": timeout}) + "\n")
                    server.stdin.flush()
                    answer = json.loads(server.stdout.readline())
                    return answer["status"], answer["stderr"]
                except (OSError, ValueError, KeyError):
                    self._stop()  # and start afresh next time
                    self._server = None
        try:
            done = subprocess.run([sys.executable, "-m", "pagerfs", *argv], capture_output=True,
                                  text=True, timeout=timeout, env=self.env(),
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return -signal.SIGKILL, ""
        return done.returncode, done.stderr

    def _stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        for stream in (server.stdin, server.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    def stop(self) -> None:
        with self._lock:
            self._stop()


starter = Starter()
