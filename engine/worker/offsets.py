"""Which dispatch offsets a worker may commit: up to the lowest unfinished one per partition.

Dispatch records finish out of order (a short job taken after a long one ends first), but a
Kafka offset commit says "everything before this is done". So the offset committed for a
partition is the lowest offset still running there, or one past the highest taken when
nothing runs. A crash then redelivers exactly the unfinished records (and perhaps some that
finished after the last commit): at-least-once execution.
"""

from __future__ import annotations

from collections.abc import Iterable

#: A partition of a topic: ``(topic, partition)``.
Partition = tuple[str, int]


class OffsetTracker:
    """Records taken and finished offsets per partition and says what is safe to commit."""

    def __init__(self) -> None:
        self._unfinished: dict[Partition, set[int]] = {}
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def taken(self, partition: Partition, offset: int) -> None:
        """A record at ``offset`` was taken and is not finished yet."""
        self._unfinished.setdefault(partition, set()).add(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def finished(self, partition: Partition, offset: int) -> None:
        """The record at ``offset`` is done (run to its end, or dead-lettered)."""
        unfinished = self._unfinished.get(partition)
        if unfinished is not None:
            unfinished.discard(offset)

    def done(self, partition: Partition, offset: int) -> None:
        """A record that needed no work (undecodable, duplicate) is done at once."""
        self.taken(partition, offset)
        self.finished(partition, offset)

    def safe_offset(self, partition: Partition) -> int | None:
        """The offset to commit for ``partition`` (the next record to read after a crash)."""
        if partition not in self._next:
            return None
        unfinished = self._unfinished.get(partition)
        if unfinished:
            return min(unfinished)
        return self._next[partition]

    def unfinished(self, partition: Partition) -> frozenset[int]:
        """The offsets of ``partition`` still running."""
        return frozenset(self._unfinished.get(partition, ()))

    def to_commit(self, partitions: Iterable[Partition] | None = None) -> dict[Partition, int]:
        """The safe offsets that moved since they were last marked committed.

        Args:
            partitions: restrict to these (default: every tracked partition).
        """
        chosen = self._next.keys() if partitions is None else partitions
        out: dict[Partition, int] = {}
        for partition in chosen:
            offset = self.safe_offset(partition)
            if offset is not None and self._committed.get(partition) != offset:
                out[partition] = offset
        return out

    def committed(self, offsets: dict[Partition, int]) -> None:
        """Marks offsets as committed so :meth:`to_commit` does not return them again."""
        self._committed.update(offsets)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drops partitions this worker no longer owns (revoked or lost)."""
        for partition in partitions:
            self._unfinished.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)

    @property
    def partitions(self) -> list[Partition]:
        """The partitions tracked."""
        return list(self._next)
