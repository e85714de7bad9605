"""Finding the records that poison a batch: split it until the failing record stands alone.

The projector writes a batch as one DuckDB transaction. When the batch cannot be folded or
written, :func:`isolate` writes it again in pieces, keeping the batch's order: a piece that
fails is split in two, a piece that goes through is committed, and a single record that
fails twice in a row is *poison* and handed to ``on_poison`` (the projector dead-letters it,
a rebuild skips it). A batch of n records with one poison record costs about 2·log2(n)
extra transactions; the good records around it are all written.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def isolate(
    items: Sequence[T],
    attempt: Callable[[Sequence[T]], Exception | None],
    on_poison: Callable[[T, Exception], None],
) -> int:
    """Commits ``items`` piece by piece in order and hands over the ones that always fail.

    Args:
        items: the records of the failed batch, in the order they were read.
        attempt: folds and commits one piece; returns the error if it failed (and then left
            nothing behind), ``None`` if the piece is in.
        on_poison: called, in order, with each record that failed alone twice and its error.

    Returns:
        How many records were poison.
    """
    poison = 0
    pieces: deque[Sequence[T]] = deque([items] if items else [])
    while pieces:
        piece = pieces.popleft()
        error = attempt(piece)
        if error is None:
            continue
        if len(piece) > 1:
            middle = len(piece) // 2
            pieces.extendleft((piece[middle:], piece[:middle]))
            continue
        # Alone and failed: once more, so that a passing fault does not condemn it.
        error = attempt(piece)
        if error is not None:
            poison += 1
            on_poison(piece[0], error)
    return poison


__all__ = ["isolate"]
