"""How many typical records the codec encodes and decodes per second on one core.

Run with ``python -m benchmarks.codec_bench [seconds per measurement]``; each figure is the
best of five runs, so that other load on the machine disturbs it less. DESIGN.md §9 gives the
budget: a job costs about ten records, each decoded by one to three consumers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.codec import (
    decode_dispatch,
    decode_event,
    decode_report,
    encode_dispatch,
    encode_event,
    encode_report,
)
from engine.lifecycle.records import (
    AttemptRef,
    Dispatch,
    Event,
    Finished,
    JobAssigned,
    JobCompleted,
    JobSpec,
    Outcome,
)

ASSIGNED = Event(
    event_id="sub-0001:7",
    submission_id="sub-0001",
    job_id="job-42",
    seq=7,
    timestamp=1_767_000_000_123,
    body=JobAssigned(
        attempt=1,
        dispatch_id="sub-0001/job-42/1",
        worker_id="worker-3",
        lease_ms=30_000,
        host="node-17",
    ),
)
COMPLETED = Event(
    "sub-0001:9", "sub-0001", "job-42", 9, 1_767_000_000_456, JobCompleted(1, '{"rows": 1200}')
)
FINISHED = Finished(
    ref=AttemptRef("sub-0001", "job-42", 1, "sub-0001/job-42/1", "worker-3"),
    outcome=Outcome.COMPLETED,
    result='{"rows": 1200}',
    progress=1200.0,
    total=1200.0,
    sent_at=1_767_000_000_400,
)
DISPATCH = Dispatch(
    dispatch_id="sub-0001/job-42/1",
    submission_id="sub-0001",
    job_id="job-42",
    attempt=1,
    spec=JobSpec(
        job_id="job-42",
        task="etl.load",
        args='{"args": ["2026-01-01"], "kwargs": {"table": "orders"}}',
        depends_on=("job-41",),
        labels=(("team", "data"),),
    ),
    dispatched_at=1_767_000_000_100,
    lease_ms=30_000,
)


def rate(fn: Callable[[Any], Any], arg: Any, seconds: float, rounds: int = 5) -> float:
    """Calls of ``fn(arg)`` per second: the best of ``rounds`` runs sharing ``seconds``."""
    best = 0.0
    batch = 500
    for _ in range(rounds):
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        while (now := time.perf_counter()) < deadline:
            for _ in range(batch):
                fn(arg)
            calls += batch
        best = max(best, calls / (now - start))
    return best


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    cases: list[tuple[str, Any, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
        ("Event JobAssigned", ASSIGNED, encode_event, decode_event),
        ("Event JobCompleted", COMPLETED, encode_event, decode_event),
        ("Report Finished", FINISHED, encode_report, decode_report),
        ("Dispatch", DISPATCH, encode_dispatch, decode_dispatch),
    ]
    print(f"{'record':<20} {'bytes':>6} {'encodes/s':>12} {'decodes/s':>12}")
    for label, record, encode, decode in cases:
        raw = encode(record)
        assert decode(raw) == record
        enc = rate(encode, record, seconds)
        dec = rate(decode, raw, seconds)
        print(f"{label:<20} {len(raw):>6} {enc:>12,.0f} {dec:>12,.0f}")


if __name__ == "__main__":
    main()
