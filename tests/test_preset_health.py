"""Preset health against a hand-computed fixture, on the list and preset page, at fixed cost."""

import statistics
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from runs import health, lifecycle
from runs.models import EventSource, RunStatus, WorkflowPreset


def recorded(
    organisation, preset, *, days_ago, status, seconds=None, now, error=None, output=None
):
    """A run started ``days_ago`` days before ``now``, in ``status`` (final after ``seconds``)."""
    start = now - timedelta(days=days_ago, minutes=1)
    run = lifecycle.open_run(
        organisation=organisation,
        workflow_id=preset.workflow_id,
        preset=preset,
        triggered_at=start,
        input={},
    )
    if status != RunStatus.UNKNOWN:
        lifecycle.record_status(
            run,
            seen=RunStatus.UNKNOWN,
            new=status,
            source=EventSource.TRIGGER,
            observed_at=start + timedelta(seconds=seconds or 1),
            error=error,
            **({"output": output} if output is not None else {}),
        )
    return run


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def fixture(org_a, alice, now):
    """
    Preset "Nightly", by hand:

    | started (days ago) | status      | took  |
    |--------------------|-------------|-------|
    | 0                  | pending     |       |
    | 1                  | completed   | 10 s  |
    | 2                  | failed      |       |  ← the last failure (reason in the output)
    | 3                  | completed   | 20 s  |
    | 4                  | unknown     |       |
    | 5                  | skipped     |       |
    | 10                 | completed   | 30 s  |
    | 12                 | failed      |       |
    | 15                 | completed   | 40 s  |
    | 20                 | completed   | 100 s |
    | 25                 | rejected    |       |
    | 40                 | completed   | 1000 s|  outside the 30 days
    | 45                 | failed      |       |  outside the 30 days

    7 days: 6 runs. 30 days: 11 runs; 5 completed, 3 failed or rejected → 62.5 %.
    Durations 10, 20, 30, 40, 100 → p50 = 30 s; p95 at rank 0.95 * 4 = 3.8:
    40 + 0.8 * (100 - 40) = 88 s.
    """
    nightly = WorkflowPreset.objects.create(
        organisation=org_a, name="Nightly", workflow_id=21, created_by=alice
    )
    rows = [
        (0, RunStatus.PENDING, None),
        (1, RunStatus.COMPLETED, 10),
        (3, RunStatus.COMPLETED, 20),
        (4, RunStatus.UNKNOWN, None),
        (5, RunStatus.SKIPPED, None),
        (10, RunStatus.COMPLETED, 30),
        (12, RunStatus.FAILED, None),
        (15, RunStatus.COMPLETED, 40),
        (20, RunStatus.COMPLETED, 100),
        (40, RunStatus.COMPLETED, 1000),
        (45, RunStatus.FAILED, None),
    ]
    for days, status, seconds in rows:
        recorded(org_a, nightly, days_ago=days, status=status, seconds=seconds, now=now)
    recorded(
        org_a,
        nightly,
        days_ago=25,
        status=RunStatus.REJECTED,
        now=now,
        error="Not started: workflow 21 not found or not published at Champ.",
    )
    last_failure = recorded(
        org_a,
        nightly,
        days_ago=2,
        status=RunStatus.FAILED,
        now=now,
        output={"error": "Step 'Validate' failed: simulated failure"},
    )
    idle = WorkflowPreset.objects.create(organisation=org_a, name="Idle", workflow_id=22)
    old = WorkflowPreset.objects.create(organisation=org_a, name="Old failure", workflow_id=23)
    old_failure = recorded(
        org_a, old, days_ago=100, status=RunStatus.FAILED, now=now, error="Long ago"
    )
    return nightly, idle, old, last_failure, old_failure


def test_health_numbers_match_the_hand_computed_fixture(fixture, now):
    nightly, idle, old, last_failure, old_failure = fixture
    result = health.preset_health([nightly.pk, idle.pk, old.pk], now=now)

    h = result[nightly.pk]
    assert (h.runs_7d, h.runs_30d, h.completed_30d, h.failed_30d) == (6, 11, 5, 3)
    assert h.success_rate == pytest.approx(0.625)
    assert h.p50 == pytest.approx(30, abs=0.01)
    assert h.p95 == pytest.approx(88, abs=0.01)
    assert h.last_failure.pk == last_failure.pk
    assert h.last_failure.reason == "Step 'Validate' failed: simulated failure"

    empty = result[idle.pk]
    assert (empty.runs_7d, empty.runs_30d, empty.success_rate, empty.p50, empty.p95) == (
        0,
        0,
        None,
        None,
        None,
    )
    assert empty.last_failure is None and empty.success_percent == "—"

    # The last failure is the newest at any time, even outside the 30 days.
    assert result[old.pk].last_failure.pk == old_failure.pk
    assert result[old.pk].last_failure.reason == "Long ago"


def test_the_preset_list_shows_each_presets_health(client_for, alice, fixture):
    nightly, *_ = fixture
    response = client_for(alice).get(reverse("preset_list"))
    by_name = {preset.name: preset.health for preset in response.context["presets"]}
    assert by_name["Nightly"].runs_30d == 11
    text = response.content.decode()
    row = text[text.index(nightly.get_absolute_url()) :].split("</tr>", 1)[0]
    for shown in ("6 / 11", "62 %", "30 s / 1 min 28 s", "Step &#x27;Validate&#x27; failed"):
        assert shown in row


def test_the_preset_page_shows_its_health(client_for, victor, fixture):
    nightly, *_, last_failure, _ = fixture
    response = client_for(victor).get(nightly.get_absolute_url())
    assert response.context["health"].runs_7d == 6
    text = response.content.decode()
    section = text[text.index('id="health"') :].split("</section>", 1)[0]
    assert "6 in the last 7 days · 11 in the last 30 days" in section
    assert "62 %" in section and "5 completed, 3 failed or rejected" in section
    assert "p50 30 s · p95 1 min 28 s" in section
    assert f"run #{last_failure.pk}" in section


def test_another_organisations_presets_and_runs_are_not_counted(client_for, bob, fixture, org_b):
    theirs = WorkflowPreset.objects.create(organisation=org_b, name="Theirs", workflow_id=21)
    response = client_for(bob).get(reverse("preset_list"))
    assert [p.name for p in response.context["presets"]] == ["Theirs"]
    assert response.context["presets"][0].health.runs_30d == 0
    assert client_for(bob).get(fixture[0].get_absolute_url()).status_code == 404
    assert theirs.pk in health.preset_health([theirs.pk])


def test_the_list_costs_the_same_for_many_presets(client_for, alice, org_a, now):
    client = client_for(alice)

    def cost() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("preset_list")).status_code == 200
        return len(queries)

    def add_presets(count: int, start: int) -> None:
        for i in range(start, start + count):
            preset = WorkflowPreset.objects.create(
                organisation=org_a, name=f"P{i}", workflow_id=100 + i
            )
            recorded(org_a, preset, days_ago=1, status=RunStatus.COMPLETED, seconds=5, now=now)
            recorded(org_a, preset, days_ago=2, status=RunStatus.FAILED, now=now, error="x")

    add_presets(2, 0)
    few = cost()
    add_presets(10, 2)
    assert cost() == few


def test_percentiles_read_only_the_newest_completed_runs_per_preset(fixture, now, monkeypatch):
    nightly, idle, old, *_ = fixture
    monkeypatch.setattr(health, "SAMPLE", 3)
    stats = health.duration_stats([nightly.pk, idle.pk, old.pk], now=now)
    # The newest three completed of the window: 10, 20, 30 s; the others have none.
    assert set(stats) == {nightly.pk}
    assert stats[nightly.pk].completed == 3
    assert stats[nightly.pk].p50 == pytest.approx(20, abs=0.01)
    assert stats[nightly.pk].p95 == pytest.approx(29, abs=0.01)


def test_many_presets_at_once(org_a, now):
    presets = [
        WorkflowPreset.objects.create(organisation=org_a, name=f"P{i}", workflow_id=300 + i)
        for i in range(450)  # more than one SQLite compound SELECT
    ]
    for preset in presets[::90]:
        recorded(org_a, preset, days_ago=1, status=RunStatus.COMPLETED, seconds=7, now=now)
    stats = health.duration_stats([preset.pk for preset in presets], now=now)
    assert sorted(stats) == sorted(preset.pk for preset in presets[::90])
    assert all(s.p50 == pytest.approx(7, abs=0.01) for s in stats.values())


# --- The percentile ---------------------------------------------------------------------------


def test_percentile_interpolates_like_percentile_cont():
    assert health.percentile([], 0.5) is None
    assert health.percentile([7.0], 0.95) == 7.0
    assert health.percentile([10, 20, 30, 40, 100], 0.95) == pytest.approx(88)
    assert health.percentile([1, 2, 3, 4], 0.5) == 2.5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=50))
def test_percentile_agrees_with_the_statistics_module(values):
    ordered = sorted(values)
    assert health.percentile(ordered, 0.5) == pytest.approx(statistics.median(values))
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18]
    assert health.percentile(ordered, 0.95) == pytest.approx(p95, abs=1e-6)
