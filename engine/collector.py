"""Python's cyclic garbage collector, tuned for joblog's long-running services.

The scheduler and the projector hold large, long-lived state (the book, the fold's rows) and
make little cyclic garbage: what they drop is freed by reference counting. At CPython's
default thresholds the collector runs every 700 allocations and its older generations
rescan that state again and again (BENCHMARKS.md, "The garbage collector").
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Allocations (net of deallocations) between two collections of the youngest generation in a
#: service process; CPython's default is 700. The older generations keep their defaults'
#: ratios (every 20th collection of the one below).
SERVICE_THRESHOLD = 50_000


def tune_for_service() -> None:
    """Sets the collector's thresholds for a service process (call once, at its start)."""
    gc.set_threshold(SERVICE_THRESHOLD, 20, 20)


@contextmanager
def collection_paused(*, freeze: bool = False) -> Iterator[None]:
    """Pauses the collector for a bulk load, such as a scheduler's rebuild.

    A rebuild creates millions of long-lived objects and almost no garbage, but the
    collector's older generations scan the whole growing book: 40 % of the time of a rebuild
    of 1,000,000 events. The collector's previous state is restored afterwards.

    Args:
        freeze: once the load succeeded, move every object tracked so far to the permanent
            generation (:func:`gc.freeze`), so the first full collection after the load
            does not scan all of them once more. Frozen objects are still freed by
            reference counting; only cycles among them would outlive their use.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if freeze:
            gc.freeze()
    finally:
        if was_enabled:
            gc.enable()
