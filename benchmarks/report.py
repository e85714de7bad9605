"""The figures of a run as tables: printed, and written into BENCHMARKS.md.

Two tables: every figure with its target (:func:`rows`), and joblog beside its peers, Celery
and Temporal, column by column (:func:`peer_rows`): throughput, load, CPU per job per
process, and latency at the rates they share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START = "<!-- figures:start (written by python -m benchmarks run) -->"
END = "<!-- figures:end -->"

Row = tuple[str, str, str, str, str]  # figure, median, runs (min-max), target, status

CELERY_TARGET = 4.0
"""joblog's throughput over Celery's, paired, at the largest size both ran."""
TEMPORAL_TARGET = 40.0
"""joblog's throughput over Temporal's, paired, at the largest size both ran (each variant)."""
TEMPORAL_LABELS = {"memory": "Temporal (in memory)", "sqlite": "Temporal (SQLite file)"}
SYSTEMS = ("joblog", "celery", "temporal-memory", "temporal-sqlite")
SYSTEM_LABELS = {
    "joblog": "joblog",
    "celery": "Celery + Redis",
    "temporal-memory": "Temporal, in memory",
    "temporal-sqlite": "Temporal, SQLite file",
}
PHASES = {
    "running": "start → running (task/activity started; joblog: JobStarted)",
    "result": "start → result (stored, or returned to the client; joblog: JobCompleted seen)",
}


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


def _in_cell(s: dict[str, Any], digits: int = 0) -> str:
    """The spread of repeats inside a table cell: ``(min to max, N runs)``, or ``(1 run)``."""
    if not s or not s.get("runs"):
        return ""
    if s["runs"] == 1:
        return " (1 run)"
    return f" ({_num(s['min'], digits)} to {_num(s['max'], digits)}, {s['runs']} runs)"


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
    temporal = throughput.get("temporal", {})
    for variant, entries in temporal.items():
        for size in sorted(entries, key=int):
            yield (
                f"{TEMPORAL_LABELS.get(variant, variant)}, {int(size):,} no-op workflows "
                "(one activity each), jobs/s",
                _num(entries[size]["jobs_per_s"]["median"], 1),
                _spread(entries[size]["jobs_per_s"], 1),
                "",
                "",
            )
    cpu_rows = [("joblog", joblog, "job"), ("Celery", celery, "task")]
    cpu_rows += [(TEMPORAL_LABELS.get(v, v), e, "job") for v, e in temporal.items()]
    for name, entries, unit in cpu_rows:
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
    celery_target = f"≥ {CELERY_TARGET:.1f}x"
    for size in sorted(ratios, key=int):
        median = ratios[size]["median"]
        target = (
            (celery_target, _status(median, CELERY_TARGET, True))
            if int(size) == largest_ratio
            else ("", "")
        )
        yield (
            f"joblog ÷ Celery, {int(size):,} jobs (same run, paired)",
            f"{median:.2f}x",
            _spread(ratios[size], 2),
            *target,
        )
    if throughput.get("celery_skipped"):
        yield (
            "Celery peer",
            "not run",
            throughput["celery_skipped"],
            celery_target,
            "not measured",
        )
    temporal_target = f"≥ {TEMPORAL_TARGET:.0f}x"
    for variant, by_size in throughput.get("temporal_ratio", {}).items():
        largest_pair = max(int(n) for n in by_size)
        for size in sorted(by_size, key=int):
            median = by_size[size]["median"]
            target = (
                (temporal_target, _status(median, TEMPORAL_TARGET, True))
                if int(size) == largest_pair
                else ("", "")
            )
            yield (
                f"joblog ÷ {TEMPORAL_LABELS.get(variant, variant)}, {int(size):,} jobs "
                "(same run, paired)",
                f"{median:.1f}x",
                _spread(by_size[size], 1),
                *target,
            )
    if throughput.get("temporal_skipped"):
        yield (
            "Temporal peer",
            "not run",
            throughput["temporal_skipped"],
            temporal_target,
            "not measured",
        )
    for name, error in throughput.get("peer_errors", {}).items():
        yield (f"{name} throughput", "failed", error, "", "")
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
    yield from _peer_latency_targets(sections.get("peer_latency"))
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


def _peer_latency_targets(section: dict[str, Any] | None) -> Iterator[Row]:
    """joblog's p99 against each Temporal variant's, at every shared rate both were run at."""
    if not section:
        return
    for rate in sorted(section.get("rates", {}), key=float):
        entry = section["rates"][rate]
        ours = entry.get("joblog", {})
        for name in ("temporal-memory", "temporal-sqlite"):
            theirs = entry.get(name, {})
            if "runs" not in ours or "runs" not in theirs:
                continue
            for phase in PHASES:
                mine = ours[f"{phase}.p99_ms"]["median"]
                other = theirs[f"{phase}.p99_ms"]["median"]
                yield (
                    f"p99 {PHASES[phase].split(' (')[0]} at {rate} jobs/s, ms: joblog "
                    f"against {SYSTEM_LABELS[name]} ({_num(other)})",
                    _num(mine),
                    _spread(ours[f"{phase}.p99_ms"]),
                    "lower than Temporal's",
                    _status(mine, other, False),
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
PEER_HEADER = ("figure", *(SYSTEM_LABELS[name] for name in SYSTEMS))


def _throughputs(throughput: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each system's throughput entries by size, and the key of its rate in them."""
    out = {"joblog": throughput.get("joblog", {}), "celery": throughput.get("celery", {})}
    for variant, entries in throughput.get("temporal", {}).items():
        out[f"temporal-{variant}"] = entries
    return out


def _rate_cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return ""
    s = entry.get("jobs_per_s") or entry.get("tasks_per_s") or {}
    digits = 0 if (s.get("median") or 0) >= 100 else 1
    return _num(s.get("median"), digits) + _in_cell(s, digits)


def _load_cell(runs: list[dict[str, Any]]) -> str:
    loads = [r["load_average"][0] for r in runs if r.get("load_average")]
    if not loads:
        return ""
    ordered = sorted(loads)
    median = ordered[len(ordered) // 2]
    if len(loads) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} ({ordered[0]:.2f} to {ordered[-1]:.2f})"


def _cpu_cell(runs: list[dict[str, Any]], items: int) -> str:
    cpu = _cpu_per_item(runs, items)
    if not cpu:
        return ""
    parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "total")
    return f"{cpu['total']:.2f} ({parts})"


def _latency_cell(entry: dict[str, Any] | None, phase: str) -> str:
    """``p50 / p99 / max`` (medians of the runs; the p99's spread beside it), or why not."""
    if not entry:
        return ""
    if "runs" not in entry:
        return str(entry.get("skipped", ""))
    p99 = entry[f"{phase}.p99_ms"]
    spread = _in_cell(p99).replace(" (", " (p99 ", 1) if p99.get("runs", 0) > 1 else ""
    return (
        f"{_num(entry[f'{phase}.p50_ms']['median'])} / {_num(p99['median'])} / "
        f"{_num(entry[f'{phase}.max_ms']['median'])}{spread}"
    )


def peer_rows(results: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    """joblog beside Celery and Temporal, one column each (see :data:`PEER_HEADER`)."""
    sections = results.get("sections", {})
    throughput = sections.get("throughput", {})
    systems = _throughputs(throughput)
    peers_ran = any(systems[name] for name in SYSTEMS[1:] if name in systems)
    latency = sections.get("peer_latency", {}).get("rates", {})
    if not peers_ran and not latency:
        return
    peer_sizes = {int(n) for name in SYSTEMS[1:] for n in systems.get(name, {})}
    for size in sorted(peer_sizes):
        key = str(size)
        entries = [systems.get(name, {}).get(key) for name in SYSTEMS]
        yield (
            f"{size:,} no-op jobs, jobs/s (median, runs: min to max)",
            *(_rate_cell(e) for e in entries),
        )
        yield (
            f"{size:,} jobs: load average (1 min) at the start of the runs",
            *(_load_cell(e["runs"]) if e else "" for e in entries),
        )
        yield (
            f"{size:,} jobs: CPU per job, ms (total; per process)",
            *(_cpu_cell(e["runs"], size) if e else "" for e in entries),
        )
        ratios = [throughput.get("ratio", {}).get(key)]
        ratios += [
            throughput.get("temporal_ratio", {}).get(v, {}).get(key) for v in ("memory", "sqlite")
        ]
        if any(ratios):
            yield (
                f"{size:,} jobs: joblog ÷ this peer, paired run by run",
                "",
                *(f"{r['median']:.2f}x{_in_cell(r, 2)}" if r else "" for r in ratios),
            )
    for rate in sorted(latency, key=float):
        entry = latency[rate]
        for phase, label in PHASES.items():
            yield (
                f"at {rate} jobs/s: {label}, ms, p50 / p99 / max",
                *(_latency_cell(entry.get(name), phase) for name in SYSTEMS),
            )
        yield (
            f"at {rate} jobs/s: load average (1 min) at the start of the runs",
            *(_load_cell(entry[n]["runs"]) if "runs" in entry.get(n, {}) else "" for n in SYSTEMS),
        )
    celery_why = throughput.get("celery_skipped", "")
    temporal_why = throughput.get("temporal_skipped", "")
    if celery_why or temporal_why:
        yield ("not run, and why", "", celery_why, temporal_why, temporal_why)


def _text_table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    for row in body:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out)


def _markdown_table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in body:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return lines


def table(results: dict[str, Any]) -> str:
    """A plain-text table of every figure, and the peers' table if a peer ran."""
    out = _text_table(HEADER, list(rows(results)))
    peers = list(peer_rows(results))
    if peers:
        out += "\n\n" + _text_table(PEER_HEADER, peers)
    return out


def markdown(results: dict[str, Any]) -> str:
    """The generated part of BENCHMARKS.md: how, on what, every figure, and the targets."""
    facts = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    throughput = results["sections"].get("throughput", {})
    for key in ("celery_versions", "temporal_versions"):
        if throughput.get(key):
            versions += ", " + ", ".join(f"{k} {v}" for k, v in throughput[key].items() if v)
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
        *_markdown_table(HEADER, list(rows(results))),
    ]
    peers = list(peer_rows(results))
    if peers:
        lines += [
            "",
            "joblog beside its peers in the same run (Temporal in memory loses its state when "
            "the server stops; with its SQLite file it is durable, as Kafka's log is). "
            "Latency cells: p50 / p99 / max in ms, the median of the runs' percentiles.",
            "",
            *_markdown_table(PEER_HEADER, peers),
        ]
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
