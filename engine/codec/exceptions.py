"""Errors of the codec beyond the shared ones in :mod:`engine.errors`."""

from __future__ import annotations

from engine.errors import UnknownSchemaError


class WrongKindError(UnknownSchemaError):
    """The record is a valid joblog record, but of another kind than the one asked for.

    An Event's bytes given to ``decode_command``, say: the record was most likely produced to
    the wrong topic. It is an :class:`UnknownSchemaError` because its schema is none of the
    versions of the schema the reader expects.

    Attributes:
        expected: the schema the reader asked for, e.g. ``"Command"``.
        actual: the schema the record was written with, e.g. ``"Event"``.
    """

    def __init__(self, message: str, raw: bytes | None, expected: str, actual: str) -> None:
        super().__init__(message, raw)
        self.expected = expected
        self.actual = actual
