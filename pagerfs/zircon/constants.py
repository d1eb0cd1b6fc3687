"""Zircon's numeric constants: statuses, rights, ops, packet types, sizes.

Values are Zircon's own (zircon/system/public/zircon/*.h), so that code written against
the real headers reads the same here.
"""

from __future__ import annotations

PAGE_SIZE = 4096
PAGE_SHIFT = 12

# --- zx_status_t --------------------------------------------------------------
ZX_OK = 0
ZX_ERR_INTERNAL = -1
ZX_ERR_NOT_SUPPORTED = -2
ZX_ERR_NO_RESOURCES = -3
ZX_ERR_NO_MEMORY = -4
ZX_ERR_INTERNAL_INTR_RETRY = -6
ZX_ERR_INVALID_ARGS = -10
ZX_ERR_BAD_HANDLE = -11
ZX_ERR_WRONG_TYPE = -12
ZX_ERR_BAD_SYSCALL = -13
ZX_ERR_OUT_OF_RANGE = -14
ZX_ERR_BUFFER_TOO_SMALL = -15
ZX_ERR_BAD_STATE = -20
ZX_ERR_TIMED_OUT = -21
ZX_ERR_SHOULD_WAIT = -22
ZX_ERR_CANCELED = -23
ZX_ERR_PEER_CLOSED = -24
ZX_ERR_NOT_FOUND = -25
ZX_ERR_ALREADY_EXISTS = -26
ZX_ERR_ALREADY_BOUND = -27
ZX_ERR_UNAVAILABLE = -28
ZX_ERR_ACCESS_DENIED = -30
ZX_ERR_IO = -40
ZX_ERR_IO_REFUSED = -41
ZX_ERR_IO_DATA_INTEGRITY = -42
ZX_ERR_IO_DATA_LOSS = -43
ZX_ERR_IO_NOT_PRESENT = -44
ZX_ERR_IO_OVERRUN = -45
ZX_ERR_IO_MISSED_DEADLINE = -46
ZX_ERR_IO_INVALID = -47
ZX_ERR_BAD_PATH = -50
ZX_ERR_NOT_DIR = -51
ZX_ERR_NOT_FILE = -52
ZX_ERR_FILE_BIG = -53
ZX_ERR_NO_SPACE = -54
ZX_ERR_NOT_EMPTY = -55
ZX_ERR_STOP = -60
ZX_ERR_NEXT = -61
ZX_ERR_ASYNC = -62
ZX_ERR_PROTOCOL_NOT_SUPPORTED = -70
ZX_ERR_ADDRESS_UNREACHABLE = -71
ZX_ERR_ADDRESS_IN_USE = -72
ZX_ERR_NOT_CONNECTED = -73
ZX_ERR_CONNECTION_REFUSED = -74
ZX_ERR_CONNECTION_RESET = -75
ZX_ERR_CONNECTION_ABORTED = -76

# Names by value, for ZxError's message (built from the table above, so they agree).
STATUS_NAMES: dict[int, str] = {
    value: name
    for name, value in list(globals().items())
    if (name == "ZX_OK" or name.startswith("ZX_ERR_")) and isinstance(value, int)
}

# --- rights ---------------------------------------------------------------------
ZX_RIGHT_NONE = 0
ZX_RIGHT_DUPLICATE = 1 << 0
ZX_RIGHT_TRANSFER = 1 << 1
ZX_RIGHT_READ = 1 << 2
ZX_RIGHT_WRITE = 1 << 3
ZX_RIGHT_EXECUTE = 1 << 4
ZX_RIGHT_MAP = 1 << 5
ZX_RIGHT_GET_PROPERTY = 1 << 6
ZX_RIGHT_SET_PROPERTY = 1 << 7
ZX_RIGHT_ENUMERATE = 1 << 8
ZX_RIGHT_DESTROY = 1 << 9
ZX_RIGHT_SET_POLICY = 1 << 10
ZX_RIGHT_GET_POLICY = 1 << 11
ZX_RIGHT_SIGNAL = 1 << 12
ZX_RIGHT_SIGNAL_PEER = 1 << 13
ZX_RIGHT_WAIT = 1 << 14
ZX_RIGHT_INSPECT = 1 << 15
ZX_RIGHT_MANAGE_JOB = 1 << 16
ZX_RIGHT_MANAGE_PROCESS = 1 << 17
ZX_RIGHT_MANAGE_THREAD = 1 << 18
ZX_RIGHT_APPLY_PROFILE = 1 << 19
ZX_RIGHT_MANAGE_SOCKET = 1 << 20
ZX_RIGHT_OP_CHILDREN = 1 << 21
ZX_RIGHT_RESIZE = 1 << 22
ZX_RIGHT_ATTACH_VMO = 1 << 23
ZX_RIGHT_MANAGE_VMO = 1 << 24
ZX_RIGHT_SAME_RIGHTS = 1 << 31

ZX_RIGHTS_BASIC = ZX_RIGHT_TRANSFER | ZX_RIGHT_DUPLICATE | ZX_RIGHT_WAIT | ZX_RIGHT_INSPECT
ZX_RIGHTS_IO = ZX_RIGHT_READ | ZX_RIGHT_WRITE
ZX_RIGHTS_PROPERTY = ZX_RIGHT_GET_PROPERTY | ZX_RIGHT_SET_PROPERTY

ZX_DEFAULT_VMO_RIGHTS = (
    ZX_RIGHTS_BASIC | ZX_RIGHTS_IO | ZX_RIGHTS_PROPERTY | ZX_RIGHT_MAP | ZX_RIGHT_SIGNAL
)
# Ports cannot be waited on, so they lack WAIT (as in Zircon).
ZX_DEFAULT_PORT_RIGHTS = (ZX_RIGHTS_BASIC & ~ZX_RIGHT_WAIT) | ZX_RIGHTS_IO
# A pager handle cannot be duplicated: one pager, one owner.
ZX_DEFAULT_PAGER_RIGHTS = (
    ZX_RIGHT_INSPECT | ZX_RIGHT_TRANSFER | ZX_RIGHT_ATTACH_VMO | ZX_RIGHT_MANAGE_VMO
)
ZX_DEFAULT_VMAR_RIGHTS = (
    (ZX_RIGHTS_BASIC & ~ZX_RIGHT_WAIT)
    | ZX_RIGHTS_IO
    | ZX_RIGHT_EXECUTE
    | ZX_RIGHT_MAP
    | ZX_RIGHT_OP_CHILDREN
)

# --- object types (zx_obj_type_t) ----------------------------------------------
ZX_OBJ_TYPE_NONE = 0
ZX_OBJ_TYPE_VMO = 3
ZX_OBJ_TYPE_PORT = 6
ZX_OBJ_TYPE_VMAR = 18
ZX_OBJ_TYPE_PAGER = 28

# --- options and ops ------------------------------------------------------------
ZX_VMO_RESIZABLE = 1 << 1

ZX_VMO_OP_COMMIT = 1
ZX_VMO_OP_DECOMMIT = 2

ZX_PAGER_OP_FAIL = 1

ZX_VM_PERM_READ = 1 << 0
ZX_VM_PERM_WRITE = 1 << 1
ZX_VM_PERM_EXECUTE = 1 << 2
ZX_VM_SPECIFIC = 1 << 10

# --- ports and packets ----------------------------------------------------------
ZX_PKT_TYPE_PAGE_REQUEST = 9
ZX_PAGER_VMO_READ = 0
ZX_PAGER_VMO_COMPLETE = 1

# --- time -----------------------------------------------------------------------
ZX_TIME_INFINITE = 2**63 - 1
ZX_TIME_INFINITE_PAST = -(2**63)

# --- zx_object_get_info topics ---------------------------------------------------
ZX_INFO_HANDLE_BASIC = 2
# Zircon versions its topics in the top nibble: ZX_INFO_VMO is version 1 of topic 23.
ZX_INFO_VMO_V1 = 23
ZX_INFO_VMO = (1 << 28) | 23

ZX_INFO_VMO_TYPE_PAGED = 1 << 0
ZX_INFO_VMO_RESIZABLE = 1 << 1
ZX_INFO_VMO_VIA_HANDLE = 1 << 3
ZX_INFO_VMO_PAGER_BACKED = 1 << 5

# --- ranges of the C types ------------------------------------------------------
U64_LIMIT = 1 << 64
U32_LIMIT = 1 << 32
INT64_MIN = -(1 << 63)
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

ZX_HANDLE_INVALID_VALUE = 0
ZX_HANDLE_INVALID = ZX_HANDLE_INVALID_VALUE

# --- exceptions ------------------------------------------------------------------
# The exception a thread takes when a fault through a mapping cannot be resolved.
ZX_EXCP_FATAL_PAGE_FAULT = 0x108
