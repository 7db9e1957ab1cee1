"""Versioned presets: each content edit is a version; runs record theirs; save a run as preset."""

import importlib

import pytest
from django.apps import apps
from django.urls import reverse

from runs import presets as preset_actions
from runs.models import (
    AppendOnlyError,
    AuditAction,
    AuditEntry,
    PresetVersion,
    Run,
    WorkflowPreset,
)
from runs.simulator import WORKFLOW_ECHO
from tests.run_fixtures import *  # noqa: F403

KEY = "v" * 22


def edit(client, preset, **changes):
    data = {
        "name": preset.name,
        "workflow_id": str(preset.workflow_id),
        "input": '{"message": "hello"}',
        "description": preset.description,
    }
    data.update(changes)
    return client.post(reverse("preset_edit", args=[preset.pk]), data)


def versions(preset):
    return list(preset.versions.order_by("number").values_list("number", "input", "created_by"))


# --- Every edit is a version ----------------------------------------------------------------


def test_a_new_preset_is_v1_by_its_creator(client_for, olivia, org_a):
    client_for(olivia).post(
        reverse("preset_create"),
        {"organisation": org_a.pk, "name": "Nightly", "workflow_id": "5", "input": '{"a": 1}'},
    )
    preset = WorkflowPreset.objects.get()
    assert preset.version == 1
    version = preset.versions.get()
    assert (version.number, version.name, version.workflow_id, version.input) == (
        1,
        "Nightly",
        5,
        {"a": 1},
    )
    assert version.created_by == olivia
    assert AuditEntry.objects.get(action=AuditAction.PRESET_CREATED).changes["version"] == 1


def test_each_content_edit_makes_the_next_version_by_its_editor(
    client_for, olivia, alice, preset_a
):
    edit(client_for(olivia), preset_a, input='{"message": "bonjour"}')
    edit(client_for(alice), preset_a, input='{"message": "hola"}', description="Spanish")

    preset_a.refresh_from_db()
    assert preset_a.version == 3
    assert versions(preset_a) == [
        (1, {"message": "hello"}, olivia.pk),
        (2, {"message": "bonjour"}, olivia.pk),
        (3, {"message": "hola"}, alice.pk),
    ]
    assert preset_a.versions.get(number=3).description == "Spanish"
    entries = AuditEntry.objects.filter(action=AuditAction.PRESET_CHANGED).order_by("pk")
    assert [entry.changes["version"] for entry in entries] == [[1, 2], [2, 3]]


def test_saving_without_a_content_change_makes_no_version(client_for, olivia, preset_a):
    edit(client_for(olivia), preset_a)  # nothing changed
    edit(client_for(olivia), preset_a, duplicate_window_minutes="10")  # a safeguard only
    preset_a.refresh_from_db()
    assert preset_a.version == 1
    assert preset_a.duplicate_window_minutes == 10
    assert preset_a.versions.count() == 1
    entry = AuditEntry.objects.get(action=AuditAction.PRESET_CHANGED)
    assert entry.changes == {"duplicate_window_minutes": [2, 10]}


def test_key_order_of_the_input_is_not_a_change(olivia, preset_a):
    preset_a.input = {"message": "hello"}
    preset_a.changed_by = olivia
    preset_a.save()
    assert preset_a.version == 1


def test_archiving_is_not_a_version(client_for, olivia, preset_a):
    client_for(olivia).post(reverse("preset_archive", args=[preset_a.pk]))
    preset_a.refresh_from_db()
    assert (preset_a.archived, preset_a.version) == (True, 1)


def test_versions_are_append_only(preset_a):
    version = preset_a.versions.get()
    version.input = {"tampered": True}
    with pytest.raises(AppendOnlyError):
        version.save()
    with pytest.raises(AppendOnlyError):
        PresetVersion.objects.filter(pk=version.pk).update(input={})


def test_saving_over_a_newer_version_is_refused(client_for, olivia, alice, preset_a):
    stale = client_for(olivia).get(reverse("preset_edit", args=[preset_a.pk]))
    assert stale.context["form"].initial["base_version"] == 1
    edit(client_for(alice), preset_a, input='{"message": "alice was here"}', base_version="1")

    response = edit(client_for(olivia), preset_a, input='{"message": "olivia"}', base_version="1")

    assert response.status_code == 200
    assert "someone saved v2 of this preset" in response.content.decode()
    preset_a.refresh_from_db()
    assert (preset_a.version, preset_a.input) == (2, {"message": "alice was here"})


def test_admin_edits_are_versions_too(admin_client, org_a, make_user):
    preset = WorkflowPreset.objects.create(organisation=org_a, name="Old", workflow_id=4)
    url = reverse("admin:runs_workflowpreset_change", args=[preset.pk])
    response = admin_client.post(
        url,
        {
            "organisation": org_a.pk,
            "name": "Renamed",
            "workflow_id": "4",
            "input": "{}",
            "description": "",
            "duplicate_window_minutes": "2",
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
            "versions-0-id": str(preset.versions.get().pk),
            "versions-0-preset": str(preset.pk),
        },
    )
    assert response.status_code == 302, response.context["errors"]
    latest = preset.versions.get(number=2)
    assert latest.name == "Renamed"
    assert latest.created_by.is_superuser


def test_the_data_migration_gives_existing_presets_their_v1(org_a, alice):
    old = WorkflowPreset.objects.bulk_create(  # bulk_create bypasses save(): no version
        [WorkflowPreset(organisation=org_a, name="Legacy", workflow_id=7, created_by=alice)]
    )[0]
    current = WorkflowPreset.objects.create(organisation=org_a, name="Current", workflow_id=8)
    migration = importlib.import_module("runs.migrations.0007_preset_versions_initial")

    migration.create_first_versions(apps, schema_editor=None)

    version = PresetVersion.objects.get(preset_id=old.pk)
    assert (version.number, version.name, version.workflow_id, version.created_by) == (
        1,
        "Legacy",
        7,
        alice,
    )
    assert current.versions.count() == 1  # untouched, not doubled


# --- Runs record their version and overrides ---------------------------------------------------


def test_one_click_run_records_the_version_and_no_overrides(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client_for(olivia).post(reverse("preset_run", args=[preset_a.pk]), {"submission_key": KEY})
    run = Run.objects.get()
    assert run.preset_version == preset_a.versions.get(number=1)
    assert run.overrides == []
    entry = AuditEntry.objects.get(action=AuditAction.RUN_TRIGGERED)
    assert entry.changes["preset_version"] == 1
    assert "overrides" not in entry.changes


def test_a_run_with_different_input_records_the_keys_it_overrode(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client = client_for(olivia)
    edit(client, preset_a, input='{"message": "hello", "options": {"retries": 3, "dry": true}}')
    client.post(
        f"{reverse('run_create')}?preset={preset_a.pk}",
        {
            "organisation": champ_org.pk,
            "workflow_id": str(WORKFLOW_ECHO),
            "input": '{"message": "hi", "options": {"retries": 5, "dry": true}, "extra": 1}',
        },
    )
    run = Run.objects.get()
    assert run.preset_version.number == 2
    assert run.overrides == ["extra", "message", "options.retries"]
    assert AuditEntry.objects.get(action=AuditAction.RUN_TRIGGERED).changes["overrides"] == [
        "extra",
        "message",
        "options.retries",
    ]

    page = client.get(run.get_absolute_url()).content.decode()
    assert "Changed from preset v2:" in page
    for key in ("extra", "message", "options.retries"):
        assert f"<code>{key}</code>" in page
    compare = f"{reverse('run_compare')}?a=preset-{preset_a.pk}-v2&amp;b=run-{run.pk}"
    assert compare in page


def test_run_page_says_when_the_preset_moved_on(client_for, olivia, org_a, make_run, preset_a):
    run = make_run(
        org_a,
        preset=preset_a,
        preset_version=preset_a.current_version(),
        input=preset_a.input,
        overrides=[],
    )
    edit(client_for(olivia), preset_a, input='{"message": "new"}')
    page = client_for(olivia).get(run.get_absolute_url()).content.decode()
    assert "Started with the input of preset v1, unchanged." in page
    assert "the preset is now at v2" in page


# --- The preset page shows its history --------------------------------------------------------


def test_preset_page_shows_the_history_with_diffs(client_for, olivia, alice, preset_a):
    edit(client_for(olivia), preset_a, input='{"message": "bonjour", "lang": "fr"}')
    edit(client_for(alice), preset_a, input='{"message": "bonjour", "lang": "fr"}', name="Hi")

    response = client_for(olivia).get(preset_a.get_absolute_url())
    entries = response.context["versions"]
    assert [entry.version.number for entry in entries] == [3, 2, 1]
    assert entries[0].field_changes == [("Name", "Echo hello", "Hi")]
    assert entries[0].input_changes == []
    assert [(c.kind, c.path_text) for c in entries[1].input_changes] == [
        ("added", "lang"),
        ("changed", "message"),
    ]
    assert entries[2].is_first
    text = response.content.decode()
    assert "v3</strong>" in text and "by alice" in text and "by olivia" in text
    assert "compare with v1" in text


def test_the_versions_page_pages_through_every_version(client_for, olivia, preset_a, monkeypatch):
    from runs.views import presets as preset_views

    monkeypatch.setattr(preset_views, "VERSIONS_PER_PAGE", 2)
    for word in ("a", "b", "c", "d"):
        edit(client_for(olivia), preset_a, input=f'{{"message": "{word}"}}')
    client = client_for(olivia)
    first = client.get(reverse("preset_versions", args=[preset_a.pk]))
    assert [e.version.number for e in first.context["versions"]] == [5, 4]
    assert first.context["older"] == 4
    older = client.get(reverse("preset_versions", args=[preset_a.pk]), {"before": 4})
    assert [e.version.number for e in older.context["versions"]] == [3, 2]
    last = client.get(reverse("preset_versions", args=[preset_a.pk]), {"before": 2})
    assert [e.version.number for e in last.context["versions"]] == [1]
    assert last.context["older"] is None


def test_another_organisation_cannot_read_the_history(client_for, bob, preset_a):
    assert client_for(bob).get(reverse("preset_versions", args=[preset_a.pk])).status_code == 404


# --- Save as preset ------------------------------------------------------------------------------


def test_save_a_runs_input_as_a_new_preset(client_for, olivia, org_a, make_run):
    run = make_run(org_a, input={"customer": "ACME"}, triggered_by=olivia)
    client = client_for(olivia)
    form = client.get(reverse("run_save_preset", args=[run.pk])).context["form"]
    assert form.initial["mode"] == "new"  # no preset to version

    response = client.post(
        reverse("run_save_preset", args=[run.pk]),
        {"mode": "new", "name": "ACME nightly", "input": '{"customer": "ACME"}'},
    )

    preset = WorkflowPreset.objects.get(name="ACME nightly")
    assert response["Location"] == preset.get_absolute_url()
    assert (preset.organisation, preset.workflow_id, preset.input) == (
        org_a,
        run.workflow_id,
        {"customer": "ACME"},
    )
    assert preset.created_by == olivia and preset.version == 1
    assert AuditEntry.objects.get(action=AuditAction.PRESET_CREATED).changes["from_run"] == run.pk


def test_save_a_runs_input_as_a_new_version_of_its_preset(
    client_for, olivia, org_a, make_run, preset_a
):
    run = make_run(org_a, preset=preset_a, input={"message": "from the run"})
    client = client_for(olivia)
    assert client.get(reverse("run_save_preset", args=[run.pk])).context["form"].initial[
        "mode"
    ] == ("version")

    client.post(
        reverse("run_save_preset", args=[run.pk]),
        {"mode": "version", "input": '{"message": "from the run"}'},
    )

    preset_a.refresh_from_db()
    assert (preset_a.version, preset_a.input, preset_a.name) == (
        2,
        {"message": "from the run"},
        "Echo hello",
    )
    assert preset_a.versions.get(number=2).created_by == olivia
    entry = AuditEntry.objects.get(action=AuditAction.PRESET_CHANGED)
    assert entry.changes["version"] == [1, 2] and entry.changes["from_run"] == run.pk


def test_saving_an_unchanged_input_as_a_version_makes_none(olivia, org_a, make_run, preset_a):
    run = make_run(org_a, preset=preset_a, input=dict(preset_a.input))
    preset_actions.preset_new_version_from_run(
        preset=preset_a, run=run, input=run.input, user=olivia
    )
    assert preset_a.versions.count() == 1
    assert not AuditEntry.objects.filter(action=AuditAction.PRESET_CHANGED).exists()


def test_save_as_preset_refuses_a_taken_name(client_for, olivia, org_a, make_run, preset_a):
    run = make_run(org_a)
    response = client_for(olivia).post(
        reverse("run_save_preset", args=[run.pk]),
        {"mode": "new", "name": preset_a.name, "input": "{}"},
    )
    assert "already has a preset called" in response.context["form"].errors["name"][0]
    assert WorkflowPreset.objects.count() == 1


def test_save_as_preset_needs_an_operator_of_the_runs_organisation(
    client_for, victor, bob, org_a, make_run
):
    run = make_run(org_a)
    url = reverse("run_save_preset", args=[run.pk])
    data = {"mode": "new", "name": "Mine", "input": "{}"}
    assert client_for(victor).get(url).status_code == 403
    assert client_for(victor).post(url, data).status_code == 403
    assert client_for(bob).get(url).status_code == 404
    assert client_for(bob).post(url, data).status_code == 404
    assert not WorkflowPreset.objects.exists()
    viewer_page = client_for(victor).get(run.get_absolute_url()).content.decode()
    assert url not in viewer_page
