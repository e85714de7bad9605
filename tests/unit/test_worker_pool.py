"""The pool of warm child processes: reuse, replacement, recycling, without a broker."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.lifecycle.records import AttemptReport, Dispatch, Finished, JobSpec, Outcome, Started
from engine.limits import Limits
from engine.worker import TaskRegistry, task
from engine.worker.attempt import AttemptOptions, AttemptRun
from engine.worker.child import run_attempt_child
from engine.worker.forkserver import ForkServer
from engine.worker.pool import PER_ATTEMPT, ChildPool, PoolOptions
from engine.worker.tasks import encode_args

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

_calls: list[int] = []


@task
def whoami() -> int:
    return os.getpid()


@task
def counted() -> int:
    """Module state carries over from one attempt to the next in one child."""
    _calls.append(1)
    return len(_calls)


@task
def sleeper(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@task
def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


@task
def hold(megabytes: int) -> int:
    _kept.append(b"x" * (megabytes * 1024 * 1024))
    return os.getpid()


@task
def leaves_a_thread() -> int:
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    return os.getpid()


@task
def moves(path: str) -> str:
    os.chdir(path)
    return os.getcwd()


@task
def where() -> str:
    return os.getcwd()


_kept: list[bytes] = []

REGISTRY = TaskRegistry([whoami, counted, sleeper, segfault, hold, leaves_a_thread, moves, where])


@pytest.fixture
def server() -> Iterator[ForkServer]:
    fork_server = ForkServer(lambda sock, template: run_attempt_child(sock, template, REGISTRY))
    fork_server.start()
    yield fork_server
    fork_server.close()


@pytest.fixture
def pool(server: ForkServer) -> Iterator[ChildPool]:
    """One warm child, reused without a limit: every attempt runs on it while it lasts."""
    children = ChildPool(server, PoolOptions(size=1, max_attempts_per_child=0))
    children.start()
    yield children
    children.close()


def run(
    pool: ChildPool,
    name: str,
    *args: object,
    cancel_after: float | None = None,
    options: AttemptOptions | None = None,
) -> tuple[Finished, list[AttemptReport]]:
    reports: list[AttemptReport] = []
    job = JobSpec(job_id="j", task=name, args=encode_args(args, {}))
    dispatch = Dispatch(f"s/j/{time.monotonic_ns()}", "s", "j", 1, job, 0, 3000)
    attempt = AttemptRun(dispatch, "w1", REGISTRY, reports.append, options, pool=pool)
    if cancel_after is not None:
        threading.Timer(cancel_after, attempt.cancel, args=("user asked", 3000)).start()
    return attempt.execute(), reports


def pid_of(finished: Finished) -> int:
    assert finished.outcome is Outcome.COMPLETED, finished
    return int(finished.result or "0")


def wait_for_idle(pool: ChildPool, count: int = 1, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(pool.idle) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pool.idle) >= count, "the pool refilled"
    return pool.idle


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def test_children_are_forked_before_the_first_attempt(server: ForkServer) -> None:
    pool = ChildPool(server, PoolOptions(size=3, max_attempts_per_child=0))
    pool.start()
    try:
        warm = pool.idle
        assert len(warm) == 3 and all(alive(pid) for pid in warm)
        finished, reports = run(pool, "whoami")
        assert pid_of(finished) in warm, "the first attempt paid no fork"
        assert pool.stats["forked_on_demand"] == 0
        (started,) = [r for r in reports if isinstance(r, Started)]
        assert started.pid == pid_of(finished)
    finally:
        pool.close()


def test_two_attempts_in_one_child_see_the_same_pid_and_its_module_state(
    pool: ChildPool,
) -> None:
    first, second = run(pool, "whoami")[0], run(pool, "whoami")[0]
    assert pid_of(first) == pid_of(second) != os.getpid()
    assert [run(pool, "counted")[0].result for _ in range(3)] == ["1", "2", "3"]
    assert pool.stats["reused"] == 4


def test_a_killed_child_is_replaced_and_the_next_attempt_runs(pool: ChildPool) -> None:
    (warm,) = wait_for_idle(pool)
    finished, _ = run(pool, "sleeper", 30, cancel_after=0.3)
    assert (finished.outcome, finished.error_note) == (Outcome.CANCELED, "user asked")
    assert gone(warm), "the killed attempt's process was ended"
    assert pool.stats["retired.killed"] == 1
    (fresh,) = wait_for_idle(pool)
    assert fresh != warm
    assert pid_of(run(pool, "whoami")[0]) == fresh, "the replacement was forked ahead"


def test_a_crash_then_the_next_attempt_succeeds_on_a_new_child(pool: ChildPool) -> None:
    (warm,) = wait_for_idle(pool)
    finished, _ = run(pool, "segfault")
    assert (finished.outcome, finished.error_type) == (Outcome.FAILED, "WorkerChildDied")
    assert finished.error_note == "the task's process died: exit signal SIGSEGV"
    after = pid_of(run(pool, "whoami")[0])
    assert after != warm and alive(after)
    assert pool.stats["retired.died"] == 1


def test_a_child_is_recycled_after_max_attempts(server: ForkServer) -> None:
    pool = ChildPool(server, PoolOptions(size=1, max_attempts_per_child=3))
    pool.start()
    try:
        pids = [pid_of(run(pool, "whoami")[0]) for _ in range(7)]
        assert pids[0] == pids[1] == pids[2] != pids[3]
        assert pids[3] == pids[4] == pids[5] != pids[6]
        assert gone(pids[0]) and gone(pids[3]), "a recycled child exits"
        assert pool.stats["retired.max_attempts"] == 2
    finally:
        pool.close()


def _rss_of(pid: int) -> int:
    """A child's resident size (children start as a copy of their template)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_a_child_above_the_recycle_size_after_an_attempt_is_replaced(
    server: ForkServer,
) -> None:
    probe = ChildPool(server, PoolOptions(size=1, max_attempts_per_child=0))
    probe.start()
    try:
        rss = _rss_of(pid_of(run(probe, "whoami")[0])) + 200 * 1024 * 1024
    finally:
        probe.close()
    pool = ChildPool(server, PoolOptions(size=1, max_attempts_per_child=0, recycle_rss_bytes=rss))
    pool.start()
    try:
        small = pid_of(run(pool, "hold", 1)[0])
        assert pid_of(run(pool, "whoami")[0]) == small, "below the size: kept"
        big = pid_of(run(pool, "hold", 250)[0])
        assert big == small
        assert gone(big), "it kept 250 MB: replaced"
        assert pool.stats["retired.rss"] == 1
        assert pid_of(run(pool, "whoami")[0]) != big
    finally:
        pool.close()


def test_the_memory_limit_still_kills_a_pool_child_and_the_pool_goes_on(
    pool: ChildPool,
) -> None:
    base = _rss_of(pid_of(run(pool, "whoami")[0]))
    options = AttemptOptions(memory_limit_bytes=base + 150 * 1024 * 1024)
    finished, _ = run(pool, "hold", 400, options=options)
    assert (finished.outcome, finished.error_type) == (Outcome.FAILED, "MemoryLimitExceeded")
    assert pid_of(run(pool, "whoami", options=options)[0]) > 0


def test_a_child_left_with_a_thread_exits_instead_of_running_on(pool: ChildPool) -> None:
    first = pid_of(run(pool, "leaves_a_thread")[0])
    assert gone(first)
    assert pool.stats["retired.exited"] == 1
    assert pid_of(run(pool, "whoami")[0]) != first


def test_each_attempt_starts_in_the_childs_first_directory(pool: ChildPool, tmp_path: Path) -> None:
    home = run(pool, "where")[0].result
    assert run(pool, "moves", str(tmp_path))[0].result == f'"{tmp_path}"'
    assert run(pool, "where")[0].result == home


def test_per_attempt_mode_forks_a_fresh_child_each_time(server: ForkServer) -> None:
    pool = ChildPool(server, PER_ATTEMPT)
    pool.start()
    try:
        assert pool.idle == []
        first, second = (pid_of(run(pool, "whoami")[0]) for _ in range(2))
        assert first != second
        assert [run(pool, "counted")[0].result for _ in range(2)] == ["1", "1"]
        assert gone(first) and gone(second)
    finally:
        pool.close()


def test_concurrent_attempts_never_share_a_child(server: ForkServer) -> None:
    pool = ChildPool(server, PoolOptions(size=2, max_attempts_per_child=0))
    pool.start()
    try:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(pid_of(run(pool, "sleeper", 0.3)[0])))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 4
        assert len(set(results)) == 4, "four attempts at once ran in four processes"
        assert pool.stats["forked_on_demand"] == 2, "two more than the warm ones ran at once"
        assert len(pool.idle) == 2, "the surplus children were not kept"
    finally:
        pool.close()


def test_closing_the_pool_ends_its_idle_children(server: ForkServer) -> None:
    pool = ChildPool(server, PoolOptions(size=2, max_attempts_per_child=0))
    pool.start()
    warm = pool.idle
    pool.close()
    assert all(gone(pid) for pid in warm)


def test_idle_children_die_with_their_template() -> None:
    own = ForkServer(lambda sock, template: run_attempt_child(sock, template, REGISTRY))
    own.start()
    pool = ChildPool(own, PoolOptions(size=2, max_attempts_per_child=0))
    pool.start()
    warm = pool.idle
    assert own.pid is not None
    os.kill(own.pid, signal.SIGKILL)
    assert all(gone(pid) for pid in warm), "PR_SET_PDEATHSIG took them"
    finished, _ = run(pool, "whoami")
    assert finished.error_type == "WorkerChildDied"
    pool.close()
    own.close()


def test_a_limits_object_reaches_the_pooled_child(pool: ChildPool) -> None:
    reports: list[AttemptReport] = []
    job = JobSpec(job_id="j", task="whoami", args=encode_args((), {}))
    dispatch = Dispatch("s/j/limits", "s", "j", 1, job, 0, 3000)
    attempt = AttemptRun(
        dispatch, "w1", REGISTRY, reports.append, limits=Limits(max_result_bytes=1), pool=pool
    )
    assert attempt.execute().error_type == "ResultTooLarge"
    assert pid_of(run(pool, "whoami")[0]) > 0
