"""Presets: input and workflow id validation, create/edit/archive, roles and scoping."""

import json

import pytest
from django import forms
from django.urls import reverse

from runs.forms import PresetForm, RunForm, parse_json_object, parse_workflow_id
from runs.models import AuditAction, AuditEntry, Membership, WorkflowPreset
from runs.simulator import WORKFLOW_ECHO
from tests.run_fixtures import *  # noqa: F403

# --- Validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("42", 42),
        (" 7 ", 7),
        ("https://dash.champ.ai/app/workflows/67890", 67890),
        ("https://dash.champ.ai/app/workflows/67890/", 67890),
        ("https://dash.champ.ai/app/workflows/12?tab=runs", 12),
    ],
)
def test_workflow_id_accepts_a_number_or_a_dashboard_url(typed, expected):
    assert parse_workflow_id(typed) == expected


@pytest.mark.parametrize(
    "typed, message",
    [
        ("0", "positive whole number"),
        ("-5", "positive whole number"),
        ("abc", "Enter the workflow ID"),
        ("12.5", "Enter the workflow ID"),
        ("https://dash.champ.ai/app/settings", "does not end in a workflow ID"),
        ("https://dash.champ.ai/app/workflows/0", "positive whole number"),
        ("ftp://dash.champ.ai/app/workflows/5", "does not end in a workflow ID"),
        ("99999999999999999999", "too large"),
    ],
)
def test_workflow_id_refuses_what_is_not_a_positive_id(typed, message):
    with pytest.raises(forms.ValidationError) as caught:
        parse_workflow_id(typed)
    assert message in caught.value.messages[0]


def test_empty_input_is_an_empty_object():
    assert parse_json_object("  ") == {}


def test_invalid_json_says_where():
    with pytest.raises(forms.ValidationError) as caught:
        parse_json_object('{\n  "a": 1,\n  "b": oops\n}')
    assert "not valid JSON" in caught.value.messages[0]
    assert "line 3, column 8" in caught.value.messages[0]


@pytest.mark.parametrize(
    "typed, kind",
    [
        ("[1, 2]", "an array"),
        ('"text"', "a string"),
        ("3.5", "a number"),
        ("12", "a number"),
        ("true", "a boolean"),
        ("null", "null"),
    ],
)
def test_input_must_be_an_object(typed, kind):
    with pytest.raises(forms.ValidationError) as caught:
        parse_json_object(typed)
    assert f"must be a JSON object, got {kind}" in caught.value.messages[0]


def test_input_over_64_kb_is_refused():
    big = json.dumps({"blob": "x" * (64 * 1024)})
    with pytest.raises(forms.ValidationError) as caught:
        parse_json_object(big)
    assert "the limit is 64 KB" in caught.value.messages[0]
    assert parse_json_object(json.dumps({"blob": "x" * 60_000}))  # under the cap is fine


@pytest.mark.parametrize("typed", ['{"a": NaN}', '{"a": Infinity}'])
def test_non_standard_json_numbers_are_refused(typed):
    with pytest.raises(forms.ValidationError):
        parse_json_object(typed)


def test_absurd_nesting_is_refused():
    with pytest.raises(forms.ValidationError) as caught:
        parse_json_object('{"a": ' + "[" * 100 + "]" * 100 + "}")
    assert "nested too deeply" in caught.value.messages[0]


def test_preset_form_and_run_form_show_field_errors(org_a, olivia):
    data = {"organisation": org_a.pk, "name": "X", "workflow_id": "0", "input": "[1]"}
    form = PresetForm(data, user=olivia)
    assert not form.is_valid()
    assert set(form.errors) == {"workflow_id", "input"}
    run_form = RunForm(data, user=olivia)
    assert not run_form.is_valid()
    assert "must be a JSON object, got an array" in run_form.errors["input"][0]


# --- Create, edit, archive --------------------------------------------------------------


def test_operator_creates_a_preset_from_a_pasted_dashboard_url(client_for, olivia, org_a):
    response = client_for(olivia).post(
        reverse("preset_create"),
        {
            "organisation": org_a.pk,
            "name": "Nightly report",
            "workflow_id": "https://dash.champ.ai/app/workflows/321",
            "input": '{"day": "today"}',
            "description": "Runs the report.",
        },
    )
    preset = WorkflowPreset.objects.get()
    assert response["Location"] == preset.get_absolute_url() == f"/presets/{preset.pk}/"
    assert (preset.organisation, preset.workflow_id, preset.input) == (
        org_a,
        321,
        {"day": "today"},
    )
    assert preset.created_by == olivia
    entry = AuditEntry.objects.get(action=AuditAction.PRESET_CREATED)
    assert (entry.actor, entry.organisation, entry.ip) == (olivia, org_a, "127.0.0.1")


def test_invalid_input_keeps_what_was_typed_and_saves_nothing(client_for, olivia, org_a):
    typed = '{"a": 1,,}'
    response = client_for(olivia).post(
        reverse("preset_create"),
        {"organisation": org_a.pk, "name": "Broken", "workflow_id": "5", "input": typed},
    )
    assert response.status_code == 200
    assert "line 1, column 9" in response.context["form"].errors["input"][0]
    assert "{&quot;a&quot;: 1,,}" in response.content.decode()
    assert not WorkflowPreset.objects.exists()


def test_preset_name_is_unique_within_an_organisation(client_for, olivia, org_a, preset_a):
    response = client_for(olivia).post(
        reverse("preset_create"),
        {"organisation": org_a.pk, "name": preset_a.name, "workflow_id": "5", "input": ""},
    )
    assert "already has a preset called" in response.context["form"].errors["name"][0]
    assert WorkflowPreset.objects.count() == 1


def test_same_name_is_fine_in_another_organisation(client_for, bob, org_b, preset_a):
    client_for(bob).post(
        reverse("preset_create"),
        {"organisation": org_b.pk, "name": preset_a.name, "workflow_id": "5", "input": ""},
    )
    assert WorkflowPreset.objects.filter(organisation=org_b, name=preset_a.name).exists()


def test_editing_audits_only_the_changed_fields(client_for, olivia, preset_a):
    client_for(olivia).post(
        reverse("preset_edit", args=[preset_a.pk]),
        {
            "name": preset_a.name,
            "workflow_id": str(preset_a.workflow_id),
            "input": '{"message": "bonjour"}',
            "description": "",
        },
    )
    preset_a.refresh_from_db()
    assert preset_a.input == {"message": "bonjour"}
    entry = AuditEntry.objects.get(action=AuditAction.PRESET_CHANGED)
    assert entry.changes == {
        "input": [{"message": "hello"}, {"message": "bonjour"}],
        "version": [1, 2],
    }


def test_renaming_onto_another_preset_is_refused(client_for, olivia, org_a, preset_a):
    other = WorkflowPreset.objects.create(organisation=org_a, name="Other", workflow_id=1)
    response = client_for(olivia).post(
        reverse("preset_edit", args=[other.pk]),
        {"name": preset_a.name, "workflow_id": "1", "input": "", "description": ""},
    )
    assert response.context["form"].errors["name"]
    other.refresh_from_db()
    assert other.name == "Other"


def test_archive_and_unarchive(client_for, olivia, preset_a):
    client = client_for(olivia)
    client.post(reverse("preset_archive", args=[preset_a.pk]))
    client.post(reverse("preset_archive", args=[preset_a.pk]))  # twice: audited once
    preset_a.refresh_from_db()
    assert preset_a.archived
    assert AuditEntry.objects.filter(action=AuditAction.PRESET_ARCHIVED).count() == 1
    link = f'href="{preset_a.get_absolute_url()}"'
    assert link not in client.get(reverse("preset_list")).content.decode()
    assert link in client.get(reverse("preset_list") + "?archived=1").content.decode()

    client.post(reverse("preset_unarchive", args=[preset_a.pk]))
    preset_a.refresh_from_db()
    assert not preset_a.archived
    assert AuditEntry.objects.get(action=AuditAction.PRESET_CHANGED).changes == {
        "archived": [True, False]
    }


def test_archive_needs_a_post(client_for, olivia, preset_a):
    assert client_for(olivia).get(reverse("preset_archive", args=[preset_a.pk])).status_code == 405


# --- Pages, roles, scoping ----------------------------------------------------------------


def test_list_and_detail_show_run_buttons_with_a_fresh_nonce_each(client_for, olivia, preset_a):
    client = client_for(olivia)
    listing = client.get(reverse("preset_list")).content.decode()
    assert reverse("preset_run", args=[preset_a.pk]) in listing
    detail = client.get(preset_a.get_absolute_url())
    text = detail.content.decode()
    assert "&quot;message&quot;: &quot;hello&quot;" in text
    assert f"{reverse('run_create')}?preset={preset_a.pk}" in text  # run with different input
    again = client.get(preset_a.get_absolute_url()).content.decode()
    assert _nonce(text) != _nonce(again)
    assert "no-store" in detail["Cache-Control"]


def _nonce(html: str) -> str:
    marker = 'name="submission_key" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def test_viewer_sees_presets_without_buttons_and_gets_403_on_writes(
    client_for, victor, org_a, preset_a
):
    client = client_for(victor)
    listing = client.get(reverse("preset_list")).content.decode()
    detail = client.get(preset_a.get_absolute_url()).content.decode()
    for text in (listing, detail):
        assert preset_a.name in text
        assert reverse("preset_run", args=[preset_a.pk]) not in text
        assert reverse("preset_edit", args=[preset_a.pk]) not in text
    for name in ("preset_run", "preset_archive", "preset_unarchive", "preset_edit"):
        assert client.post(reverse(name, args=[preset_a.pk])).status_code == 403
    response = client.post(
        reverse("preset_create"),
        {"organisation": org_a.pk, "name": "Mine", "workflow_id": "1", "input": ""},
    )
    assert response.context["form"].errors["organisation"]
    assert WorkflowPreset.objects.count() == 1
    assert not WorkflowPreset.objects.get().archived


def test_other_organisation_cannot_see_or_touch_a_preset(client_for, bob, preset_a):
    client = client_for(bob)
    before = WorkflowPreset.objects.values().get()
    assert client.get(preset_a.get_absolute_url()).status_code == 404
    assert client.get(reverse("preset_edit", args=[preset_a.pk])).status_code == 404
    for name in ("preset_run", "preset_archive", "preset_unarchive", "preset_edit"):
        assert client.post(reverse(name, args=[preset_a.pk]), {"name": "x"}).status_code == 404
    assert preset_a.name not in client.get(reverse("preset_list")).content.decode()
    assert WorkflowPreset.objects.values().get() == before
    assert not AuditEntry.objects.filter(action__startswith="preset").exists()


def test_preset_list_filters_by_organisation(
    client_for, make_user, org_a, org_b, preset_a, preset_b
):
    both = make_user("both")
    Membership.objects.create(user=both, organisation=org_a, role="viewer")
    Membership.objects.create(user=both, organisation=org_b, role="operator")
    client = client_for(both)
    everything = client.get(reverse("preset_list")).content.decode()
    assert preset_a.name in everything and preset_b.name in everything
    only_b = client.get(reverse("preset_list") + "?organisation=org-b").content.decode()
    assert preset_a.name not in only_b and preset_b.name in only_b
    # Run buttons follow the role in each organisation.
    assert reverse("preset_run", args=[preset_b.pk]) in everything
    assert reverse("preset_run", args=[preset_a.pk]) not in everything


def test_create_offers_only_organisations_where_i_can_run(client_for, olivia, org_a, org_b):
    form = client_for(olivia).get(reverse("preset_create")).context["form"]
    assert list(form.fields["organisation"].queryset) == [org_a]
    assert form.initial["organisation"] == org_a.pk


def test_workflow_id_for_model_field_is_positive(olivia, org_a):
    form = PresetForm(
        {"organisation": org_a.pk, "name": "n", "workflow_id": str(WORKFLOW_ECHO), "input": "{}"},
        user=olivia,
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["workflow_id"] == WORKFLOW_ECHO
