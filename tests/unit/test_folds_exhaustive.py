"""A new event type is a type error in every fold that does not handle it.

The test copies ``engine`` and ``projections`` to a temporary directory, adds a throwaway
body class (``JobPaused``) to the copy's :data:`~engine.lifecycle.records.EventBody` union
and runs ``mypy --strict`` on the copy: each fold must be named by an error, and no other
function may be (a new fold is added to :data:`FOLDS` and to docs/adding-an-event.md).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Every fold over the event union, as (file, function): the ones mypy must name.
FOLDS = {
    ("engine/lifecycle/evolve.py", "evolve_job"),
    ("engine/lifecycle/views.py", "status_after"),
    ("engine/lifecycle/views.py", "_evolve_view"),
    ("engine/lifecycle/reasons.py", "reason_after"),
    ("engine/lifecycle/durations.py", "job_times"),
    ("engine/lifecycle/durations.py", "moves_times"),
    ("engine/lifecycle/describe.py", "describe"),
    ("projections/fold.py", "Fold.event"),  # its job events go to Fold._apply
    ("projections/fold.py", "_attempt_of"),
    ("projections/fold.py", "_attempts_of"),
}

_NEW_BODY = '''

@dataclass(frozen=True)
class JobPaused:
    """A throwaway event type of the test."""

    reason: str


EventBody = (
    JobPaused
    |'''

_ERROR = re.compile(r"^(?P<path>[^:]+\.py):(?P<line>\d+): error: (?P<message>.*)$")


def _copy_with_a_new_event(target: Path) -> None:
    for package in ("engine", "projections"):
        shutil.copytree(
            ROOT / package,
            target / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    records = target / "engine/lifecycle/records.py"
    text = records.read_text()
    assert text.count("\nEventBody = (\n") == 1, "the EventBody union is not where expected"
    records.write_text(text.replace("\nEventBody = (", _NEW_BODY, 1))


def _functions(path: Path) -> list[tuple[int, int, str]]:
    """``(first line, last line, qualified name)`` of every function in a module."""
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                end = child.end_lineno or child.lineno
                found.append((child.lineno, end, prefix + child.name))
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text()), "")
    return found


def _enclosing(path: Path, line: int) -> str:
    names = [name for first, last, name in _functions(path) if first <= line <= last]
    return names[-1] if names else "<module>"


def test_mypy_names_every_fold_that_misses_a_new_event(tmp_path: Path) -> None:
    _copy_with_a_new_event(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-version=3.11",
            "--ignore-missing-imports",
            "--no-error-summary",
            "--show-absolute-path",
            f"--cache-dir={tmp_path / '.mypy_cache'}",
            "engine",
            "projections",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    flagged: set[tuple[str, str]] = set()
    for line in result.stdout.splitlines():
        match = _ERROR.match(line)
        if match is None:
            continue
        path = Path(match["path"])
        assert "JobPaused" in match["message"], f"an error not about the new event: {line}"
        where = path.relative_to(tmp_path).as_posix()
        flagged.add((where, _enclosing(path, int(match["line"]))))
    assert result.returncode == 1, result.stdout + result.stderr
    assert flagged == FOLDS, result.stdout


def test_the_checked_folds_handle_every_event_today() -> None:
    # the unchanged tree passes mypy (``make test`` runs it); here: each listed fold exists
    for path, name in FOLDS:
        assert name in {qualified for _, _, qualified in _functions(ROOT / path)}, (path, name)
