"""Sampling profiles of the running services with py-spy (collapsed stacks + a summary).

py-spy attaches to a running process from outside (no code change, little overhead with
``--nonblocking``) and writes collapsed stacks: one line per distinct stack, ``frame;frame;...
count``. :func:`summarize` turns them into the functions with the most samples, by self time
(the leaf frame) and by total time (anywhere on the stack).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_IDLE = ("consume (confluent_kafka", "poll (confluent_kafka", "wait (threading.py", "select (")


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    """py-spy recording one service into ``path``."""

    name: str
    path: Path
    process: subprocess.Popen[bytes]

    def finish(self, timeout: float = 30.0) -> Path | None:
        """Stops the recording; returns the collapsed-stack file if one was written."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        return self.path if self.path.exists() and self.path.stat().st_size else None


def record(name: str, pid: int, out_dir: Path, rate: int = 100) -> Recording | None:
    """Starts py-spy on ``pid`` (all threads, native frames off); ``None`` without py-spy."""
    executable = py_spy()
    if executable is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.collapsed.txt"
    process = subprocess.Popen(
        [
            executable,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            str(rate),
            "--nonblocking",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Recording(name, path, process)


def summarize(path: Path, top: int = 15) -> dict[str, object]:
    """The busiest functions of a collapsed-stack file, idle waits left out of the shares."""
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    samples = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        count = int(match["count"])
        frames = [f for f in match["stack"].split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        samples += count
        leaf = frames[-1]
        if leaf.startswith(_IDLE):
            idle += count
            continue
        self_time[_short(leaf)] += count
        for frame in {_short(f) for f in frames}:
            total_time[frame] += count
    busy = max(samples - idle, 1)
    return {
        "samples": samples,
        "idle_share": idle / max(samples, 1),
        "top_self": [
            {"function": f, "share_of_busy": n / busy} for f, n in self_time.most_common(top)
        ],
        "top_total": [
            {"function": f, "share_of_busy": n / busy} for f, n in total_time.most_common(top)
        ],
    }


def _short(frame: str) -> str:
    """``fn (path/to/module.py:12)`` -> ``fn (module.py)``."""
    match = re.match(r"^(?P<fn>.*) \((?P<file>[^:)]*)(?::\d+)?\)$", frame)
    if match is None:
        return frame
    return f"{match['fn']} ({Path(match['file']).name})"
