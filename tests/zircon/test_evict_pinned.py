"""scanner_evict and the pages a woken reader has not collected yet (pinned)."""

from __future__ import annotations

import threading

from pagerfs import zircon as zx
from pagerfs.zircon import blocking

PAGE = zx.PAGE_SIZE


def committed(handle: int) -> int:
    return zx.zx_object_get_info(handle, zx.ZX_INFO_VMO).committed_bytes


def test_evict_waits_for_a_woken_reader_to_collect_its_pages(pager, spawn, held_after_wake):
    vmo = pager.create_vmo(4)

    def read():
        held_after_wake.hold_me()
        return vmo.check(0, 2, False)

    reader = spawn(read)
    assert pager.wait_for_page_read(vmo, 0, 2)
    pager.supply_pages(vmo, 0, 4)
    assert held_after_wake.woken.wait(30)  # pages 0-1 present, pinned for the reader
    # Pages no reader holds go at once.
    assert zx.scanner_evict(vmo.handle, 2 * PAGE, 2 * PAGE) == 2
    evicted = []
    evictor = threading.Thread(
        target=lambda: evicted.append(zx.scanner_evict(vmo.handle, 0, 4 * PAGE)))
    evictor.start()
    # It either waits for the reader (right) or ends leaving its pages (wrong).
    while evictor.is_alive() and not blocking.wait_until_blocked(evictor.ident, 0.05):
        pass
    held_after_wake.let_go()
    assert reader.wait()  # the reader still gets the pages it was woken for
    evictor.join(30)
    assert evicted == [2]
    assert committed(vmo.handle) == 0
    # and they are asked for again
    again = spawn(lambda: vmo.check(0, 1, False))
    assert pager.wait_for_page_read(vmo, 0, 1)
    pager.supply_pages(vmo, 0, 1)
    assert again.wait()
