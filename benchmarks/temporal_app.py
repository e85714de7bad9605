"""The Temporal application of the peer benchmark: one workflow that runs one no-op activity.

The activity returns the wall-clock time at which it ran (one machine, one clock), so that a
latency run can tell start → activity running from start → result. Each worker process of
the peer is ``python -m benchmarks.temporal_app worker --address HOST:PORT --task-queue Q``
(:mod:`benchmarks.temporal_peer` starts two of them). This module imports nothing but the
standard library and ``temporalio``: the workflow sandbox re-imports it for every workflow
run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from datetime import timedelta

from temporalio import activity, workflow

ACTIVITY_TIMEOUT = timedelta(seconds=120)


@activity.defn(name="noop")
async def noop() -> float:
    """Does nothing; returns when it ran (seconds since the epoch)."""
    return time.time()


@workflow.defn(name="NoopWorkflow")
class NoopWorkflow:
    """The peer's job: one activity, its start time as the workflow's result."""

    @workflow.run
    async def run(self) -> float:
        return await workflow.execute_activity(noop, start_to_close_timeout=ACTIVITY_TIMEOUT)


async def serve(address: str, namespace: str, task_queue: str, slots: int) -> None:
    """Runs one worker of ``slots`` activity slots on ``task_queue`` until it is cancelled."""
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address, namespace=namespace)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[NoopWorkflow],
        activities=[noop],
        max_concurrent_activities=slots,
    )
    print("worker ready", flush=True)
    await worker.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.temporal_app")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("worker", help="run one worker process of the peer")
    run.add_argument("--address", required=True, help="the server's frontend, HOST:PORT")
    run.add_argument("--namespace", default="default")
    run.add_argument("--task-queue", required=True)
    run.add_argument("--slots", type=int, default=16, help="max_concurrent_activities")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.address, args.namespace, args.task_queue, args.slots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
