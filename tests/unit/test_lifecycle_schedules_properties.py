"""Properties of schedules, in any timing the simulator can draw.

A schedule fires runs that execute on simulated workers for random times; the scheduler is
down for random stretches (its ticks come late), rebuilds the schedule from its events at
random moments (a restart), and users pause, resume and trigger it. Whatever happens:

* a slot fires at most once (each run id once), never before its time, and only a slot of the
  spec;
* every slot up to the end is accounted for exactly once: fired, or counted in a skip
  (a buffered slot fires later, or is skipped once more in the counts when it cannot);
* with ``skip`` and ``buffer_one``, a slot fires only when no run it fired is going;
* every firing's run is submitted (accepted once), and the schedule hears of every run's end;
* a rebuilt schedule decides exactly what the live one would.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lifecycle.decide import Policy
from engine.lifecycle.effects import Effect
from engine.lifecycle.evolve import evolve
from engine.lifecycle.records import (
    ChangeSchedule,
    CreateSchedule,
    Dispatch,
    Event,
    Input,
    JobSpec,
    ScheduleAction,
    ScheduleFired,
    ScheduleOverlap,
    ScheduleRunSeen,
    ScheduleSkipped,
    ScheduleSpec,
    SubmissionAccepted,
    Tick,
    schedule_submission_id,
)
from engine.lifecycle.schedules import next_slot
from engine.lifecycle.simulation import COMPLETE, Simulation
from engine.lifecycle.state import SubmissionState

POLICY = Policy(lease_ms=2_000, kill_grace_ms=1_000, progress_interval_ms=200)
SID = schedule_submission_id("every")
START = 1_800_000_000_000


class ScheduleWorld(Simulation):
    """A simulation of one schedule and its runs, with downtime and restarts."""

    def __init__(self, rng: random.Random, spec: ScheduleSpec) -> None:
        super().__init__((), policy=POLICY, start_ms=START)
        self.rng = rng
        self.spec = spec
        self.down_until = 0
        self.rebuilds = 0

    def receive(self, dispatch: Dispatch, now: int) -> None:
        fate = replace(COMPLETE, duration=self.rng.choice((50, 400, 1_500, 4_000, 9_000)))
        worker = self.workers[self.rng.randrange(len(self.workers))]
        self.start_run(dispatch, worker, fate, now + fate.claim_delay)

    def decide(self, sid: str, given: Input, now: int) -> None:
        if sid == SID and isinstance(given, Tick):
            if now < self.down_until:  # the scheduler is down: the tick comes when it is back
                self.at(self.down_until, partial(self.decide, sid, Tick()))
                return
            roll = self.rng.random()
            if roll < 0.05:
                self.down_until = now + self.rng.randrange(1, 6) * self.spec.interval_ms
                self.at(self.down_until, partial(self.decide, sid, Tick()))
                return
            if roll < 0.15:
                self.rebuild()
        super().decide(sid, given, now)

    def rebuild(self) -> None:
        """The schedule's state folded from its events, as a restarted scheduler has it."""
        state: SubmissionState | None = None
        for event in self.out.events:
            if event.submission_id == SID and event.seq > 0:
                state = evolve(state, event)
        assert state == self.out.states[SID]
        self.out.states[SID] = state
        self.rebuilds += 1

    def apply(self, sid: str, given: Input, now: int) -> tuple[list[Event], list[Effect]]:
        before = self.state(sid)
        schedule = None if before is None else before.schedule
        running = set() if schedule is None else set(schedule.running)  # step updates in place
        events, effects = super().apply(sid, given, now)
        if sid == SID and schedule is not None:
            for event in events:
                body = event.body
                if isinstance(body, ScheduleFired) and not body.manual:
                    assert body.slot <= now, "fired before its slot"
                    assert next_slot(self.spec, body.slot - 1) == body.slot, "not a slot"
                    if self.spec.overlap is not ScheduleOverlap.ALLOW_ALL:
                        assert not running, f"fired {body.slot} while {running} go on"
                if isinstance(body, ScheduleFired) and self.spec.overlap is not (
                    ScheduleOverlap.ALLOW_ALL
                ):
                    running.add(body.run_submission_id)
                if isinstance(body, ScheduleRunSeen):
                    running.discard(body.run_submission_id)
        return events, effects


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    overlap=st.sampled_from(ScheduleOverlap),
    interval_s=st.integers(1, 5),
    window_slots=st.integers(0, 4),
    slots=st.integers(3, 40),
    changes=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(ScheduleAction)), max_size=4),
)
def test_a_schedule_fires_each_slot_at_most_once_and_accounts_for_every_slot(
    seed: int,
    overlap: ScheduleOverlap,
    interval_s: int,
    window_slots: int,
    slots: int,
    changes: list[tuple[int, ScheduleAction]],
) -> None:
    rng = random.Random(seed)
    interval = interval_s * 1_000
    spec = ScheduleSpec(
        interval_ms=interval,
        overlap=overlap,
        catchup_window_ms=window_slots * interval,
        end_at=START + slots * interval,
    )
    world = ScheduleWorld(rng, spec)
    jobs = (JobSpec("a", task="t"), JobSpec("b", task="t", depends_on=("a",)))
    world.at(START, partial(world.decide, SID, CreateSchedule("c-0", SID, "every", spec, jobs)))
    deleted = False
    for n, (slot, action) in enumerate(sorted(changes)):
        if action is ScheduleAction.DELETE:
            deleted = True
        command = ChangeSchedule(f"c-{n + 1}", SID, action)
        world.at(START + slot * interval + 7, partial(world.decide, SID, command))
    out = world.run()

    own = [e for e in out.events if e.submission_id == SID and e.seq > 0]
    fires = [e.body for e in own if isinstance(e.body, ScheduleFired)]
    runs = [f.run_submission_id for f in fires]
    assert len(runs) == len(set(runs)), "a run fired twice"
    timed = [f for f in fires if not f.manual]
    assert [f.slot for f in timed] == sorted({f.slot for f in timed}), "out of order"
    # every run was submitted once, and the schedule heard of every end
    accepted = Counter(
        e.submission_id for e in out.events if isinstance(e.body, SubmissionAccepted)
    )
    assert all(accepted[run] == 1 for run in runs), accepted
    for run in runs:
        assert out.states[run].done, f"run {run} never ended"
    schedule = out.states[SID].schedule
    assert schedule is not None
    assert schedule.running == (), f"still waits for {schedule.running}"
    # the slots the schedule considered: each once, fired or counted as skipped
    paused_or_deleted = any(a in (ScheduleAction.PAUSE, ScheduleAction.DELETE) for _, a in changes)
    if not paused_or_deleted:
        skipped = [e.body for e in own if isinstance(e.body, ScheduleSkipped)]
        counted = sum(s.count for s in skipped if s.reason != "buffered")
        buffered = [s.slot for s in skipped if s.reason == "buffered"]
        fired_slots = {f.slot for f in timed}
        assert all(slot in fired_slots for slot in buffered), "a buffered slot never fired"
        # the slots from the creation (START is one) to the end, both included
        assert len(timed) + counted == slots + 1, (len(timed), counted, slots)
    if deleted:
        assert schedule.deleted and schedule.next_at == 0
