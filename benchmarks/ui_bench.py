"""The dashboard's server with a large projection: page loads and the live update rate.

Usage:
    python -m benchmarks.ui_bench [--jobs 100000] [--live-events 20000]

1. A simulated log (:mod:`engine.lifecycle.workload`, the real decider) of at least ``--jobs``
   jobs is folded into a DuckDB projection, as the projector would.
2. ``joblog ui``'s server answers on it; each call a page makes (the jobs table's first page
   under each sort, a filter, twenty pages further by the cursor, the counts, the submissions,
   one submission, one job, workers, analytics) is timed, five times: median and p90 in ms.
3. Live: a reader of the dashboard's stream (``/api/v1/events``, server-sent events from the
   ``events`` topic of a local broker) while ``--live-events`` events are produced at once:
   the status changes per second it receives, and how long after the last one was produced
   it arrived.

Figures are printed and written to ``benchmarks/results/ui.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from engine import codec, kafka
from engine.admin import ensure_topics
from engine.broker import LocalBroker
from engine.config import Settings
from engine.lifecycle.views import StatusChange
from engine.lifecycle.workload import simulate
from engine.topics import Topics
from engine.ui.config import UiConfig
from engine.ui.server import UiServer
from projections.fold import Fold, Position
from projections.store import ProjectionStore

RESULTS = Path(__file__).parent / "results" / "ui.json"
TOKEN = "bench-token-" + uuid.uuid4().hex
REPEAT = 5


def build_projection(path: Path, jobs: int) -> dict[str, Any]:
    """Folds a simulated log of at least ``jobs`` jobs into ``path``."""
    started = time.perf_counter()
    submissions = max(1, jobs * 10 // 14)  # the mixed workload has ~1.4 jobs a submission
    workload = simulate(submissions, seed=5)
    events = workload.events
    made = len({(e.submission_id, e.job_id) for e in events if e.name == "JobSubmitted"})
    simulated = time.perf_counter() - started
    fold = Fold()
    with ProjectionStore(path, topic_prefix="bench.") as store:
        for start in range(0, len(events), 50_000):
            batch = events[start : start + 50_000]
            fold.prefetch(batch, workload.heartbeats if start == 0 else (), store)
            for offset, event in enumerate(batch, start=start):
                fold.event(event, Position("bench.events", 0, offset))
            store.write(fold.take())
    return {
        "jobs": made,
        "submissions": submissions,
        "events": len(events),
        "simulate_s": simulated,
        "project_s": time.perf_counter() - started - simulated,
    }


def _get(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _timed(url: str) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = _get(url)
    return (time.perf_counter() - started) * 1000, answer


def page_loads(base: str) -> dict[str, dict[str, float]]:
    """Median and p90 ms of each call the pages make."""
    first = _get(f"{base}/api/v1/jobs?limit=50")
    row = first["jobs"][0]
    sid, jid = row["submission_id"], row["job_id"]
    calls = {
        "jobs, first page (newest)": "/api/v1/jobs?limit=50",
        "jobs, sorted by status": "/api/v1/jobs?limit=50&sort=status",
        "jobs, sorted by task": "/api/v1/jobs?limit=50&sort=task&order=asc",
        "jobs, FAILED only": "/api/v1/jobs?limit=50&status=FAILED",
        "jobs, counts per status": "/api/v1/jobs/counts",
        "submissions, first page": "/api/v1/submissions?limit=50",
        "one submission": f"/api/v1/submissions/{sid}",
        "one job": f"/api/v1/jobs/{sid}/{jid}",
        "workers": "/api/v1/workers",
        "analytics views": "/api/v1/analytics",
    }
    out: dict[str, dict[str, float]] = {}
    for name, path in calls.items():
        times = [_timed(base + path)[0] for _ in range(REPEAT)]
        out[name] = _summary(times)
    # twenty pages on by the cursor, as a user paging through the table
    times = []
    page = first
    for _ in range(20):
        took, page = _timed(f"{base}/api/v1/jobs?limit=50&cursor={page['next']}")
        times.append(took)
        if not page.get("next"):
            break
    out["jobs, each of 20 pages by the cursor"] = _summary(times)
    return out


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
    }


def live_rate(base: str, settings: Settings, count: int) -> dict[str, float]:
    """Status changes per second the dashboard's stream delivers while ``count`` events of
    fresh submissions are produced at once."""
    events = simulate(max(1, count // 12), seed=11, start_ms=int(time.time() * 1000)).events
    events = events[:count]
    changes = sum(1 for e in events if isinstance(e.body, StatusChange))
    received: list[float] = []
    ready = threading.Event()

    def read() -> None:
        request = urllib.request.Request(
            f"{base}/api/v1/events?from_start=false&access_token={TOKEN}"
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            ready.set()
            for line in response:
                if line.startswith(b"data: "):
                    received.append(time.perf_counter())
                    if len(received) >= changes:
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(30)
    time.sleep(1.0)
    producer = kafka.producer(settings, {"linger.ms": 5})
    topic = Topics(settings.topic_prefix).events
    started = time.perf_counter()
    for event in events:
        producer.produce(topic, codec.encode_event(event), event.submission_id.encode())
        producer.poll(0)
    producer.flush(60)
    produced = time.perf_counter()
    reader.join(120)
    if not received:
        return {"status_changes": changes, "received": 0}
    return {
        "events_produced": len(events),
        "status_changes": changes,
        "received": len(received),
        "produce_s": produced - started,
        "changes_per_s": len(received) / max(received[-1] - started, 1e-9),
        "last_after_produced_ms": (received[-1] - produced) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--live-events", type=int, default=20_000)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="joblog-ui-bench-"))
    db_path = workdir / "joblog.duckdb"
    built = build_projection(db_path, args.jobs)
    print(f"projection: {built}", flush=True)
    with LocalBroker(workdir / "kafka") as broker:
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench.", partitions=3
        )
        ensure_topics(settings)
        config = UiConfig.from_env({}, port=0, token=TOKEN, db_path=db_path)
        with UiServer(config, settings) as server:
            loads = page_loads(server.url)
            for name, figures in loads.items():
                print(
                    f"{name:40s} median {figures['median_ms']:7.1f} ms  "
                    f"p90 {figures['p90_ms']:7.1f} ms",
                    flush=True,
                )
            live = live_rate(server.url, settings, args.live_events)
            print(f"live: {live}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "projection": built,
        "page_loads": loads,
        "live": live,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
