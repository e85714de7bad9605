"""The exceptions of the projections package, all under :class:`engine.errors.JoblogError`."""

from __future__ import annotations

from engine.errors import JoblogError


class ProjectionError(JoblogError):
    """Root of the errors raised by the projector, the readers and the rebuild."""


class ProjectionUnavailableError(ProjectionError):
    """No projection can answer: no projector serves the file and it cannot be opened."""


class QueryError(ProjectionError):
    """DuckDB refused or failed a query (bad SQL, unknown table, a write through a reader)."""


class ProjectionFrozenError(ProjectionError):
    """The file holds a point-in-time (``--as-of``) projection, which no projector may advance."""
