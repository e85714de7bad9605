"""Output capture and command processes: chunking, truncation, exit codes, the two-step kill."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.worker.command import CommandProcess
from engine.worker.output import OutputCapture, OutputLimits

Chunk = tuple[str, str, int, bool]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def capture(
    limits: OutputLimits | None = None, clock: Clock | None = None
) -> tuple[OutputCapture, list[Chunk]]:
    chunks: list[Chunk] = []

    def sink(stream: str, text: str, offset: int, truncated: bool) -> None:
        chunks.append((stream, text, offset, truncated))

    return OutputCapture(sink, limits, **({} if clock is None else {"clock": clock})), chunks


class TestOutputCapture:
    def test_full_chunks_go_at_once_the_rest_on_flush(self) -> None:
        out, chunks = capture(OutputLimits(chunk_bytes=3, max_bytes=100))
        out.feed("stdout", b"abcdefg")
        assert chunks == [("stdout", "abc", 0, False), ("stdout", "def", 3, False)]
        out.close()
        assert chunks[-1] == ("stdout", "g", 6, False)

    def test_partial_buffer_waits_for_the_flush_interval(self) -> None:
        clock = Clock()
        out, chunks = capture(OutputLimits(chunk_bytes=100, flush_interval_ms=200), clock)
        out.feed("stderr", b"line 1\n")
        out.flush_due()
        assert chunks == []
        clock.now += 0.1
        out.feed("stderr", b"line 2\n")
        clock.now += 0.1
        out.flush_due()
        assert chunks == [("stderr", "line 1\nline 2\n", 0, False)]

    def test_offsets_count_characters_per_stream(self) -> None:
        out, chunks = capture(OutputLimits(chunk_bytes=4))
        out.feed("stdout", "héllo wörld".encode())  # multi-byte characters cut by chunking
        out.feed("stderr", b"x")
        out.close()
        stdout = [c for c in chunks if c[0] == "stdout"]
        assert "".join(c[1] for c in stdout) == "héllo wörld"
        for before, after in itertools.pairwise(stdout):
            assert after[2] == before[2] + len(before[1])
        assert ("stderr", "x", 0, False) in chunks

    def test_cap_over_both_streams_with_a_marker_per_truncated_stream(self) -> None:
        out, chunks = capture(OutputLimits(chunk_bytes=4, max_bytes=6))
        out.feed("stdout", b"12345")
        out.feed("stderr", b"abcdef")
        out.feed("stdout", b"67")
        out.close()
        assert out.truncated
        assert out.kept_bytes == 6
        kept = "".join(c[1] for c in chunks if not c[3])
        assert sorted(kept) == sorted("12345a")
        markers = {c[0]: c for c in chunks if c[3]}
        assert set(markers) == {"stdout", "stderr"}
        assert "5 bytes of stderr dropped" in markers["stderr"][1]
        assert "2 bytes of stdout dropped" in markers["stdout"][1]
        assert markers["stdout"][2] == 5  # after the 5 characters kept

    def test_on_text_sees_decoded_chunks(self) -> None:
        seen: list[tuple[str, str]] = []
        out = OutputCapture(
            lambda *_: None, OutputLimits(), on_text=lambda s, t: seen.append((s, t))
        )
        out.write("stdout", "progress 50%\n")
        assert seen == [("stdout", "progress 50%\n")]


def run(argv: list[str], **kwargs: object) -> tuple[int, list[Chunk], CommandProcess]:
    out, chunks = capture(OutputLimits(chunk_bytes=1024, flush_interval_ms=50))
    process = CommandProcess(argv, out, **kwargs)  # type: ignore[arg-type]
    process.start()
    result = process.wait()
    return result.returncode, chunks, process


def text(chunks: list[Chunk], stream: str) -> str:
    return "".join(c[1] for c in chunks if c[0] == stream and not c[3])


class TestCommandProcess:
    def test_exit_code_and_both_streams(self) -> None:
        code, chunks, _ = run(["sh", "-c", "echo hello; echo oops >&2; exit 7"])
        assert code == 7
        assert text(chunks, "stdout") == "hello\n"
        assert text(chunks, "stderr") == "oops\n"

    def test_success(self) -> None:
        code, _, _ = run(["true"])
        assert code == 0

    def test_env_is_added_and_cwd_used(self, tmp_path: Path) -> None:
        code, chunks, _ = run(
            ["sh", "-c", 'echo "$JOBLOG_TEST_VAR $(pwd)"'],
            env={"JOBLOG_TEST_VAR": "set"},
            cwd=str(tmp_path),
        )
        assert code == 0
        assert text(chunks, "stdout") == f"set {tmp_path.resolve()}\n"
        assert "PATH" in os.environ  # the worker's environment is inherited, not replaced

    def test_missing_program_raises_at_start(self) -> None:
        out, _ = capture()
        with pytest.raises(FileNotFoundError):
            CommandProcess(["/no/such/program"], out).start()

    def test_output_is_live(self) -> None:
        arrivals: list[float] = []
        out = OutputCapture(
            lambda *_: arrivals.append(time.monotonic()),
            OutputLimits(flush_interval_ms=50),
        )
        process = CommandProcess(["sh", "-c", "echo a; sleep 0.6; echo b"], out)
        start = time.monotonic()
        process.start()
        process.wait()
        assert len(arrivals) == 2
        assert arrivals[0] - start < 0.4  # the first line arrived before the process ended

    def test_large_output_is_truncated_not_blocking(self) -> None:
        out, chunks = capture(OutputLimits(chunk_bytes=4096, max_bytes=10_000))
        process = CommandProcess(
            [sys.executable, "-c", "import sys; sys.stdout.write('x' * 1_000_000)"], out
        )
        process.start()
        assert process.wait().returncode == 0
        assert len(text(chunks, "stdout")) == 10_000
        assert all(len(c[1]) <= 4096 for c in chunks if not c[3])
        (marker,) = [c for c in chunks if c[3]]
        assert "990000 bytes of stdout dropped" in marker[1]

    def test_terminate_sends_sigterm_to_the_group(self) -> None:
        out, _ = capture()
        process = CommandProcess(["sh", "-c", "sleep 30 & sleep 30; wait"], out)
        process.start()
        threading.Timer(0.2, process.terminate, args=(5000,)).start()
        start = time.monotonic()
        result = process.wait()
        assert time.monotonic() - start < 3
        assert result.terminated and not result.killed
        assert result.returncode == -signal.SIGTERM
        assert result.description == "killed by SIGTERM"

    def test_sigkill_after_the_grace_period_when_sigterm_is_ignored(self) -> None:
        out, chunks = capture()
        process = CommandProcess(
            ["sh", "-c", "trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.05; done"],
            out,
        )
        process.start()
        time.sleep(0.3)  # let the trap be installed
        start = time.monotonic()
        process.terminate(500)
        result = process.wait()
        elapsed = time.monotonic() - start
        assert result.killed
        assert result.returncode == -signal.SIGKILL
        assert 0.4 < elapsed < 3
        assert "got TERM" in text(chunks, "stdout")

    def test_terminate_before_start_stops_it_at_once(self) -> None:
        out, _ = capture()
        process = CommandProcess(["sleep", "30"], out)
        process.terminate(1000)
        process.start()
        start = time.monotonic()
        result = process.wait()
        assert time.monotonic() - start < 2
        assert result.terminated

    def test_background_child_holding_the_pipe_does_not_hang_the_attempt(self) -> None:
        start = time.monotonic()
        code, _, _ = run(["sh", "-c", "sleep 5 & echo started"])
        assert code == 0
        assert time.monotonic() - start < 3


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
class TestGuard:
    def test_the_group_dies_with_the_process_that_started_it(self, tmp_path: Path) -> None:
        pids = tmp_path / "pids"
        starter = (
            "import sys\n"
            "from engine.worker.command import CommandProcess\n"
            "from engine.worker.output import OutputCapture\n"
            "p = CommandProcess(['sh', '-c', sys.argv[1]], OutputCapture(lambda *a: None))\n"
            "p.start()\n"
            "p.wait()\n"
        )
        script = f"sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; sleep 301"
        parent = subprocess.Popen([sys.executable, "-c", starter, script])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(_read_pids(pids)) < 2:
            time.sleep(0.05)
        group = _read_pids(pids)
        assert len(group) == 2 and all(_alive(pid) for pid in group)
        parent.kill()  # SIGKILL: no handler of the starter runs
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in group):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in group), "the command's group outlived its starter"

    def test_a_normal_end_leaves_what_the_command_started_alone(self, tmp_path: Path) -> None:
        pid_file = tmp_path / "daemon"
        cap, _ = capture()
        process = CommandProcess(
            ["sh", "-c", f"sleep 30 >/dev/null 2>&1 & echo $! > {pid_file}"], cap
        )
        process.start()
        assert process.wait().returncode == 0
        daemon = int(pid_file.read_text())
        try:
            time.sleep(0.2)
            assert _alive(daemon), "the guard killed a daemon of a command that ended normally"
        finally:
            os.kill(daemon, signal.SIGKILL)

    def test_a_program_that_is_not_executable_fails_to_start(self, tmp_path: Path) -> None:
        plain = tmp_path / "plain.txt"
        plain.write_text("not a program")
        cap, _ = capture()
        with pytest.raises(PermissionError):
            CommandProcess([str(plain)], cap).start()
        with pytest.raises(FileNotFoundError):
            CommandProcess(["no-such-program-here"], cap).start()


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except (OSError, ValueError):
        return []
