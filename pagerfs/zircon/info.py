"""Records returned by zx_object_get_info."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VmoInfo:
    """zx_info_vmo_t (the fields this model can fill)."""

    koid: int
    name: str
    size_bytes: int
    parent_koid: int
    num_children: int
    num_mappings: int
    share_count: int
    flags: int
    committed_bytes: int
    handle_rights: int
    cache_policy: int


@dataclass(frozen=True, slots=True)
class HandleBasicInfo:
    """zx_info_handle_basic_t."""

    koid: int
    rights: int
    type: int
    related_koid: int
