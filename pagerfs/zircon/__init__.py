"""pagerfs.zircon: a simulated Zircon kernel with pagers and pager-backed VMOs.

It follows the contract in shared/reference/zircon-pager-contract.md (see
docs/KERNEL.md for the model's data structures, locking and differences from Zircon):

    from pagerfs import zircon as zx
    pager = zx.zx_pager_create(0)
    port = zx.zx_port_create(0)
    vmo = zx.zx_pager_create_vmo(pager, 0, port, key, size)

Besides the contract's syscalls it exposes the kernel's page scanner
(scanner_evict, scanner_set_limit, scanner_committed_bytes), zx_object_get_info, and
vmo_read_async (zx_vmo_read for a caller that must not block) and port_hold_wakeups
(for a reader that serves its own page request).
"""

from . import constants as _constants
from .constants import *  # noqa: F403 - Zircon's constants are part of the API
from .errors import PageFault, ZxError, status_name
from .info import HandleBasicInfo, VmoInfo
from .port import PageRequest, PortPacket
from .syscalls import (
    port_hold_wakeups,
    scanner_committed_bytes,
    scanner_evict,
    scanner_set_limit,
    vmo_read_async,
    zx_clock_get_monotonic,
    zx_deadline_after,
    zx_handle_close,
    zx_handle_duplicate,
    zx_handle_replace,
    zx_object_get_info,
    zx_pager_create,
    zx_pager_create_vmo,
    zx_pager_detach_vmo,
    zx_pager_op_range,
    zx_pager_supply_pages,
    zx_port_create,
    zx_port_wait,
    zx_vmar_map,
    zx_vmar_root_self,
    zx_vmo_create,
    zx_vmo_get_size,
    zx_vmo_op_range,
    zx_vmo_read,
    zx_vmo_write,
)
from .vmar import Mapping

_CONSTANTS = [
    n for n in dir(_constants) if n.startswith("ZX_") or n in ("PAGE_SIZE", "PAGE_SHIFT")
]

__all__ = _CONSTANTS + [
    "HandleBasicInfo",
    "Mapping",
    "PageFault",
    "PageRequest",
    "PortPacket",
    "VmoInfo",
    "ZxError",
    "port_hold_wakeups",
    "scanner_committed_bytes",
    "scanner_evict",
    "scanner_set_limit",
    "status_name",
    "vmo_read_async",
    "zx_clock_get_monotonic",
    "zx_deadline_after",
    "zx_handle_close",
    "zx_handle_duplicate",
    "zx_handle_replace",
    "zx_object_get_info",
    "zx_pager_create",
    "zx_pager_create_vmo",
    "zx_pager_detach_vmo",
    "zx_pager_op_range",
    "zx_pager_supply_pages",
    "zx_port_create",
    "zx_port_wait",
    "zx_vmar_map",
    "zx_vmar_root_self",
    "zx_vmo_create",
    "zx_vmo_get_size",
    "zx_vmo_op_range",
    "zx_vmo_read",
    "zx_vmo_write",
]
