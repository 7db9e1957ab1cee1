"""
RELIABILITY.md 7, 21, 22 and the run lifecycle under any interleaving.

* A stateful hypothesis test drives one run through a scripted status path at
  Champ while polls (started at one moment, recorded at another, some twice)
  and webhooks (delayed, duplicated) report what they saw, in any order: the
  run ends in the right final status with exactly one event per change the
  portal could know about, in order.
* An event is written in the same transaction as the change it records.

(Requirements 21 and 22, a SIGKILLed cluster and two sweeps at once:
tests/test_cluster.py.)
"""

import itertools
import json

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from runs import champ, lifecycle
from runs import organisations as org_actions
from runs.models import FINAL_STATUSES, AuditEntry, EventSource, Run, RunEvent, RunStatus
from runs.polling import POLL_FIELDS, Poller, _Outcome
from runs.triggering import TriggerRefused, run_trigger

#: Scripted status paths at Champ (the catalogue's, and harder ones).
PATHS = {
    "completes": ("pending", "in_progress", "completed"),
    "fails": ("pending", "in_progress", "failed"),
    "skipped": ("pending", "skipped"),
    "suspend-resume": ("pending", "in_progress", "suspended", "in_progress", "completed"),
    "back-and-forth": (
        "pending",
        "suspended",
        "in_progress",
        "suspended",
        "in_progress",
        "failed",
    ),
}
WEBHOOK_STATUSES = {"completed", "failed"}  # CHAMP_API.md: the only events Champ sends
CHAMP_IDS = itertools.count(700_000)


class RunLifecycle(RuleBasedStateMachine):
    """
    Champ moves a run along ``path``; the portal observes it by polls and webhooks.

    The model of what the portal must record: a poll records what it saw only
    if the run has not changed since the poll read it (anything else is a stale
    observation), a webhook records its final status unless the run is already
    final; every recorded change is one event, in order.
    """

    organisation = None
    secret = None

    def __init__(self):
        super().__init__()
        self.poller = Poller(owner="machine")  # only its recording half is used
        self.client = Client()

    @initialize(name=st.sampled_from(sorted(PATHS)))
    def trigger(self, name):
        self.path = PATHS[name]
        self.at_champ = 0  # Champ's position in the path
        self.champ_run_id = next(CHAMP_IDS)
        run = lifecycle.open_run(organisation=self.organisation, workflow_id=101, input={})
        lifecycle.record_status(
            run,
            seen=RunStatus.UNKNOWN,
            new=self.path[0],
            source=EventSource.TRIGGER,
            snapshot={"step": 0},
            extra_fields={"champ_run_id": self.champ_run_id},
        )
        self.run_id = run.pk
        self.stored = 0  # the position the stored status stands for
        self.version = 0  # bumped by every recorded change
        self.expected = [("", "unknown", None), ("unknown", self.path[0], 0)]
        self.polls = []  # (run as read, Champ's position when it answered, version then)
        self.webhooks = []  # positions of the deliveries Champ has queued

    # --- Champ ----------------------------------------------------------------------------

    @precondition(lambda self: self.at_champ < len(self.path) - 1)
    @rule()
    def champ_moves_on(self):
        self.at_champ += 1
        if self.path[self.at_champ] in WEBHOOK_STATUSES:
            self.webhooks.append(self.at_champ)

    # --- Polls ----------------------------------------------------------------------------

    @rule()
    def poll_reads_the_run_and_champ_answers(self):
        loaded = (
            Run.objects.filter(pk=self.run_id)
            .select_related("organisation")
            .only(*POLL_FIELDS, "organisation__api_base_url")
            .get()
        )
        self.polls.append((loaded, self.at_champ, self.version))

    @precondition(lambda self: self.polls)
    @rule(data=st.data(), duplicate=st.booleans())
    def poll_is_recorded(self, data, duplicate):
        index = data.draw(st.integers(0, len(self.polls) - 1), label="which poll")
        self._record_poll(index, duplicate)

    def _record_poll(self, index, duplicate=False):
        loaded, step, version = self.polls[index] if duplicate else self.polls.pop(index)
        status = self.path[step]
        answer = champ.WorkflowRun(
            id=self.champ_run_id,
            status=status,
            input={},
            output={"step": step} if status in FINAL_STATUSES else None,
            url=None,
            raw={"id": self.champ_run_id, "status": status, "step": step},
        )
        self.poller._record([_Outcome(loaded, None, answer)])
        if (
            version == self.version
            and self.path[self.stored] not in FINAL_STATUSES
            and status != self.path[self.stored]
        ):
            self._changed(step)

    # --- Webhooks -------------------------------------------------------------------------

    @precondition(lambda self: self.webhooks)
    @rule(data=st.data(), duplicate=st.booleans())
    def webhook_is_delivered(self, data, duplicate):
        index = data.draw(st.integers(0, len(self.webhooks) - 1), label="which delivery")
        step = self.webhooks[index] if duplicate else self.webhooks.pop(index)
        status = self.path[step]
        body = {
            "event": f"workflow_run.{status}",
            "data": {
                "workflow_run": {
                    "id": self.champ_run_id,
                    "workflow_id": 101,
                    "status": status,
                    "input": {},
                    "output": {"step": step},
                    "step": step,
                }
            },
        }
        response = self.client.post(
            reverse("champ_webhook", args=[self.organisation.slug]),
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {self.secret}",
        )
        assert response.status_code == 200, response.content
        should_record = self.path[self.stored] not in FINAL_STATUSES
        assert response.json()["recorded"] == should_record
        if should_record:
            self._changed(step)

    # --- The model --------------------------------------------------------------------------

    def _changed(self, step):
        self.expected.append((self.path[self.stored], self.path[step], step))
        self.stored = step
        self.version += 1

    def recorded(self):
        events = RunEvent.objects.filter(run_id=self.run_id).order_by("seq")
        assert [event.seq for event in events] == list(range(1, len(events) + 1))
        return [
            (event.from_status, event.to_status, (event.snapshot or {}).get("step"))
            for event in events
        ]

    @invariant()
    def one_event_per_change_in_order(self):
        if hasattr(self, "run_id"):
            recorded = self.recorded()
            assert recorded == self.expected
            steps = [step for _f, _t, step in recorded[1:]]
            assert steps == sorted(set(steps))  # never backwards, never twice
            assert Run.objects.get(pk=self.run_id).status == self.path[self.stored]

    def teardown(self):
        if not hasattr(self, "run_id"):
            return
        # Champ finishes; one fresh poll (or the webhook) must close the run.
        self.at_champ = len(self.path) - 1
        self.poll_reads_the_run_and_champ_answers()
        self._record_poll(len(self.polls) - 1)
        run = Run.objects.get(pk=self.run_id)
        assert run.status == self.path[-1]
        assert run.finished_at is not None and run.next_poll_at is None
        assert self.recorded() == self.expected


@pytest.fixture
def lifecycle_org(make_org, alice):
    organisation = make_org("lifecycle", admin=[alice])
    secret = org_actions.webhook_secret_create(organisation=organisation, user=alice)
    return organisation, secret


def test_run_lifecycle_any_interleaving_of_polls_and_webhooks_ends_right_with_one_event_per_change(
    lifecycle_org,
):
    RunLifecycle.organisation, RunLifecycle.secret = lifecycle_org
    run_state_machine_as_test(
        RunLifecycle,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# --- Requirement 7: one transaction ---------------------------------------------------------


@pytest.fixture
def open_run(org_a, alice):
    run = lifecycle.open_run(organisation=org_a, workflow_id=101, input={}, triggered_by=alice)
    lifecycle.record_status(run, seen="unknown", new="pending", source="trigger")
    return run


def test_an_event_is_written_in_the_same_transaction_as_the_change(open_run, monkeypatch):
    """If the event cannot be written, the status change is rolled back with it."""

    def refuse(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(RunEvent.objects, "bulk_create", refuse)
    with pytest.raises(RuntimeError):
        lifecycle.record_status(open_run, seen="pending", new="completed", source="poll")
    run = Run.objects.get(pk=open_run.pk)
    assert (run.status, run.finished_at, run.output) == ("pending", None, None)
    monkeypatch.undo()
    # And the change is still possible afterwards (nothing half-written blocks it).
    assert lifecycle.record_status(run, seen="pending", new="completed", source="poll").recorded
    assert run.events.count() == 3


def test_a_run_and_its_audit_entry_are_stored_together_or_not_at_all(
    org_a, olivia, token_a, monkeypatch
):
    def refuse(**kwargs):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(AuditEntry.objects, "record", refuse)
    with pytest.raises(RuntimeError):
        run_trigger(organisation=org_a, workflow_id=101, input={}, user=olivia)
    assert not Run.objects.exists()
    assert not RunEvent.objects.exists()


def test_a_refused_trigger_stores_nothing(org_a, olivia):
    with pytest.raises(TriggerRefused):  # no token at all
        run_trigger(organisation=org_a, workflow_id=101, input={}, user=olivia)
    assert not Run.objects.exists()


def test_run_lifecycle_a_stale_poll_after_suspend_and_resume_records_nothing(lifecycle_org):
    """
    The interleaving the machine above finds only rarely, spelled out: a poll
    read the run while it was in progress and saw it suspended; before that poll
    is recorded, others record the suspension *and* the resumption. The run is
    in progress again, as that poll read it; its "suspended" is stale.
    """
    RunLifecycle.organisation, RunLifecycle.secret = lifecycle_org
    machine = RunLifecycle()
    machine.trigger("suspend-resume")
    machine.champ_moves_on()  # in_progress
    machine.poll_reads_the_run_and_champ_answers()
    machine._record_poll(0)  # pending -> in_progress
    machine.champ_moves_on()  # suspended
    machine.poll_reads_the_run_and_champ_answers()  # the slow one: read in_progress, saw suspended
    machine.poll_reads_the_run_and_champ_answers()
    machine._record_poll(1)  # in_progress -> suspended
    machine.champ_moves_on()  # in_progress again
    machine.poll_reads_the_run_and_champ_answers()
    machine._record_poll(1)  # suspended -> in_progress
    machine.one_event_per_change_in_order()
    machine._record_poll(0)  # the slow poll arrives: stale, must change nothing
    machine.one_event_per_change_in_order()
    machine.teardown()
