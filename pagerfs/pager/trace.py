"""--trace FILE: one JSON line per FUSE READ, page request packet, supply and FAIL."""

from __future__ import annotations

import json
import threading
import time
from typing import IO


class Trace:
    def __init__(self, stream: IO[str] | None):
        self._stream = stream
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | None) -> "Trace":
        # Line-buffered so that `tail -f` and tests see each event as it happens.
        return cls(open(path, "a", buffering=1, encoding="utf-8") if path else None)

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def event(self, event: str, **fields) -> None:
        if self._stream is None:
            return
        line = json.dumps({"t": round(time.time(), 6), "event": event, **fields})
        with self._lock:
            self._stream.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
