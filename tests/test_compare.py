"""Input diffs: the compare page (two runs, a run and a preset version), run-again highlights."""

import html

from django.urls import reverse

from runs.models import Run
from runs.simulator import WORKFLOW_ECHO
from tests.run_fixtures import *  # noqa: F403

COMPARE = "/runs/compare/"


def rows(response):
    return [
        (c.kind, c.path_text, c.old_text, c.new_text) for c in response.context["input_changes"]
    ]


def test_two_runs_side_by_side(client_for, victor, org_a, make_run):
    left = make_run(org_a, input={"customer": "ACME", "options": {"retries": 3, "tags": ["a"]}})
    right = make_run(
        org_a,
        status="failed",
        input={"customer": "ACME", "options": {"retries": 5, "tags": ["a", "b"]}, "dry": True},
        output={"error": "boom"},
    )
    assert reverse("run_compare") == COMPARE

    response = client_for(victor).get(COMPARE, {"run": [left.pk, right.pk]})

    assert response.status_code == 200
    assert rows(response) == [
        ("added", "dry", "", "true"),
        ("changed", "options.retries", "3", "5"),
        ("added", "options.tags[1]", "", '"b"'),
    ]
    assert [(c.kind, c.path_text) for c in response.context["output_changes"]] == [
        ("changed", "(root)")
    ]
    text = html.unescape(response.content.decode())
    assert "Input: 1 changed, 2 added" in text
    assert f"run #{left.pk}" in text and f"run #{right.pk}" in text
    facts = {name: (a, b, differs) for name, a, b, differs in response.context["facts"]}
    assert facts["Status"] == ("Pending", "Failed", True)
    assert facts["Workflow"][2] is False
    assert f"a=run-{right.pk}&b=run-{left.pk}" in response.context["swap_url"]


def test_the_history_offers_compare_selected(client_for, victor, org_a, make_run):
    run = make_run(org_a)
    text = client_for(victor).get(reverse("run_list")).content.decode()
    assert f'action="{COMPARE}"' in text and 'id="compare-form"' in text
    assert f'name="run" value="{run.pk}" form="compare-form"' in text


def test_a_run_against_a_preset_version_and_two_versions(
    client_for, olivia, org_a, make_run, preset_a
):
    preset_a.input = {"message": "bonjour", "lang": "fr"}
    preset_a.changed_by = olivia
    preset_a.save()
    run = make_run(org_a, preset=preset_a, input={"message": "hello"})
    client = client_for(olivia)

    against_v1 = client.get(COMPARE, {"a": f"preset-{preset_a.pk}-v1", "b": f"run-{run.pk}"})
    assert rows(against_v1) == []
    assert "The two inputs are identical." in against_v1.content.decode()
    assert against_v1.context["output_changes"] is None

    current = client.get(COMPARE, {"a": f"preset-{preset_a.pk}", "b": str(run.pk)})
    assert current.context["left"].label == "preset “Echo hello” v2"
    assert rows(current) == [
        ("removed", "lang", '"fr"', ""),
        ("changed", "message", '"bonjour"', '"hello"'),
    ]
    versions = client.get(
        COMPARE, {"a": f"preset-{preset_a.pk}-v1", "b": f"preset-{preset_a.pk}-v2"}
    )
    assert [row[:2] for row in rows(versions)] == [("added", "lang"), ("changed", "message")]


def test_choosing_anything_but_two_says_so(client_for, victor, org_a, make_run):
    run = make_run(org_a)
    client = client_for(victor)
    one = client.get(COMPARE, {"run": [run.pk]})
    assert one.status_code == 400
    assert "Choose exactly two runs to compare" in html.unescape(one.content.decode())
    three = client.get(COMPARE, {"run": [run.pk, run.pk, run.pk]})
    assert three.status_code == 400
    bad = client.get(COMPARE, {"a": "run-x", "b": str(run.pk)})
    assert bad.status_code == 400
    assert "is not a run number" in html.unescape(bad.content.decode())
    missing_version = client.get(COMPARE, {"a": f"run-{run.pk}", "b": "preset-999999-v1"})
    assert missing_version.status_code == 404


def test_another_organisations_run_or_preset_is_a_404_on_either_side(
    client_for, victor, org_a, org_b, make_run, preset_b
):
    mine = make_run(org_a, input={"secret": "mine"})
    theirs = make_run(org_b, input={"secret": "theirs"})
    client = client_for(victor)
    for params in (
        {"run": [mine.pk, theirs.pk]},
        {"run": [theirs.pk, mine.pk]},
        {"a": f"run-{mine.pk}", "b": f"preset-{preset_b.pk}"},
        {"a": f"preset-{preset_b.pk}-v1", "b": f"run-{mine.pk}"},
    ):
        response = client.get(COMPARE, params)
        assert response.status_code == 404, params
        assert b"theirs" not in response.content


def test_keys_and_values_are_escaped(client_for, victor, org_a, make_run):
    left = make_run(org_a, input={})
    right = make_run(org_a, input={"<script>alert(1)</script>": "<img src=x onerror=alert(2)>"})
    text = client_for(victor).get(COMPARE, {"run": [left.pk, right.pk]}).content.decode()
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text


def test_the_run_page_links_to_comparisons(client_for, olivia, org_a, make_run):
    original = make_run(org_a)
    rerun = make_run(org_a, rerun_of=original)
    text = client_for(olivia).get(rerun.get_absolute_url()).content.decode()
    assert f"{COMPARE}?a=run-{original.pk}&amp;b=run-{rerun.pk}" in text
    assert f'name="a" value="run-{rerun.pk}"' in text  # "compare with run #…"


# --- Run again highlights what differs from the original -----------------------------------


def again(client, run, **data):
    body = {
        "organisation": run.organisation_id,
        "workflow_id": str(run.workflow_id),
        "input": '{"customer": "ACME", "retries": 3}',
        "preview": "1",
    }
    body.update(data)
    return client.post(reverse("run_again", args=[run.pk]), body)


def test_run_again_starts_out_identical(client_for, olivia, org_a, make_run):
    run = make_run(org_a, input={"customer": "ACME"})
    response = client_for(olivia).get(reverse("run_again", args=[run.pk]))
    assert response.context["changes"] == []
    assert f"Same input as run #{run.pk}." in response.content.decode()


def test_show_changes_highlights_keys_and_fields_and_starts_nothing(
    client_for, olivia, org_a, make_run
):
    run = make_run(org_a, input={"customer": "ACME", "retries": 3})
    response = again(
        client_for(olivia),
        run,
        input='{"customer": "Initech", "retries": 3, "dry": true}',
        workflow_id="55",
    )

    assert not Run.objects.exclude(pk=run.pk).exists()
    assert [(c.kind, c.path_text) for c in response.context["changes"]] == [
        ("changed", "customer"),
        ("added", "dry"),
    ]
    text = html.unescape(response.content.decode())
    assert f"Differs from run #{run.pk}:" in text
    assert "<code>customer</code>, <code>dry</code>" in text
    assert f"Changed: run #{run.pk} has {WORKFLOW_ECHO}." in text
    assert 'class="field changed"' in text
    assert 'name="preview"' in text


def test_a_validation_error_keeps_the_highlights_of_the_other_fields(
    client_for, olivia, org_a, make_run
):
    run = make_run(org_a, input={"customer": "ACME"})
    response = again(client_for(olivia), run, input="{broken", preview="", workflow_id="56")
    assert response.context["changes"] is None  # the input cannot be compared yet
    assert f"Changed: run #{run.pk} has {WORKFLOW_ECHO}." in html.unescape(
        response.content.decode()
    )
