"""The figures of a run as a table: printed, and written into BENCHMARKS.md."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START = "<!-- figures:start (written by python -m benchmarks run) -->"
END = "<!-- figures:end -->"

Row = tuple[str, str, str, str, str]  # figure, median, runs (min-max), target, status


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _spread(s: dict[str, Any], digits: int = 0) -> str:
    if not s or not s.get("runs"):
        return ""
    if s["runs"] == 1:
        return "1 run"
    return f"{_num(s['min'], digits)} to {_num(s['max'], digits)} ({s['runs']} runs)"


def _status(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    met = value >= target if higher_is_better else value < target
    return "met" if met else "not met"


def rows(results: dict[str, Any]) -> Iterator[Row]:
    """Every figure of ``results`` as a table row."""
    sections = results.get("sections", {})
    ceiling = sections.get("ceiling")
    throughput = sections.get("throughput", {})
    joblog = throughput.get("joblog", {})
    celery = throughput.get("celery", {})
    produce = ceiling["produce_per_s"]["median"] if ceiling else None
    if ceiling:
        size = f"{ceiling['value_bytes']:.0f} B"
        yield (
            f"raw Kafka produce, records/s ({size} Avro events)",
            _num(produce),
            _spread(ceiling["produce_per_s"]),
            "",
            "",
        )
        yield (
            "raw Kafka consume, records/s",
            _num(ceiling["consume_per_s"]["median"]),
            _spread(ceiling["consume_per_s"]),
            "",
            "",
        )
    largest = max((int(n) for n in joblog), default=None)
    for size in sorted(joblog, key=int):
        entry = joblog[size]
        median = entry["jobs_per_s"]["median"]
        target = ("≥ 2,000", _status(median, 2000, True)) if int(size) == largest else ("", "")
        yield (
            f"joblog end to end, {int(size):,} no-op jobs, jobs/s",
            _num(median),
            _spread(entry["jobs_per_s"]),
            *target,
        )
        yield (
            f"joblog {int(size):,} jobs, steady rate (10 %→90 % done), jobs/s",
            _num(entry["steady_jobs_per_s"]["median"]),
            _spread(entry["steady_jobs_per_s"]),
            "",
            "",
        )
        records = entry["records_per_job"]["median"]
        yield (
            f"joblog {int(size):,} jobs, Kafka records per job (all topics)",
            _num(records, 1),
            "",
            "",
            "",
        )
        if produce:
            share = median * records / produce
            yield (
                f"joblog {int(size):,} jobs: records/s as a share of raw produce",
                f"{share:.1%}",
                "",
                "",
                "",
            )
            yield (
                f"ceiling in jobs/s (raw produce ÷ {records:.1f} records per job)",
                _num(produce / records),
                "",
                "",
                "",
            )
    for size in sorted(celery, key=int):
        entry = celery[size]
        yield (
            f"Celery + Redis, {int(size):,} no-op tasks with results, tasks/s",
            _num(entry["tasks_per_s"]["median"]),
            _spread(entry["tasks_per_s"]),
            "",
            "",
        )
    for name, entries, unit in (("joblog", joblog, "job"), ("Celery", celery, "task")):
        if not entries:
            continue
        size = max(entries, key=int)
        cpu = _cpu_per_item(entries[size].get("runs", []), int(size))
        if cpu:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "total")
            yield (
                f"{name} CPU per {unit}, {int(size):,} {unit}s, ms (total; {parts})",
                _num(cpu["total"], 2),
                "",
                "",
                "",
            )
    ratios = throughput.get("ratio", {})
    largest_ratio = max((int(n) for n in ratios), default=None)
    for size in sorted(ratios, key=int):
        median = ratios[size]["median"]
        target = ("≥ 1.0x", _status(median, 1.0, True)) if int(size) == largest_ratio else ("", "")
        yield (
            f"joblog ÷ Celery, {int(size):,} jobs (same run, paired)",
            f"{median:.2f}x",
            _spread(ratios[size], 2),
            *target,
        )
    if throughput.get("celery_skipped"):
        yield ("Celery peer", "not run", throughput["celery_skipped"], "≥ 1.0x", "not measured")
    latency = sections.get("latency")
    if latency:
        rate = latency["runs"][0]["rate"] if latency["runs"] else 0
        for view, label in (("decided", "event timestamp"), ("seen", "seen by a consumer")):
            for phase, name in (
                ("submitted", "SUBMITTED"),
                ("running", "RUNNING"),
                ("completed", "COMPLETED"),
            ):
                for q in ("p50_ms", "p99_ms"):
                    s = latency[f"{view}.{phase}.{q}"]
                    target = ("", "")
                    if view == "decided" and phase == "running" and q == "p99_ms":
                        target = ("< 50 ms", _status(s["median"], 50, False))
                    yield (
                        f"latency at {rate:g} jobs/s: submit → {name} ({label}), {q[:3]}, ms",
                        _num(s["median"]),
                        _spread(s),
                        *target,
                    )
        for q in ("p50_ms", "p99_ms"):
            s = latency[f"projected.{q}"]
            yield (
                f"latency at {rate:g} jobs/s: submit → COMPLETED in DuckDB, {q[:3]}, ms",
                _num(s["median"]),
                _spread(s),
                "",
                "",
            )
        for q in ("p50_ms", "p99_ms"):
            s = latency[f"projection_lag.{q}"]
            target = (
                ("< 1,000 ms", _status(s["median"], 1000, False)) if q == "p99_ms" else ("", "")
            )
            yield (
                f"projection lag at {rate:g} jobs/s (JobCompleted → in DuckDB), {q[:3]}, ms",
                _num(s["median"]),
                _spread(s),
                *target,
            )
    projection = sections.get("projection")
    if projection:
        n = projection["events"]
        yield (
            f"projector in process (decode+fold+DuckDB), {n:,} events, events/s",
            _num(projection["in_process_events_per_s"]["median"]),
            _spread(projection["in_process_events_per_s"]),
            "",
            "",
        )
        yield (
            f"projector from Kafka, {n:,}-event backlog, events/s",
            _num(projection["backlog_events_per_s"]["median"]),
            _spread(projection["backlog_events_per_s"]),
            "",
            "",
        )
        rate = projection["runs"][0]["steady_load"]["target_rate"] if projection["runs"] else 0
        yield (
            f"projector lag under {rate:,} events/s, p99, s",
            _num(projection["steady_lag_p99_s"]["median"], 2),
            _spread(projection["steady_lag_p99_s"], 2),
            "",
            "",
        )
    recovery = sections.get("recovery")
    if recovery:
        for size in sorted((k for k in recovery if k.isdigit()), key=int):
            for label in ("with_snapshots", "without_snapshots"):
                s = recovery[size][label]["seconds"]
                run = recovery[size][label]["runs"][0]
                detail = (
                    f"{run['state_records']:,} state records + {run['events_replayed']:,}"
                    " events replayed"
                )
                yield (
                    f"scheduler recovery, {int(size):,} events {label.replace('_', ' ')}, s "
                    f"({detail})",
                    _num(s["median"], 2),
                    _spread(s, 2),
                    "",
                    "",
                )
    found = sections.get("queries")
    if found:
        for size in sorted(found, key=int):
            entry = found[size]
            for name, q in entry["queries"].items():
                yield (
                    f"DuckDB {name}, {int(size):,} events ({entry['jobs']:,} jobs), ms "
                    f"(cold {q['cold_s'] * 1000:,.0f})",
                    _num(q["median_s"] * 1000, 1),
                    f"{q['min_s'] * 1000:,.1f} to {q['max_s'] * 1000:,.1f} ({q['runs']} runs)",
                    "",
                    "",
                )


def _cpu_per_item(runs: list[dict[str, Any]], items: int) -> dict[str, float]:
    """Median CPU milliseconds per job of each process (worker processes summed)."""
    per_run: list[dict[str, float]] = []
    for run in runs:
        cpu = run.get("cpu_seconds")
        if not cpu:
            continue
        grouped: dict[str, float] = {}
        for name, seconds in cpu.items():
            if seconds is None or math.isnan(seconds):
                continue
            key = "workers" if name.startswith("worker-") else name
            grouped[key] = grouped.get(key, 0.0) + seconds * 1000 / items
        grouped["total"] = sum(grouped.values())
        per_run.append(grouped)
    if not per_run:
        return {}
    keys = [k for k in per_run[0] if all(k in r for r in per_run)]
    return {k: sorted(r[k] for r in per_run)[len(per_run) // 2] for k in keys}


HEADER = ("figure", "median", "runs: min to max", "target", "status")


def table(results: dict[str, Any]) -> str:
    """A plain-text table of every figure."""
    body = list(rows(results))
    widths = [max(len(r[i]) for r in [HEADER, *body]) for i in range(len(HEADER))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)), line]
    for row in body:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


def markdown(results: dict[str, Any]) -> str:
    """The generated part of BENCHMARKS.md: how, on what, every figure, and the targets."""
    facts = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    celery = results["sections"].get("throughput", {}).get("celery_versions")
    if celery:
        versions += ", " + ", ".join(f"{k} {v}" for k, v in celery.items() if v)
    load_end = results.get("load_average_at_end") or []
    lines = [
        START,
        "",
        f"Measured with `{results['command']}` ({results['mode']} mode) at {facts['at']}, "
        f"commit `{facts.get('commit')}`, in {results['wall_seconds'] / 60:.0f} min.",
        "",
        f"- Machine: {facts['cpus']} x {facts['cpu_model']}, {facts['memory_gib']} GiB, "
        f"{facts['platform']}, Python {facts['python']}.",
        f"- Versions: {versions}.",
        f"- Load average (1/5/15 min) at the start: "
        f"{' / '.join(f'{x:.2f}' for x in facts['load_average'])}; at the end: "
        f"{' / '.join(f'{x:.2f}' for x in load_end)}. Every run's own load average is in the "
        "results file.",
        f"- Every run: `{results.get('results_file', 'benchmarks/results/')}`.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for row in rows(results):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    if results.get("errors"):
        lines += ["", "Sections that failed in this run:", ""]
        lines += [f"- {name}: {error}" for name, error in results["errors"].items()]
    lines += ["", END]
    return "\n".join(lines)


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    """Replaces the generated part of ``path`` (between the markers) with ``results``."""
    generated = markdown(results)
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: generated, text)
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    path.write_text(text)
