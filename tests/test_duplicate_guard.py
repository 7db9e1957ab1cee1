"""The duplicate-run guard ("run anyway?") and a preset's limit on runs in progress."""

import html
import importlib
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runs import lifecycle
from runs.jsondiff import json_digest
from runs.models import AuditAction, AuditEntry, EventSource, Run, RunStatus
from runs.simulator import WORKFLOW_ECHO, WORKFLOW_SLOW
from runs.triggering import DuplicateSuspected, OpenRunLimitReached, run_trigger
from tests.run_fixtures import *  # noqa: F403

K1, K2, K3 = "a" * 22, "b" * 22, "c" * 22


def page(response) -> str:
    return html.unescape(response.content.decode())


def click_run(client, preset, key, **extra):
    return client.post(reverse("preset_run", args=[preset.pk]), {"submission_key": key, **extra})


def run_started_ago(organisation, seconds, *, input, user=None, status=RunStatus.PENDING, **kw):
    """A run of ``organisation`` started ``seconds`` ago (no Champ involved)."""
    at = timezone.now() - timedelta(seconds=seconds)
    run = lifecycle.open_run(
        organisation=organisation,
        workflow_id=kw.pop("workflow_id", WORKFLOW_ECHO),
        input=input,
        triggered_by=user,
        triggered_at=at,
        **kw,
    )
    if status != RunStatus.UNKNOWN:
        lifecycle.record_status(run, seen="unknown", new=status, source=EventSource.TRIGGER)
    return run


# --- The guard fires ---------------------------------------------------------------------------


def test_one_click_run_stays_one_click_without_a_recent_identical_run(
    client_for, olivia, champ_org, champ_server, preset_a
):
    response = click_run(client_for(olivia), preset_a, K1)
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == run.get_absolute_url()


def test_a_second_identical_run_asks_first_and_starts_nothing(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client = client_for(olivia)
    click_run(client, preset_a, K1)
    first = Run.objects.get()

    response = click_run(client, preset_a, K2)

    assert response.status_code == 200
    text = page(response)
    assert f"An identical run (#{first.pk}, pending) was started" in text
    assert "ago by you — run anyway?" in text
    assert 'name="confirm_duplicate" value="1"' in text
    assert f'name="submission_key" value="{K2}"' in text  # the same one-time key
    assert f'action="{reverse("preset_run", args=[preset_a.pk])}"' in text
    assert Run.objects.count() == 1
    assert champ_server.sim.stats()["posts"] == 1


def test_the_guard_names_who_started_the_identical_run(
    client_for, olivia, alice, org_a, champ_org, champ_server, preset_a
):
    run_started_ago(org_a, 40, input=preset_a.input, user=alice)
    text = page(click_run(client_for(olivia), preset_a, K1))
    assert "was started 40 s ago by alice — run anyway?" in text or (
        "was started 41 s ago by alice" in text
    )


def test_run_anyway_starts_one_run_however_often_it_is_clicked(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client = client_for(olivia)
    click_run(client, preset_a, K1)
    click_run(client, preset_a, K2)  # the guard page, carrying K2

    responses = [click_run(client, preset_a, K2, confirm_duplicate="1") for _ in range(2)]

    first, second = Run.objects.order_by("pk")
    assert second.submission_key == K2
    assert [r["Location"] for r in responses] == [second.get_absolute_url()] * 2
    assert champ_server.sim.stats()["posts"] == 2
    entry = AuditEntry.objects.filter(action=AuditAction.RUN_TRIGGERED).latest("pk")
    assert entry.changes["duplicate_of"] == first.pk


def test_the_override_works_once(client_for, olivia, champ_org, champ_server, preset_a):
    client = client_for(olivia)
    click_run(client, preset_a, K1)
    click_run(client, preset_a, K2, confirm_duplicate="1")
    # A new click (a fresh key) asks again: the confirmation was for that submission only.
    response = click_run(client, preset_a, K3)
    assert "run anyway?" in page(response)
    assert Run.objects.count() == 2


def test_a_confirmation_page_always_carries_a_one_time_key(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client = client_for(olivia)
    click_run(client, preset_a, K1)
    text = page(client.post(reverse("preset_run", args=[preset_a.pk])))  # no key at all
    marker = 'name="submission_key" value="'
    key = text[text.index(marker) + len(marker) :].split('"', 1)[0]
    assert len(key) >= 16
    for _ in range(2):
        click_run(client, preset_a, key, confirm_duplicate="1")
    assert Run.objects.count() == 2


def test_a_get_never_starts_a_run(client_for, olivia, champ_org, champ_server, preset_a):
    client = client_for(olivia)
    url = reverse("preset_run", args=[preset_a.pk])
    assert client.get(url, {"submission_key": K1, "confirm_duplicate": "1"}).status_code == 405
    assert not Run.objects.exists()


# --- What counts as identical ----------------------------------------------------------------


@pytest.mark.parametrize(
    "earlier, now, asks",
    [
        ({"message": "hello", "n": 1}, {"n": 1, "message": "hello"}, True),  # key order
        ({"message": "hello", "n": 1}, {"message": "hello", "n": 1.0}, True),  # same number
        ({"message": "hello", "n": 1}, {"message": "hello", "n": True}, False),  # not a number
        ({"message": "hello"}, {"message": "hello", "extra": None}, False),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [2, 1]}}, False),
    ],
)
def test_identical_means_equal_as_json(olivia, org_a, champ_org, champ_server, earlier, now, asks):
    run_started_ago(org_a, 10, input=earlier, user=olivia)
    if asks:
        with pytest.raises(DuplicateSuspected):
            run_trigger(organisation=org_a, workflow_id=WORKFLOW_ECHO, input=now, user=olivia)
    else:
        run_trigger(organisation=org_a, workflow_id=WORKFLOW_ECHO, input=now, user=olivia)
        assert Run.objects.count() == 2


def test_another_workflow_or_organisation_is_not_identical(
    olivia, bob, org_a, org_b, champ_org, champ_server, token_b
):
    run_started_ago(org_a, 10, input={}, workflow_id=WORKFLOW_SLOW)
    run_started_ago(org_b, 10, input={})
    run_trigger(organisation=org_a, workflow_id=WORKFLOW_ECHO, input={}, user=olivia)
    assert Run.objects.filter(organisation=org_a, workflow_id=WORKFLOW_ECHO).count() == 1


def test_the_twin_is_found_among_many_newer_runs_of_the_workflow(
    olivia, org_a, champ_org, champ_server
):
    run_started_ago(org_a, 60, input={"batch": "nightly"}, user=olivia)
    for number in range(250):  # newer runs of the same workflow, other inputs
        run_started_ago(org_a, 30, input={"batch": number}, user=olivia)
    with pytest.raises(DuplicateSuspected):
        run_trigger(
            organisation=org_a, workflow_id=WORKFLOW_ECHO, input={"batch": "nightly"}, user=olivia
        )


def test_the_migration_gives_existing_runs_their_input_digest(org_a, olivia):
    from django.apps import apps

    twin = run_started_ago(org_a, 10, input={"n": 1.0, "a": [True]}, user=olivia)
    Run.objects.filter(pk=twin.pk).update(input_digest="")  # as before the migration
    migration = importlib.import_module("runs.migrations.0009_run_input_digest")

    migration.fill_input_digests(apps, schema_editor=None)

    assert Run.objects.get(pk=twin.pk).input_digest == json_digest({"a": [True], "n": 1})


def test_a_rejected_run_never_started_and_does_not_count(olivia, org_a, champ_org, champ_server):
    run_started_ago(org_a, 10, input={}, status=RunStatus.REJECTED)
    run_trigger(organisation=org_a, workflow_id=WORKFLOW_ECHO, input={}, user=olivia)
    assert Run.objects.count() == 2


def test_the_window_is_the_presets_setting(
    client_for, olivia, org_a, champ_org, champ_server, preset_a
):
    run_started_ago(org_a, 3 * 60, input=preset_a.input)  # 3 minutes ago
    client = client_for(olivia)
    assert click_run(client, preset_a, K1).status_code == 302  # default window: 2 min
    assert Run.objects.count() == 2

    preset_a.duplicate_window_minutes = 0  # off
    preset_a.save()
    assert click_run(client, preset_a, K2).status_code == 302
    assert Run.objects.count() == 3

    preset_a.duplicate_window_minutes = 10
    preset_a.save()
    assert "run anyway?" in page(click_run(client, preset_a, K3))
    assert Run.objects.count() == 3


def test_runs_without_a_preset_use_the_site_default(
    settings, olivia, org_a, champ_org, champ_server
):
    run_started_ago(org_a, 5 * 60, input={"a": 1})
    run_trigger(organisation=org_a, workflow_id=WORKFLOW_ECHO, input={"a": 1}, user=olivia)
    settings.CHAMP_DUPLICATE_WINDOW_MINUTES = 10
    with pytest.raises(DuplicateSuspected) as caught:
        run_trigger(organisation=org_a, workflow_id=WORKFLOW_ECHO, input={"a": 1}, user=olivia)
    assert caught.value.minutes == 10
    settings.CHAMP_DUPLICATE_WINDOW_MINUTES = 0
    run_trigger(organisation=org_a, workflow_id=WORKFLOW_ECHO, input={"a": 1}, user=olivia)
    assert Run.objects.count() == 3


# --- The forms -------------------------------------------------------------------------------


def test_the_new_run_form_asks_and_reposts_what_was_typed(
    client_for, olivia, champ_org, champ_server
):
    client = client_for(olivia)
    data = {
        "organisation": champ_org.pk,
        "workflow_id": str(WORKFLOW_ECHO),
        "input": '{"customer": "ACME"}',
        "submission_key": K1,
    }
    client.post(reverse("run_create"), data)
    response = client.post(reverse("run_create"), {**data, "submission_key": K2})

    text = response.content.decode()
    assert "run anyway?" in html.unescape(text)
    assert 'value="{&quot;customer&quot;: &quot;ACME&quot;}"' in text
    assert f'name="workflow_id" value="{WORKFLOW_ECHO}"' in text
    assert f'name="submission_key" value="{K2}"' in text
    assert Run.objects.count() == 1

    for _ in range(2):
        client.post(
            reverse("run_create"), {**data, "submission_key": K2, "confirm_duplicate": "1"}
        )
    assert Run.objects.count() == 2
    assert Run.objects.latest("pk").input == {"customer": "ACME"}


def test_run_again_asks_and_keeps_what_it_repeats(
    client_for, olivia, org_a, champ_org, champ_server
):
    original = run_started_ago(org_a, 20, input={"a": 1}, user=olivia)
    client = client_for(olivia)
    url = reverse("run_again", args=[original.pk])
    data = {"organisation": org_a.pk, "workflow_id": str(WORKFLOW_ECHO), "input": '{"a": 1}'}

    asked = client.post(url, {**data, "submission_key": K1})
    assert f'action="{url}"' in asked.content.decode()
    client.post(url, {**data, "submission_key": K1, "confirm_duplicate": "1"})

    rerun = Run.objects.latest("pk")
    assert rerun.rerun_of == original
    assert AuditEntry.objects.get(action=AuditAction.RUN_AGAIN).changes["duplicate_of"] == (
        original.pk
    )


def test_confirming_needs_the_same_rights(client_for, victor, bob, org_a, preset_a):
    data = {"submission_key": K1, "confirm_duplicate": "1"}
    assert (
        client_for(victor).post(reverse("preset_run", args=[preset_a.pk]), data).status_code == 403
    )
    assert client_for(bob).post(reverse("preset_run", args=[preset_a.pk]), data).status_code == 404
    assert not Run.objects.exists()


# --- A limit on runs in progress ---------------------------------------------------------------


def test_a_preset_refuses_to_start_beyond_its_limit(
    client_for, olivia, org_a, champ_org, champ_server, preset_a
):
    preset_a.max_open_runs = 1
    preset_a.duplicate_window_minutes = 0
    preset_a.save()
    client = client_for(olivia)
    click_run(client, preset_a, K1)
    assert Run.objects.get().status == RunStatus.PENDING

    response = client.post(
        reverse("preset_run", args=[preset_a.pk]), {"submission_key": K2}, follow=True
    )

    text = page(response)
    assert "already has 1 run in progress and its limit is 1, so nothing was sent" in text
    assert Run.objects.count() == 1
    assert champ_server.sim.stats()["posts"] == 1

    lifecycle.record_status(Run.objects.get(), seen="pending", new="completed", source="poll")
    click_run(client, preset_a, K3)
    assert Run.objects.count() == 2


def test_suspended_and_runs_being_sent_count_as_in_progress(olivia, org_a, champ_org, preset_a):
    preset_a.max_open_runs = 2
    preset_a.save()
    run_started_ago(org_a, 5, input={"x": 1}, preset=preset_a, status=RunStatus.SUSPENDED)
    run_started_ago(org_a, 5, input={"x": 2}, preset=preset_a, status=RunStatus.UNKNOWN)
    # An `unknown` run of long ago is not being sent any more: it does not count.
    run_started_ago(org_a, 3600, input={"x": 3}, preset=preset_a, status=RunStatus.UNKNOWN)
    with pytest.raises(OpenRunLimitReached) as caught:
        run_trigger(
            organisation=org_a,
            workflow_id=preset_a.workflow_id,
            input={"x": 4},
            user=olivia,
            preset=preset_a,
        )
    assert caught.value.open_runs == 2


def test_the_limit_cannot_be_confirmed_away(olivia, org_a, champ_org, preset_a):
    preset_a.max_open_runs = 1
    preset_a.save()
    run_started_ago(org_a, 5, input=preset_a.input, preset=preset_a)
    with pytest.raises(OpenRunLimitReached):
        run_trigger(
            organisation=org_a,
            workflow_id=preset_a.workflow_id,
            input=preset_a.input,
            user=olivia,
            preset=preset_a,
            confirm_duplicate=True,
        )


def test_the_preset_form_sets_the_safeguards(client_for, olivia, preset_a):
    response = client_for(olivia).post(
        reverse("preset_edit", args=[preset_a.pk]),
        {
            "name": preset_a.name,
            "workflow_id": str(preset_a.workflow_id),
            "input": '{"message": "hello"}',
            "duplicate_window_minutes": "5",
            "max_open_runs": "3",
            "stuck_after_minutes": "30",
            "suspended_limit_minutes": "",
        },
    )
    assert response.status_code == 302
    preset_a.refresh_from_db()
    assert (
        preset_a.duplicate_window_minutes,
        preset_a.max_open_runs,
        preset_a.stuck_after_minutes,
        preset_a.suspended_limit_minutes,
    ) == (5, 3, 30, None)
    text = client_for(olivia).get(preset_a.get_absolute_url()).content.decode()
    assert "asks before an identical run within 5 min" in text
    assert "at most 3 runs in progress" in text
