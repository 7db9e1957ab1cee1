"""
The poller over real HTTP against the built-in simulator: claims, back-off,
failures, tokens, SSRF, slots. (The real-cluster tests are in test_cluster.py.)
"""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from runs import champ, lifecycle, polling, simulator, tasks
from runs import organisations as org_actions
from runs.models import ApiToken, Run, RunStatus, SweepSlot
from runs.polling import next_poll_delay
from runs.simulator_server import SimulatorServer

SCRIPTED = {
    simulator.WORKFLOW_ECHO: ["unknown", "pending", "in_progress", "completed"],
    simulator.WORKFLOW_FAILS: ["unknown", "pending", "in_progress", "failed"],
    simulator.WORKFLOW_SUSPEND_RESUME: [
        "unknown",
        "pending",
        "in_progress",
        "suspended",
        "in_progress",
        "completed",
    ],
    simulator.WORKFLOW_SKIPPED: ["unknown", "pending", "skipped"],
}


@pytest.fixture
def sim():
    return simulator.ChampSimulator(time_scale=0.3)


@pytest.fixture
def server(sim):
    with SimulatorServer(sim) as server:
        yield server


@pytest.fixture
def broker(db):
    """The configured django-q2 broker (ORM or Redis), emptied."""
    from django_q.brokers import get_broker

    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def queued_payloads(broker) -> list[str]:
    """The signed task packages waiting in the broker."""
    from django_q.models import OrmQ

    if hasattr(broker, "connection") and hasattr(broker.connection, "lrange"):
        return [item.decode() for item in broker.connection.lrange(broker.list_key, 0, -1)]
    return list(OrmQ.objects.values_list("payload", flat=True))


@pytest.fixture
def fast_polling(settings):
    settings.CHAMP_POLL_INTERVAL_SECONDS = 0.05
    settings.CHAMP_POLL_BATCH_SIZE = 50


@pytest.fixture
def org(make_org, alice, server):
    organisation = make_org("polled", api_base_url=server.base_url, admin=[alice])
    org_actions.token_add(
        organisation=organisation, label="sim", secret=simulator.DEMO_TOKEN, user=alice
    )
    return organisation


def start_run(organisation, workflow_id, run_input=None, user=None) -> Run:
    """What run_trigger does, minus the page: open, POST to Champ, record pending."""
    run = lifecycle.open_run(
        organisation=organisation,
        workflow_id=workflow_id,
        input=run_input or {},
        triggered_by=user,
    )
    created = champ.trigger(
        base_url=organisation.api_base_url,
        token=simulator.DEMO_TOKEN,
        workflow_id=workflow_id,
        input=run_input or {},
    )
    lifecycle.record_status(
        run,
        seen="unknown",
        new=created.status,
        source="trigger",
        snapshot=created.raw,
        extra_fields={
            "champ_run_id": created.id,
            "champ_url": created.url or "",
            "next_poll_at": timezone.now(),
        },
    )
    return run


def statuses(run):
    return list(run.events.order_by("seq").values_list("to_status", flat=True))


def test_a_sweep_drives_every_workflow_through_its_scripted_path(org, fast_polling, sim):
    runs = {wf: start_run(org, wf, {"n": wf}) for wf in SCRIPTED}
    tasks.poll_sweep(max_seconds=15, idle_exit_seconds=0.2)
    for workflow_id, run in runs.items():
        run.refresh_from_db()
        assert statuses(run) == SCRIPTED[workflow_id], workflow_id
        assert run.is_final
        assert run.next_poll_at is None
        assert run.lease_owner == ""
    echo = runs[simulator.WORKFLOW_ECHO]
    assert echo.output == {"echo": {"n": simulator.WORKFLOW_ECHO}}
    assert sim.max_inflight() == 1  # never two GETs of one run at once


def test_every_batch_a_sweep_sent_is_recorded_even_the_one_in_flight_at_the_end(
    org, settings, sim
):
    # Always due, small batches: the sweep keeps one batch in flight while it
    # records the previous one, and is stopped by its time limit mid-stream.
    settings.CHAMP_POLL_INTERVAL_SECONDS = 0
    settings.CHAMP_POLL_BATCH_SIZE = 3
    runs = [start_run(org, simulator.WORKFLOW_SLOW) for _ in range(7)]
    summary = tasks.poll_sweep(max_seconds=1.0, idle_exit_seconds=0.2)
    recorded = sum(
        Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("poll_attempts", flat=True)
    )
    assert recorded == sim.stats()["gets"] > 2 * len(runs)
    assert f"{recorded} polls" in summary
    assert not Run.objects.exclude(lease_owner="").exists()  # every lease released
    assert sim.max_inflight() == 1


def test_a_poll_recorded_after_a_webhook_ended_the_run_neither_reopens_nor_reschedules_it(
    org, settings
):
    settings.CHAMP_POLL_INTERVAL_SECONDS = 0
    ended, taken, polled = (start_run(org, simulator.WORKFLOW_SLOW) for _ in range(3))
    with polling.Poller(owner="sweep-a") as poller:
        ids = tasks.claim_due_runs("sweep-a", limit=10)
        assert sorted(ids) == sorted([ended.pk, taken.pk, polled.pk])
        in_flight = poller.start(ids)
        # While the GETs are out: a webhook ends one run, another sweep takes
        # over the lease of another (this sweep was presumed dead).
        lifecycle.observe_status(ended, new="completed", source="webhook", output={"ok": 1})
        Run.objects.filter(pk=taken.pk).update(lease_owner="sweep-b")
        result = poller.record(in_flight)
    assert result.polls == 3 and result.changes == 0
    ended, taken, polled = (Run.objects.get(pk=r.pk) for r in (ended, taken, polled))
    assert (ended.status, ended.next_poll_at, ended.output) == ("completed", None, {"ok": 1})
    assert (taken.lease_owner, taken.poll_attempts) == ("sweep-b", 0)
    assert (polled.lease_owner, polled.poll_attempts) == ("", 1)
    assert polled.next_poll_at is not None and polled.last_polled_at is not None


def test_a_run_champ_no_longer_knows_is_closed_as_failed_with_the_reason(org, fast_polling, sim):
    run = start_run(org, simulator.WORKFLOW_SLOW)
    sim.reset()  # Champ forgets every run: its GET now answers 404
    tasks.poll_sweep(max_seconds=5, idle_exit_seconds=0.2)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "404" in run.error


def test_transient_failures_back_off_and_the_run_still_completes_once(org, fast_polling, sim):
    sim.configure(fail_rate=0.3, rate_limit_rate=0.2, malformed_rate=0.2, retry_after=0.2, seed=7)
    runs = [start_run(org, simulator.WORKFLOW_ECHO, {"i": i}) for i in range(6)]
    tasks.poll_sweep(max_seconds=25, idle_exit_seconds=0.2)
    for run in runs:
        run.refresh_from_db()
        assert run.status == RunStatus.COMPLETED
        assert run.events.filter(to_status="completed").count() == 1
        tos = list(run.events.values_list("to_status", flat=True))
        assert len(tos) == len(set(tos))  # no change recorded twice
    assert sum(sim.fault_counts.values()) > 0


def test_a_failed_poll_is_recorded_on_the_run_and_retried_with_back_off(org, settings, sim):
    settings.CHAMP_POLL_INTERVAL_SECONDS = 1.0
    run = start_run(org, simulator.WORKFLOW_SLOW)
    sim.configure(fail_rate=1.0)
    owner = "test-sweep"
    ids = tasks.claim_due_runs(owner, limit=10)
    from runs.polling import Poller

    with Poller(owner=owner) as poller:
        poller.poll(ids)
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    assert "attempt 1" in run.last_poll_error
    assert run.poll_failures == 1
    assert run.lease_owner == ""
    assert run.next_poll_at > timezone.now()


def test_retry_after_is_honoured(org, settings, sim):
    run = start_run(org, simulator.WORKFLOW_SLOW)
    sim.configure(rate_limit_rate=1.0, retry_after=7, retry_after_form="date")
    ids = tasks.claim_due_runs("s", limit=10)
    from runs.polling import Poller

    before = timezone.now()
    with Poller(owner="s") as poller:
        poller.poll(ids)
    run.refresh_from_db()
    # HTTP-dates have whole-second precision: allow one second of rounding.
    assert run.next_poll_at >= before + timedelta(seconds=6)
    assert "429" in run.last_poll_error or "rate" in run.last_poll_error.lower()


def test_a_401_flags_the_token_keeps_the_run_open_and_resumes_with_a_new_token(
    org, fast_polling, sim, alice
):
    run = start_run(org, simulator.WORKFLOW_ECHO)
    sim.tokens.clear()  # Champ revoked every token
    tasks.poll_sweep(max_seconds=1.5, idle_exit_seconds=0.2)
    run.refresh_from_db()
    token = ApiToken.objects.get(organisation=org)
    assert token.rejected_at is not None
    assert run.is_open
    assert "rejected the token" in run.last_poll_error
    # An admin enters a valid token: polling resumes and the run completes.
    sim.tokens["api_fresh_valid_token_0002"] = "demo"
    org_actions.token_add(
        organisation=org, label="fresh", secret="api_fresh_valid_token_0002", user=alice
    )
    tasks.poll_sweep(max_seconds=10, idle_exit_seconds=0.2)
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert run.last_poll_error == ""


def test_an_off_origin_run_url_is_never_requested(org, fast_polling, sim):
    elsewhere = simulator.ChampSimulator()
    with SimulatorServer(elsewhere, host="127.0.0.1") as other:
        run = start_run(org, simulator.WORKFLOW_ECHO)
        Run.objects.filter(pk=run.pk).update(
            champ_url=f"{other.base_url}/api/external/v1/workflows/101/runs/{run.champ_run_id}"
        )
        tasks.poll_sweep(max_seconds=10, idle_exit_seconds=0.2)
        assert elsewhere.request_count == 0
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED


def test_two_claims_take_disjoint_batches(org):
    for _ in range(6):
        start_run(org, simulator.WORKFLOW_SLOW)
    first = tasks.claim_due_runs("one", limit=4)
    second = tasks.claim_due_runs("two", limit=4)
    assert len(first) == 4 and len(second) == 2
    assert not set(first) & set(second)
    assert tasks.claim_due_runs("three", limit=4) == []


def test_an_expired_lease_can_be_claimed_again(org, settings):
    run = start_run(org, simulator.WORKFLOW_SLOW)
    assert tasks.claim_due_runs("crashed", limit=1) == [run.pk]
    Run.objects.filter(pk=run.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert tasks.claim_due_runs("rescuer", limit=1) == [run.pk]


def test_final_runs_are_never_claimed(org):
    run = start_run(org, simulator.WORKFLOW_SLOW)
    lifecycle.observe_status(run, new="completed", source="webhook")
    Run.objects.filter(pk=run.pk).update(next_poll_at=timezone.now())
    assert tasks.claim_due_runs("x", limit=5) == []


def test_kick_enqueues_a_sweep_only_when_a_slot_is_free(org, settings, broker):
    settings.CHAMP_POLL_MAX_SWEEPS = 1
    assert tasks.kick_poller() is True
    assert broker.queue_size() == 1
    # A burst of kicks (one per trigger) enqueues one sweep.
    assert tasks.kick_poller() is False
    assert broker.queue_size() == 1
    cache.clear()
    SweepSlot.objects.filter(number=1).update(owner="busy", heartbeat_at=timezone.now())
    assert tasks.kick_poller() is False
    assert broker.queue_size() == 1
    # A dead sweep (stale heartbeat) frees its slot.
    cache.clear()
    SweepSlot.objects.filter(number=1).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert tasks.kick_poller() is True


def test_broker_messages_carry_no_token(org, token_a, broker):
    from django_q.signing import SignedPackage

    tasks.kick_poller()
    messages = queued_payloads(broker)
    assert messages
    for payload in messages:
        assert simulator.DEMO_TOKEN not in payload
        task = SignedPackage.loads(payload)
        assert task["func"] == tasks.SWEEP_TASK
        assert task["args"] == () and not task.get("kwargs")


def test_a_second_sweep_finds_no_free_slot(settings, db):
    settings.CHAMP_POLL_MAX_SWEEPS = 1
    tasks._ensure_slots()
    SweepSlot.objects.filter(number=1).update(owner="busy", heartbeat_at=timezone.now())
    assert tasks.poll_sweep(max_seconds=1) == "no free sweep slot"


def test_watchdog_schedule_exists_once_after_migrate(db):
    from django_q.models import Schedule

    tasks.ensure_watchdog_schedule()
    tasks.ensure_watchdog_schedule()
    schedule = Schedule.objects.get(name=tasks.WATCHDOG_SCHEDULE_NAME)
    assert schedule.func == tasks.WATCHDOG_TASK
    assert schedule.minutes == 1


@pytest.mark.parametrize(
    "kwargs, low, high",
    [
        ({"age": 5, "since_change": 5, "status": "pending"}, 0.9, 1.1),
        ({"age": 300, "since_change": 200, "status": "in_progress"}, 1.8, 2.2),
        ({"age": 7200, "since_change": 7000, "status": "in_progress"}, 13.5, 16.5),
        ({"age": 120, "since_change": 100, "status": "suspended"}, 9, 11),
        ({"age": 120, "since_change": 5, "status": "suspended"}, 0.9, 1.1),
        ({"age": 5, "since_change": 5, "status": "pending", "retry_after": 30}, 30, 30),
        ({"age": 5, "since_change": 5, "status": "pending", "failures": 1}, 0.5, 1),
        ({"age": 5, "since_change": 5, "status": "pending", "failures": 4}, 4, 8),
        ({"age": 5, "since_change": 5, "status": "pending", "failures": 40}, 150, 300),
    ],
)
def test_next_poll_delay_backs_off_as_documented(kwargs, low, high):
    for _ in range(50):
        assert low <= next_poll_delay(**kwargs) <= high


def test_poll_status_reports_open_due_and_overdue_runs_and_sweeps(org, capsys):
    from django.core.management import call_command

    for _ in range(3):
        start_run(org, simulator.WORKFLOW_SLOW)
    Run.objects.update(next_poll_at=timezone.now() - timedelta(seconds=42))
    tasks._ensure_slots()
    SweepSlot.objects.filter(number=1).update(owner="sweep-x", heartbeat_at=timezone.now())
    call_command("poll_status")
    out = capsys.readouterr().out
    assert "Open runs:            3" in out
    assert "Due now:              3" in out
    assert "Oldest overdue poll:  42" in out
    assert "slot 1: sweep-x" in out
    call_command("poll_status", "--json")
    assert '"open_by_status": {\n    "pending": 3' in capsys.readouterr().out


def test_hand_overs_and_the_watchdog_are_never_deduplicated(org, settings, broker):
    settings.CHAMP_POLL_MAX_SWEEPS = 1
    start_run(org, simulator.WORKFLOW_SLOW)
    assert tasks.kick_poller() is True
    # A sweep handing over right after a trigger's kick must still enqueue.
    assert tasks.kick_poller(dedupe=False) is True
    assert tasks.poll_watchdog() == "sweep enqueued"
    assert broker.queue_size() == 3
