"""
RELIABILITY.md 23: bad input never costs data.

* Property-based: any text typed as a run input is accepted exactly when it is
  a JSON object that can be kept (at most 64 KB, at most 64 levels deep, no
  NUL character or unpaired surrogate, which PostgreSQL and UTF-8 refuse),
  and is otherwise refused with a message, never a 500; through the forms,
  nothing is stored unless it was accepted.
* Invalid JSON, a non-object, an oversized input, an unknown workflow, a
  revoked or rejected token: a clear error on the page, and nothing already
  stored changes.
"""

import json

import pytest
from django import forms
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runs.forms import INPUT_MAX_BYTES, INPUT_MAX_DEPTH, parse_json_object
from runs.models import ApiToken, Run, RunStatus, WorkflowPreset
from runs.simulator import WORKFLOW_UNPUBLISHED
from tests.hardening import *  # noqa: F403
from tests.hardening import db_snapshot
from tests.run_fixtures import *  # noqa: F403

# --- What "any JSON text" means here ------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@st.composite
def nested(draw):
    """An object nested around the depth limit."""
    depth = draw(st.integers(INPUT_MAX_DEPTH - 2, INPUT_MAX_DEPTH + 2))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"k": ', "}")]))
    return '{"deep": ' + opener * (depth - 1) + "1" + closer * (depth - 1) + "}"


@st.composite
def around_the_size_cap(draw):
    padding = draw(st.integers(INPUT_MAX_BYTES - 40, INPUT_MAX_BYTES + 40))
    return json.dumps({"pad": "x" * padding})[: padding + 20] + '"}'


ESCAPES = ["\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\\\u0000", "\\n", '\\"']


@st.composite
def with_escapes(draw):
    escapes = draw(st.lists(st.sampled_from(ESCAPES), min_size=1, max_size=3))
    key = draw(st.sampled_from(["k", "".join(escapes)]))
    return json.dumps({key: "<>"}).replace("<>", "".join(escapes))


@st.composite
def mangled(draw):
    """Valid JSON text, then cut, or with a character inserted."""
    text = json.dumps(draw(json_values), indent=draw(st.sampled_from([None, 2])))
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        return text[:at]
    return text[:at] + draw(st.sampled_from([*",:{}[]\"'\\ ", "NaN", "Infinity"])) + text[at:]


json_texts = st.one_of(
    json_values.map(json.dumps),
    st.dictionaries(st.text(), json_values).map(lambda v: json.dumps(v, ensure_ascii=False)),
    mangled(),
    nested(),
    around_the_size_cap(),
    with_escapes(),
    st.text(),
    st.sampled_from(["", "  ", "null", "[]", '"{}"', "{}", '{"a": NaN}', '{"a": -Infinity}']),
)


def same_json(stored, typed) -> bool:
    """Equal as JSON. PostgreSQL's jsonb keeps a number as the decimal its text spells, so
    5.636227180526711e+16 comes back as the integer 56362271805267110 (not that double)."""
    if isinstance(stored, dict) and isinstance(typed, dict):
        return stored.keys() == typed.keys() and all(
            same_json(stored[key], typed[key]) for key in typed
        )
    if isinstance(stored, list) and isinstance(typed, list):
        return len(stored) == len(typed) and all(map(same_json, stored, typed))
    if isinstance(typed, float) and isinstance(stored, int | float):
        return stored == typed or float(stored) == typed
    return stored == typed and type(stored) is type(typed)


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)


def keepable(value) -> bool:
    """No NUL and no unpaired surrogate anywhere (keys included)."""
    return not any(
        "\x00" in text or any(0xD800 <= ord(char) <= 0xDFFF for char in text)
        for text in strings(value)
    )


def expected(text: str):
    """The specification: the parsed object, or None when it must be refused."""
    stripped = text.strip()
    if not stripped:
        return {}
    if len(stripped.encode("utf-8", "surrogatepass")) > INPUT_MAX_BYTES:
        return None
    try:

        def refuse(name):
            raise ValueError(name)

        value = json.loads(stripped, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or depth(value) > INPUT_MAX_DEPTH or not keepable(value):
        return None
    return value


@given(text=json_texts)
@settings(max_examples=300, deadline=None, database=None)
def test_input_json_is_accepted_exactly_when_it_is_a_keepable_object_within_the_limits(text):
    want = expected(text)
    if want is None:
        with pytest.raises(forms.ValidationError) as refused:
            parse_json_object(text)
        assert refused.value.messages and refused.value.messages[0].startswith("The input")
    else:
        assert parse_json_object(text) == want


@pytest.fixture
def typist(org_a, olivia):
    client = Client()
    client.force_login(olivia)
    return client


@given(text=json_texts)
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_input_typed_into_the_forms_is_saved_as_typed_or_refused_never_a_500(
    typist, org_a, text
):
    assume("\x00" not in text)  # a browser never sends a raw NUL (Django refuses it too)
    want = expected(text)
    name = f"preset {WorkflowPreset.objects.count()}"
    before = db_snapshot()
    response = typist.post(
        reverse("preset_create"),
        {"organisation": org_a.pk, "name": name, "workflow_id": "101", "input": text},
    )
    assert response.status_code in (200, 302)
    if want is None:
        assert response.status_code == 200
        assert response.context["form"].errors["input"]
        assert db_snapshot() == before  # nothing saved
    else:
        assert response.status_code == 302, response.context["form"].errors
        assert same_json(WorkflowPreset.objects.get(name=name).input, want)
    # The new-run form says the same, and starts nothing when the input is refused.
    response = typist.post(
        reverse("run_create"),
        {"organisation": org_a.pk, "workflow_id": "101", "input": text},
    )
    assert response.status_code == 200  # org A has no token: nothing is ever sent
    assert bool(response.context["form"].errors.get("input")) == (want is None)
    assert not Run.objects.exists()


# --- Bad input never costs data -------------------------------------------------------------

BAD_INPUTS = [
    ('{"a": ', "not valid JSON"),
    ("[1, 2]", "must be a JSON object, got an array"),
    ('"text"', "must be a JSON object, got a string"),
    ('{"a": NaN}', "not valid JSON"),
    (json.dumps({"pad": "x" * INPUT_MAX_BYTES}), "the limit is 64 KB"),
    ('{"a": "\\u0000"}', "cannot be stored"),
]


@pytest.mark.parametrize("typed, message", BAD_INPUTS)
def test_bad_input_on_a_preset_edit_changes_nothing_and_says_why(
    client_for, world, typed, message
):
    client = client_for(world.olivia)
    before = db_snapshot()
    response = client.post(
        reverse("preset_edit", args=[world.preset_a.pk]),
        {
            "name": "Renamed",
            "workflow_id": "102",
            "input": typed,
            "description": "changed",
            "base_version": getattr(world.preset_a, "version", 1),
        },
    )
    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'")
    assert typed[:20].replace('"', "&quot;") in response.content.decode()  # kept in the form
    assert db_snapshot() == before


@pytest.mark.parametrize("typed, message", BAD_INPUTS)
def test_bad_input_on_the_run_form_starts_nothing_and_says_why(
    client_for, world, champ_server, typed, message
):
    world.org_a.api_base_url = champ_server.base_url
    world.org_a.save(update_fields=["api_base_url"])
    client = client_for(world.olivia)
    before = db_snapshot()
    response = client.post(
        reverse("run_create"),
        {"organisation": world.org_a.pk, "workflow_id": "101", "input": typed},
    )
    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'")
    assert db_snapshot() == before
    assert champ_server.sim.stats()["requests"] == 0


def test_an_unknown_workflow_is_a_rejected_run_and_nothing_else_changes(
    client_for, world, champ_server
):
    world.org_a.api_base_url = champ_server.base_url
    world.org_a.save(update_fields=["api_base_url"])
    champ_server.sim.tokens["api_KNOWNsecretTOKENvalue_9f3a7c"] = "demo"
    client = client_for(world.olivia)
    before = db_snapshot()
    response = client.post(
        reverse("run_create"),
        {"organisation": world.org_a.pk, "workflow_id": WORKFLOW_UNPUBLISHED, "input": "{}"},
        follow=True,
    )
    run = Run.objects.latest("pk")
    assert run.status == RunStatus.REJECTED
    text = response.content.decode()
    assert "Not started: workflow 106 not found or not published at Champ." in text
    after = db_snapshot()
    for label in ("runs.Organisation", "runs.Membership", "runs.WorkflowPreset"):
        assert after[label] == before[label]
    old_runs = [row for row in after["runs.Run"] if row["id"] != run.pk]
    assert old_runs == before["runs.Run"]


@pytest.mark.parametrize("how", ["revoked", "rejected"])
def test_a_revoked_or_rejected_token_sends_nothing_and_says_so(
    client_for, world, champ_server, how
):
    world.org_a.api_base_url = champ_server.base_url
    world.org_a.save(update_fields=["api_base_url"])
    from django.utils import timezone

    field = "revoked_at" if how == "revoked" else "rejected_at"
    ApiToken.objects.filter(organisation=world.org_a).update(**{field: timezone.now()})
    client = client_for(world.olivia)
    before = db_snapshot()
    response = client.post(
        reverse("run_create"),
        {"organisation": world.org_a.pk, "workflow_id": "101", "input": '{"keep": 1}'},
    )
    assert response.status_code == 200
    assert "has no active Champ API token, so nothing was sent" in response.content.decode()
    assert "&quot;keep&quot;" in response.content.decode()  # what was typed is still there
    assert db_snapshot() == before
    assert champ_server.sim.stats()["requests"] == 0
