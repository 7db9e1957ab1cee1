"""Stuck runs: limits per preset, the dashboard card, the history filter, and their cost."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from runs import lifecycle, stuck
from runs.models import EventSource, Run, RunStatus, WorkflowPreset


@pytest.fixture
def now():
    return timezone.now()


def finished(organisation, preset, seconds, *, now, days_ago=1, status=RunStatus.COMPLETED):
    start = now - timedelta(days=days_ago)
    run = lifecycle.open_run(
        organisation=organisation,
        workflow_id=preset.workflow_id,
        preset=preset,
        triggered_at=start,
    )
    lifecycle.record_status(
        run,
        seen=RunStatus.UNKNOWN,
        new=status,
        source=EventSource.TRIGGER,
        observed_at=start + timedelta(seconds=seconds),
    )
    return run


def open_run(organisation, *, unchanged_for, now, preset=None, status=RunStatus.IN_PROGRESS, **kw):
    """A run in ``status`` whose last change was ``unchanged_for`` ago."""
    changed = now - unchanged_for
    run = lifecycle.open_run(
        organisation=organisation,
        workflow_id=preset.workflow_id if preset else 9,
        preset=preset,
        triggered_at=changed - timedelta(seconds=1),
        **kw,
    )
    if status != RunStatus.UNKNOWN:
        lifecycle.record_status(
            run, seen=RunStatus.UNKNOWN, new=status, source=EventSource.POLL, observed_at=changed
        )
    run.refresh_from_db()
    return run


@pytest.fixture
def usual(org_a, alice, now):
    """A preset whose completed runs took 60, 60, 60, 60 and 120 s: p95 = 108 s, limit 324 s."""
    preset = WorkflowPreset.objects.create(
        organisation=org_a, name="Usual", workflow_id=31, created_by=alice
    )
    for seconds in (60, 60, 60, 60, 120):
        finished(org_a, preset, seconds, now=now)
    return preset


def minutes(n):
    return timedelta(minutes=n)


# --- Limits ------------------------------------------------------------------------------------


def test_the_limit_is_three_times_the_presets_p95(usual, now):
    limits = stuck.limits_for([usual.pk], now=now)
    assert limits.active[usual.pk] == timedelta(seconds=324)


def test_pending_or_in_progress_beyond_the_limit_is_stuck(org_a, usual, now):
    fresh = open_run(org_a, preset=usual, unchanged_for=timedelta(seconds=300), now=now)
    late = open_run(org_a, preset=usual, unchanged_for=timedelta(seconds=330), now=now)
    pending = open_run(
        org_a, preset=usual, unchanged_for=minutes(6), status=RunStatus.PENDING, now=now
    )
    stuck.flag([fresh, late, pending], now=now)
    assert (fresh.is_stuck, late.is_stuck, pending.is_stuck) == (False, True, True)
    assert late.unchanged_for == timedelta(seconds=330)


def test_the_automatic_limit_has_a_floor(settings, org_a, alice, now):
    quick = WorkflowPreset.objects.create(organisation=org_a, name="Quick", workflow_id=32)
    for seconds in (1, 2, 2, 3, 2):
        finished(org_a, quick, seconds, now=now)
    assert stuck.limits_for([quick.pk], now=now).active[quick.pk] == minutes(5)
    settings.CHAMP_STUCK_MIN_MINUTES = 1
    assert stuck.limits_for([quick.pk], now=now).active[quick.pk] == minutes(1)


def test_too_little_history_uses_the_site_default(settings, org_a, now):
    young = WorkflowPreset.objects.create(organisation=org_a, name="Young", workflow_id=33)
    for seconds in (10, 10, 10, 10):  # four are not enough
        finished(org_a, young, seconds, now=now)
    finished(org_a, young, 10, now=now, days_ago=40)  # outside the 30 days
    finished(org_a, young, 10, now=now, status=RunStatus.FAILED)  # not completed
    run = open_run(org_a, preset=young, unchanged_for=minutes(59), now=now)
    assert not stuck.flag([run], now=now)[0].is_stuck
    settings.CHAMP_STUCK_DEFAULT_MINUTES = 30
    assert stuck.flag([run], now=now)[0].is_stuck


def test_a_presets_own_limit_wins(org_a, usual, now):
    usual.stuck_after_minutes = 60
    usual.save()
    run = open_run(org_a, preset=usual, unchanged_for=minutes(30), now=now)
    assert not stuck.flag([run], now=now)[0].is_stuck
    assert stuck.limits_for([usual.pk], now=now).active[usual.pk] == minutes(60)


def test_suspended_runs_have_their_own_limit(settings, org_a, usual, now):
    day = open_run(
        org_a, preset=usual, unchanged_for=minutes(23 * 60), status=RunStatus.SUSPENDED, now=now
    )
    assert not stuck.flag([day], now=now)[0].is_stuck  # default 24 h
    usual.suspended_limit_minutes = 60
    usual.save()
    assert stuck.flag([day], now=now)[0].is_stuck
    adhoc = open_run(org_a, unchanged_for=minutes(25 * 60), status=RunStatus.SUSPENDED, now=now)
    assert stuck.flag([adhoc], now=now)[0].is_stuck


def test_final_and_unknown_runs_are_never_stuck(org_a, usual, now):
    old = finished(org_a, usual, 10, now=now, days_ago=20)
    unknown = open_run(org_a, unchanged_for=minutes(600), status=RunStatus.UNKNOWN, now=now)
    assert stuck.flag([old, unknown], now=now)[0].is_stuck is False
    assert unknown.is_stuck is False


def test_the_filter_and_the_flags_agree(org_a, usual, now):
    quick = WorkflowPreset.objects.create(
        organisation=org_a, name="Quick", workflow_id=32, stuck_after_minutes=2
    )
    runs = [
        open_run(org_a, preset=preset, unchanged_for=minutes(m), status=status, now=now)
        for preset in (usual, quick, None)
        for m in (1, 3, 7, 61, 2000)
        for status in (RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.SUSPENDED)
    ]
    flagged = {run.pk for run in stuck.flag(runs, now=now) if run.is_stuck}
    filtered = set(stuck.stuck_runs(Run.objects.all(), now=now).values_list("pk", flat=True))
    assert flagged == filtered
    # Pending and in progress: usual (5.4 min) 7, 61, 2000; quick (2 min) 3, 7, 61, 2000;
    # none (60 min) 61, 2000 — twice each. Suspended (24 h): 2000 for each of the three.
    assert len(flagged) == (3 + 4 + 2) * 2 + 3


# --- Pages -------------------------------------------------------------------------------------


def test_dashboard_shows_stuck_runs_with_the_time_since_their_last_change(
    client_for, olivia, org_a, usual, now
):
    late = open_run(org_a, preset=usual, unchanged_for=minutes(90), now=now)
    fine = open_run(org_a, preset=usual, unchanged_for=minutes(1), now=now)

    response = client_for(olivia).get(reverse("dashboard"))

    assert [run.pk for run in response.context["stuck_runs"]] == [late.pk]
    text = response.content.decode()
    card = text[text.index('id="stuck-runs"') : text.index('id="active-runs"')]
    assert f"#{late.pk}" in card and f"#{fine.pk}<" not in card
    assert "no change for 1 h 30 min" in card
    assert f"{reverse('run_list')}?stuck=1" in card
    active = {run.pk: run.is_stuck for run in response.context["active_runs"]}
    assert active == {late.pk: True, fine.pk: False}


def test_no_stuck_card_without_stuck_runs(client_for, olivia, org_a, usual, now):
    open_run(org_a, preset=usual, unchanged_for=minutes(1), now=now)
    assert 'id="stuck-runs"' not in client_for(olivia).get(reverse("dashboard")).content.decode()


def test_history_filters_stuck_runs_and_flags_them(client_for, olivia, org_a, usual, now):
    late = open_run(org_a, preset=usual, unchanged_for=minutes(90), now=now)
    fine = open_run(org_a, preset=usual, unchanged_for=minutes(1), now=now)
    client = client_for(olivia)

    everything = client.get(reverse("run_list"))
    flags = {run.pk: run.is_stuck for run in everything.context["page"].rows}
    assert flags[late.pk] is True and flags[fine.pk] is False
    assert "no change for 1 h 30 min" in everything.content.decode()

    only = client.get(reverse("run_list"), {"stuck": "1"})
    assert [run.pk for run in only.context["page"].rows] == [late.pk]
    combined = client.get(reverse("run_list"), {"stuck": "1", "status": "pending"})
    assert combined.context["page"].rows == []


def test_another_organisations_stuck_runs_stay_hidden(client_for, bob, alice, org_a, org_b, now):
    open_run(org_a, unchanged_for=minutes(600), now=now)
    mine = open_run(org_b, unchanged_for=minutes(600), now=now)
    client = client_for(bob)
    assert [r.pk for r in client.get(reverse("dashboard")).context["stuck_runs"]] == [mine.pk]
    rows = client.get(reverse("run_list"), {"stuck": "1"}).context["page"].rows
    assert [r.pk for r in rows] == [mine.pk]


def test_the_run_page_flags_a_stuck_run(client_for, olivia, org_a, usual, now):
    late = open_run(org_a, preset=usual, unchanged_for=minutes(90), now=now)
    text = client_for(olivia).get(reverse("run_live", args=[late.pk])).content.decode()
    assert "badge stuck" in text and "no change for 1 h 30 min" in text


def test_list_pages_do_not_query_per_row(client_for, olivia, org_a, alice, now):
    presets = [
        WorkflowPreset.objects.create(organisation=org_a, name=f"P{i}", workflow_id=40 + i)
        for i in range(6)
    ]

    client = client_for(olivia)

    def cost(n_presets: int) -> tuple[int, int]:
        for preset in presets[:n_presets]:
            for seconds in (10, 20, 30, 40, 50):
                finished(org_a, preset, seconds, now=now)
            open_run(org_a, preset=preset, unchanged_for=minutes(30), now=now)
            open_run(org_a, preset=preset, unchanged_for=minutes(1), now=now)
        counts = []
        for url in (reverse("dashboard"), reverse("run_list") + "?stuck=1"):
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200
            counts.append(len(queries))
        return tuple(counts)

    few = cost(1)
    many = cost(6)
    assert many == few
