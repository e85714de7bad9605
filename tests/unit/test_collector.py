"""The garbage collector's settings for services and bulk loads."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from engine import collector


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_a_bulk_load_pauses_the_collector_and_restores_it() -> None:
    gc.enable()
    with collector.collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_pause_keeps_a_collector_that_was_off_off_even_on_error() -> None:
    gc.disable()
    with pytest.raises(RuntimeError), collector.collection_paused():
        raise RuntimeError("boom")
    assert not gc.isenabled()


def test_a_service_collects_its_youngest_generation_less_often() -> None:
    collector.tune_for_service()
    assert gc.get_threshold() == (collector.SERVICE_THRESHOLD, 20, 20)


def test_a_bulk_load_can_leave_its_objects_out_of_later_collections() -> None:
    gc.enable()
    try:
        with collector.collection_paused(freeze=True):
            loaded = [{"n": n} for n in range(1000)]
        assert gc.get_freeze_count() >= len(loaded)
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_failed_bulk_load_freezes_nothing() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError), collector.collection_paused(freeze=True):
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0
