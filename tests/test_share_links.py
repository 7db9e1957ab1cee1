"""Shareable pre-filled run links: a GET only fills the form; posting it is the confirm step."""

import html
import json
from urllib.parse import urlsplit

import pytest
from django.http import QueryDict
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from runs.models import Run
from runs.sharing import prefill_input, share_query
from runs.simulator import WORKFLOW_ECHO, WORKFLOW_SLOW
from tests.run_fixtures import *  # noqa: F403


def open_link(client, query: str):
    return client.get(f"{reverse('run_create')}?{query}")


def form_input(response) -> dict:
    value = response.context["form"].initial["input"]
    return value if isinstance(value, dict) else json.loads(value)


# --- Opening a link ------------------------------------------------------------------------------


def test_a_link_fills_the_form_and_starts_nothing(
    client_for, olivia, champ_org, champ_server, preset_a
):
    response = open_link(client_for(olivia), f"preset={preset_a.pk}&input.customer=ACME")

    assert response.status_code == 200
    assert form_input(response) == {"message": "hello", "customer": "ACME"}
    text = html.unescape(response.content.decode())
    assert "Opened from a link." in text and "Nothing has been started" in text
    assert "Differs from the preset “Echo hello” v1:" in text
    assert "<code>customer</code>" in text
    assert not Run.objects.exists()
    assert champ_server.sim.stats()["requests"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "preset={pk}",
        "preset={pk}&input.message=bye",
        "preset={pk}&input={{}}",
        "preset={pk}&submission_key=" + "k" * 22,
        "preset={pk}&confirm_duplicate=1&submission_key=" + "k" * 22,
        "organisation=org-a&workflow=101&input={{%22a%22:1}}",
    ],
)
def test_no_link_ever_starts_a_run(client_for, olivia, champ_org, champ_server, preset_a, query):
    response = open_link(client_for(olivia), query.format(pk=preset_a.pk))
    assert response.status_code == 200
    assert not Run.objects.exists()
    assert champ_server.sim.stats()["requests"] == 0


def test_nested_keys_and_json_values(client_for, olivia, champ_org, preset_a):
    query = (
        f"preset={preset_a.pk}&input.options.retries=3&input.options.dry_run=true"
        "&input.zip=%2201234%22&input.note=plain%20text&input.tags=[1,2]&input.gone=null"
    )
    assert form_input(open_link(client_for(olivia), query)) == {
        "message": "hello",
        "options": {"retries": 3, "dry_run": True},
        "zip": "01234",
        "note": "plain text",
        "tags": [1, 2],
        "gone": None,
    }


def test_a_whole_input_replaces_the_presets_then_keys_apply(
    client_for, olivia, champ_org, preset_a
):
    query = f'preset={preset_a.pk}&input={{"a": {{"b": 1}}}}&input.a.c=2'
    assert form_input(open_link(client_for(olivia), query)) == {"a": {"b": 1, "c": 2}}


def test_a_broken_link_says_what_is_wrong_and_keeps_the_preset_input(
    client_for, olivia, champ_org, preset_a
):
    response = open_link(client_for(olivia), f"preset={preset_a.pk}&input=[1,2")
    text = html.unescape(response.content.decode())
    assert "The link's input is not valid JSON" in text
    assert form_input(response) == {"message": "hello"}
    array = open_link(client_for(olivia), f"preset={preset_a.pk}&input=[1]")
    assert "must be a JSON object, got an array" in html.unescape(array.content.decode())


def test_a_link_without_a_preset(client_for, olivia, champ_org, org_b):
    response = open_link(
        client_for(olivia),
        f'organisation={champ_org.slug}&workflow={WORKFLOW_SLOW}&input={{"a":1}}',
    )
    form = response.context["form"]
    assert form.initial["organisation"] == champ_org.pk
    assert str(form.initial["workflow_id"]) == str(WORKFLOW_SLOW)
    assert form.initial["input"] == {"a": 1}
    elsewhere = open_link(client_for(olivia), f"organisation={org_b.slug}&workflow=5")
    assert "You cannot start runs in an organisation called “org-b”" in html.unescape(
        elsewhere.content.decode()
    )


def test_posting_the_filled_form_is_the_confirm_step(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client = client_for(olivia)
    url = f"{reverse('run_create')}?preset={preset_a.pk}&input.customer=ACME"
    form = client.get(url).context["form"]
    data = {
        "organisation": champ_org.pk,
        "workflow_id": str(WORKFLOW_ECHO),
        "input": json.dumps(form.initial["input"]),
        "submission_key": form.initial["submission_key"],
    }
    response = client.post(url, data)
    run = Run.objects.get()
    assert response["Location"] == run.get_absolute_url()
    assert run.input == {"message": "hello", "customer": "ACME"}
    assert run.preset == preset_a and run.overrides == ["customer"]


def test_links_respect_roles_and_organisations(client_for, victor, bob, preset_a):
    query = f"preset={preset_a.pk}&input.customer=ACME"
    assert open_link(client_for(victor), query).status_code == 403
    assert open_link(client_for(bob), query).status_code == 404
    assert open_link(client_for(bob), "preset=nope").status_code == 404


# --- Making a link -------------------------------------------------------------------------------


def test_the_preset_page_offers_a_link_to_copy(client_for, olivia, victor, preset_a):
    response = client_for(olivia).get(preset_a.get_absolute_url())
    assert response.context["share_url"] == f"http://testserver/runs/new/?preset={preset_a.pk}"
    text = html.unescape(response.content.decode())
    assert f'value="http://testserver/runs/new/?preset={preset_a.pk}" readonly' in text
    assert f"?preset={preset_a.pk}&input.message=…" in text


def test_make_a_link_from_the_form_starts_nothing_and_round_trips(
    client_for, olivia, champ_org, champ_server, preset_a
):
    client = client_for(olivia)
    url = f"{reverse('run_create')}?preset={preset_a.pk}"
    wanted = {"message": "hello", "customer": "ACME", "options": {"retries": 3}}
    response = client.post(
        url,
        {
            "organisation": champ_org.pk,
            "workflow_id": str(WORKFLOW_ECHO),
            "input": json.dumps(wanted),
            "share": "1",
        },
    )
    link = response.context["share_url"]
    assert link.startswith("http://testserver/runs/new/?preset=")
    assert "input.customer=ACME" in link  # only the keys that differ from the preset
    assert "input.options=%7B%22retries%22%3A3%7D" in link  # a new key: its whole value
    assert "input.message" not in link
    assert not Run.objects.exists()

    parts = urlsplit(link)
    assert form_input(client.get(f"{parts.path}?{parts.query}")) == wanted


def test_a_link_for_removed_keys_carries_the_whole_input(preset_a):
    query = share_query(preset=preset_a, workflow_id=WORKFLOW_ECHO, input={}, base=preset_a.input)
    assert query == f"preset={preset_a.pk}&input=%7B%7D"


keys = st.text(alphabet="abcdefgh_", min_size=1, max_size=5)
# Text a run input can hold: no NUL, no lone surrogate (parse_json_object refuses them).
storable_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6
)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | storable_text,
    lambda children: st.dictionaries(keys, children, max_size=3) | st.lists(children, max_size=3),
    max_leaves=8,
)
objects = st.dictionaries(keys, values, max_size=4)


@settings(max_examples=200, deadline=None)
@given(objects, objects)
def test_share_query_and_prefill_round_trip(base, wanted):
    class Preset:
        pk = 7
        workflow_id = 101
        input = base

    query = share_query(preset=Preset, workflow_id=101, input=wanted, base=base)
    prefill = prefill_input(QueryDict(query), base=base)
    assert prefill.errors == []
    assert prefill.input == wanted
