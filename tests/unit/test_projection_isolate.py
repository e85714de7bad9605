"""Finding the poison records of a failed batch by splitting it (no DuckDB, no Kafka)."""

from __future__ import annotations

from collections.abc import Sequence

from projections.isolate import isolate


class Store:
    """Commits pieces of records; a piece holding a poison record fails and leaves nothing."""

    def __init__(self, poison: set[int], flaky: set[int] | None = None) -> None:
        self.poison = poison
        self.flaky = set(flaky or ())  # fail once, then go through
        self.committed: list[int] = []
        self.attempts = 0

    def attempt(self, piece: Sequence[int]) -> Exception | None:
        self.attempts += 1
        bad = [n for n in piece if n in self.poison or n in self.flaky]
        if bad:
            self.flaky -= set(bad)
            return ValueError(f"cannot write {bad[0]}")
        self.committed.extend(piece)
        return None


def test_a_good_batch_is_one_commit() -> None:
    store = Store(poison=set())
    assert isolate(list(range(100)), store.attempt, lambda n, e: None) == 0
    assert store.committed == list(range(100)) and store.attempts == 1


def test_the_poison_is_found_and_every_other_record_is_committed_in_order() -> None:
    store = Store(poison={17, 60})
    found: list[tuple[int, str]] = []
    assert isolate(list(range(100)), store.attempt, lambda n, e: found.append((n, str(e)))) == 2
    assert found == [(17, "cannot write 17"), (60, "cannot write 60")]
    assert store.committed == [n for n in range(100) if n not in (17, 60)]
    assert store.attempts < 40  # about 2·log2(n) per poison record, not one per record


def test_a_record_that_fails_once_is_retried_not_condemned() -> None:
    store = Store(poison=set(), flaky={5})
    found: list[int] = []
    assert isolate(list(range(8)), store.attempt, lambda n, e: found.append(n)) == 0
    assert found == [] and store.committed == list(range(8))


def test_nothing_to_isolate() -> None:
    store = Store(poison=set())
    assert isolate([], store.attempt, lambda n, e: None) == 0
    assert store.attempts == 0
