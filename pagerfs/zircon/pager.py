"""The pager object: the owner of pager-backed VMOs."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from .constants import ZX_OBJ_TYPE_PAGER
from .handles import KObject

if TYPE_CHECKING:
    from .vmo import PagerVmo


class Pager(KObject):
    obj_type = ZX_OBJ_TYPE_PAGER
    __slots__ = ("_lock", "_vmos", "closed")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._vmos: weakref.WeakSet[PagerVmo] = weakref.WeakSet()
        self.closed = False

    def attach(self, vmo: "PagerVmo") -> bool:
        """Adopt a new VMO; False if the pager is already closed."""
        with self._lock:
            if self.closed:
                return False
            self._vmos.add(vmo)
            return True

    def forget(self, vmo: "PagerVmo") -> None:
        with self._lock:
            self._vmos.discard(vmo)

    def on_zero_handles(self) -> None:
        # Closing the pager ends its VMOs' page source: they behave as detached, but
        # nobody is left to tell, so no COMPLETE packets.
        with self._lock:
            self.closed = True
            vmos = list(self._vmos)
        for vmo in vmos:
            vmo.detach(send_complete=False)
