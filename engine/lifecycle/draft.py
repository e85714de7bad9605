"""A submission being decided: events folded over a copy-on-write view of its state.

Every rule emits through :class:`Draft`, which numbers the event, folds it in (so one input
can cascade) and, for the scheduler's one-pass step, collects the records each event calls for.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping

from engine.lifecycle.effects import Effect, effects
from engine.lifecycle.evolve import evolve
from engine.lifecycle.notifications import fire
from engine.lifecycle.policy import Policy, event_id
from engine.lifecycle.records import (
    CommandRejected,
    Event,
    EventBody,
    RejectionCode,
)
from engine.lifecycle.state import (
    MAPPING_FIELDS,
    SCALAR_FIELDS,
    JobState,
    QueueConfig,
    SubmissionState,
)

#: No queue has settings (the default of a decision's ``queues``).
NO_QUEUES: Mapping[str, QueueConfig] = {}


def merge_draft(draft: SubmissionState, into: SubmissionState) -> None:
    """Writes what a draft changed (its ChainMaps' first maps and its scalars) into a state."""
    for name in MAPPING_FIELDS:
        overlay = getattr(draft, name)
        getattr(into, name).update(overlay.maps[0] if isinstance(overlay, ChainMap) else overlay)
    for name in SCALAR_FIELDS:
        setattr(into, name, getattr(draft, name))


class Draft:
    """A submission being decided: the events so far folded over the original state."""

    def __init__(
        self,
        state: SubmissionState | None,
        submission_id: str,
        now: int,
        policy: Policy,
        *,
        collect_effects: bool = False,
        queues: Mapping[str, QueueConfig] = NO_QUEUES,
    ) -> None:
        base = state or SubmissionState(submission_id=submission_id)
        self.state = object.__new__(SubmissionState)
        fields = self.state.__dict__
        for name in SCALAR_FIELDS:
            fields[name] = getattr(base, name)
        for name in MAPPING_FIELDS:
            # copy on write over a state that exists; a new submission's maps are its own
            # (a ChainMap's lookups cost several times a dict's on the hot path)
            fields[name] = {} if state is None else ChainMap({}, getattr(base, name))
        self.state.submission_id = submission_id
        self.now = now
        self.policy = policy
        self.queues = queues  # the settings of the queues in the submission's partition
        self.events: list[Event] = []
        self.collect_effects = collect_effects
        self.effects: list[Effect] = []

    def job(self, job_id: str) -> JobState:
        return self.state.jobs[job_id]

    def emit(self, job_id: str, body: EventBody) -> None:
        seq = self.state.seq + 1
        event = Event(
            event_id=event_id(self.state.submission_id, seq),
            submission_id=self.state.submission_id,
            job_id=job_id,
            seq=seq,
            timestamp=self.now,
            body=body,
        )
        self.events.append(event)
        if self.collect_effects:
            self.effects.extend(
                effects(
                    self.state,
                    event,
                    lease_ms=self.policy.lease_ms,
                    kill_grace_ms=self.policy.kill_grace_ms,
                )
            )
        evolve(self.state, event)
        if self.state.notifications:
            fire(self, event)  # one that is not persistent goes right after its first event

    def reject(
        self, command_id: str, command_type: str, code: RejectionCode, reason: str, job_id: str = ""
    ) -> None:
        body = CommandRejected(command_id, command_type, str(code), reason)
        if self.state.accepted:
            self.emit(job_id, body)
            return
        # The submission does not exist (unknown, or its SubmitJobs was invalid): the
        # rejection is logged outside its sequence (seq 0), so that a later valid submission
        # with this id still starts at seq 1 and no event id is ever reused.
        event = Event(
            event_id=f"{self.state.submission_id}:rejected:{command_id}",
            submission_id=self.state.submission_id,
            job_id=job_id,
            seq=0,
            timestamp=self.now,
            body=body,
        )
        self.events.append(event)
        if self.collect_effects:
            # not folded in, but it may call for a record (a schedule's rejected run)
            self.effects.extend(
                effects(
                    self.state,
                    event,
                    lease_ms=self.policy.lease_ms,
                    kill_grace_ms=self.policy.kill_grace_ms,
                )
            )
