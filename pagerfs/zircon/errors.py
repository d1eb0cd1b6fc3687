"""The two ways a syscall reports failure: ZxError (a status) and PageFault (a fatal
page fault through a mapping, Zircon's ZX_EXCP_FATAL_PAGE_FAULT)."""

from __future__ import annotations

from .constants import STATUS_NAMES, ZX_EXCP_FATAL_PAGE_FAULT


def status_name(status: int) -> str:
    """Zircon's name for a status, as zx_status_get_string() gives it."""
    return STATUS_NAMES.get(status, "(UNKNOWN)")


class ZxError(Exception):
    """A failed syscall; .status is the negative zx_status_t."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    def __str__(self) -> str:
        return f"{status_name(self.status)} ({self.status})"

    def __repr__(self) -> str:
        return f"ZxError({status_name(self.status)})"

    def __reduce__(self):  # pickles (e.g. across processes) as ZxError(status)
        return (type(self), (self.status,))


class PageFault(Exception):
    """An access through a mapping that could not be resolved.

    .synth_code is the status the kernel would put in the exception report, .offset the
    offset within the mapping of the byte that faulted.
    """

    type = ZX_EXCP_FATAL_PAGE_FAULT

    def __init__(self, synth_code: int, offset: int = 0) -> None:
        super().__init__(synth_code, offset)
        self.synth_code = synth_code
        self.offset = offset

    def __str__(self) -> str:
        return (
            f"fatal page fault at mapping offset {self.offset:#x}: "
            f"{status_name(self.synth_code)} ({self.synth_code})"
        )

    def __reduce__(self):
        return (type(self), (self.synth_code, self.offset))
