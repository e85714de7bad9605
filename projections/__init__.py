"""DuckDB projections of the joblog event log (DESIGN.md §6).

The projector consumes ``events`` into a DuckDB file (tables ``jobs``, ``attempts``,
``job_events``, ``submissions``, ``job_exceptions``, ``job_outputs``, ``progress``,
``workers``; views for the usual questions; see ``docs/projections.md``), storing its Kafka
offsets in the same transaction as its rows. Queries work whether or not it runs.

Public API:
    :func:`run_projector` / :class:`Projector`: run the projector.
    :func:`query` / :class:`ProjectionReader`: read-only SQL on a projection.
    :func:`rebuild`: rebuild from offset 0, or as of a past point.
    :func:`lag`: how far a projection is behind the log.
    :func:`projections_main`: the ``joblog projector | sql | projections`` commands.
"""

from projections.cli import projections_main
from projections.errors import (
    ProjectionError,
    ProjectionFrozenError,
    ProjectionUnavailableError,
    QueryError,
)
from projections.projector import PartitionLag, Projector, ProjectorStats, lag, run_projector
from projections.reader import ProjectionReader, query
from projections.rebuild import AsOf, RebuildResult, rebuild

__all__ = [
    "AsOf",
    "PartitionLag",
    "ProjectionError",
    "ProjectionFrozenError",
    "ProjectionReader",
    "ProjectionUnavailableError",
    "Projector",
    "ProjectorStats",
    "QueryError",
    "RebuildResult",
    "lag",
    "projections_main",
    "query",
    "rebuild",
    "run_projector",
]
