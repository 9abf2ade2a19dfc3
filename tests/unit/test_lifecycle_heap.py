"""A long-running command settles its heap once started: what is loaded by then leaves the
collector's generations, and young collections come less often."""

from __future__ import annotations

import gc

from service.lifecycle import GC_YOUNG_EVERY, settle_heap


def test_settle_heap_freezes_what_is_loaded_and_spaces_young_collections() -> None:
    threshold = gc.get_threshold()
    try:
        gc.unfreeze()
        loaded = ["alive across the call"]  # a container: tracked until frozen
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert all(loaded is not o for o in gc.get_objects())  # frozen objects are not tracked
        assert gc.get_threshold() == (GC_YOUNG_EVERY, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
