"""``JobSpec.force`` on the wire: a field added with a default.

The fixtures are a submit command and a dispatch record as they were written before the field
existed (``fixtures/codec/evolution``, the fingerprint in the name, its schema kept in
``schemas/history/``); they decode with ``force`` False, and a forced spec survives a round
trip through every record that carries a spec.
"""

from __future__ import annotations

from pathlib import Path

from engine import codec
from engine.lifecycle.records import Dispatch, JobSpec, SubmitJobs

EVOLUTION = Path(__file__).parent / "fixtures" / "codec" / "evolution"
T = 1_767_225_600_000


def _old(name: str) -> bytes:
    return bytes.fromhex((EVOLUTION / name).read_text())


def test_a_submit_written_before_force_decodes_unforced() -> None:
    command = codec.decode_command(_old("command-submit-jobs-2348b09fbc7bdf10.hex"))
    assert isinstance(command, SubmitJobs) and command.jobs
    assert all(spec.force is False for spec in command.jobs)


def test_a_dispatch_written_before_force_decodes_unforced() -> None:
    dispatch = codec.decode_dispatch(_old("dispatch-131bc6ac4e582d64.hex"))
    assert dispatch.spec.force is False


def test_a_forced_spec_round_trips() -> None:
    spec = JobSpec("publish", task="publish_report", idempotency_key="launch", force=True)
    command = SubmitJobs("c-1", "s-1", (spec,))
    decoded = codec.decode_command(codec.encode_command(command))
    assert isinstance(decoded, SubmitJobs) and decoded.jobs[0].force is True
    dispatch = Dispatch("s-1/publish/1", "s-1", "publish", 1, spec, T, 30_000)
    assert codec.decode_dispatch(codec.encode_dispatch(dispatch)).spec.force is True
