"""What each mode of ``python -m benchmarks run`` measures, and how often."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one mode.

    Attributes:
        name: ``smoke``, ``quick`` or ``full``.
        repeats: runs of each timed figure (the median and the spread are over these).
        jobs: job counts of the end-to-end throughput runs.
        latency_rate: offered load of the latency runs, jobs/s.
        latency_seconds: length of one latency run.
        ceiling_records: records of the raw Kafka runs.
        projection_submissions: simulated submissions (~12 events each) of the projector runs.
        projection_rate: events/s of the projector's steady-load run.
        projection_seconds: length of the projector's steady-load run.
        recovery_events: history sizes of the scheduler recovery runs.
        query_events: history sizes of the DuckDB query runs.
        peer_tasks: task counts of the Celery runs (``()``: no peer).
        temporal_jobs: workflow counts of the Temporal runs, each variant (``()``: none);
            smaller than the others, Temporal being an order of magnitude slower. joblog
            also runs at these sizes, so that every Temporal run has a joblog run to pair.
        peer_latency_rates: offered loads (jobs/s) at which joblog, Celery and Temporal are
            all measured, each system at the rates it sustains.
        peer_latency_seconds: length of one latency run at a shared rate.
        profile_jobs: jobs of the profiled end-to-end run (0: no profile).
        workers: worker processes.
        concurrency: attempts each worker runs at once.
    """

    name: str
    repeats: int
    jobs: tuple[int, ...]
    latency_rate: float
    latency_seconds: float
    ceiling_records: int
    projection_submissions: int
    projection_rate: int
    projection_seconds: float
    recovery_events: tuple[int, ...]
    query_events: tuple[int, ...]
    peer_tasks: tuple[int, ...]
    profile_jobs: int
    temporal_jobs: tuple[int, ...] = ()
    peer_latency_rates: tuple[float, ...] = ()
    peer_latency_seconds: float = 0.0
    workers: int = 2
    concurrency: int = 16


PLANS = {
    "smoke": Plan(
        name="smoke",
        repeats=1,
        jobs=(200,),
        latency_rate=50,
        latency_seconds=2,
        ceiling_records=5_000,
        projection_submissions=200,
        projection_rate=500,
        projection_seconds=2,
        recovery_events=(5_000,),
        query_events=(10_000,),
        peer_tasks=(),
        profile_jobs=0,
        # only if already installed and asked for (--peer): smoke builds and installs nothing
        temporal_jobs=(50,),
    ),
    "quick": Plan(
        name="quick",
        repeats=3,
        jobs=(2_000, 10_000),
        latency_rate=200,
        latency_seconds=15,
        ceiling_records=200_000,
        projection_submissions=4_000,
        projection_rate=5_000,
        projection_seconds=10,
        recovery_events=(100_000,),
        query_events=(1_000_000,),
        peer_tasks=(2_000, 10_000),
        profile_jobs=10_000,
        temporal_jobs=(200,),
        peer_latency_rates=(20,),
        peer_latency_seconds=15,
    ),
    "full": Plan(
        name="full",
        repeats=3,
        jobs=(10_000, 100_000),
        latency_rate=200,
        latency_seconds=30,
        ceiling_records=1_000_000,
        projection_submissions=10_000,
        projection_rate=5_000,
        projection_seconds=20,
        recovery_events=(100_000, 1_000_000),
        query_events=(1_000_000, 10_000_000),
        peer_tasks=(10_000, 100_000),
        profile_jobs=20_000,
        temporal_jobs=(1_000,),
        peer_latency_rates=(5, 20),
        peer_latency_seconds=30,
    ),
}
