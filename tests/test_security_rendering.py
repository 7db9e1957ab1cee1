"""
RELIABILITY.md 15: anything Champ returns (output, error text, its run url)
and anything a user typed (input, preset name and description) renders inert.

Property-based: arbitrary nested JSON with hostile strings (``</script>``,
``<img onerror>``, ``javascript:`` URLs, U+2028/U+2029, quotes, NUL and
unpaired surrogates) goes in the way it really arrives — Champ's answer
through the lifecycle door, the user's input through the form's parser — and
the run page, its live fragment, the history (page and htmx partial), the
preset page, the dashboard, the admin and both exports must render it escaped,
with no new element or attribute, and never answer 500.
"""

import csv
import io
import itertools
import json
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs import lifecycle
from runs.forms import parse_json_object
from runs.history import csv_safe
from runs.models import EventSource, Membership, Role, Run, RunStatus, WorkflowPreset
from runs.templatetags.run_extras import pretty_json
from tests.hardening import *  # noqa: F403

HOSTILE = [
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    '"><a href="javascript:alert(1)">x</a>',
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "' onmouseover='alert(1)",
    "\u2028",
    "\u2029",
    "<!--",
    "]]>",
    "{{ request }}",
    "{% debug %}",
    "&lt;b&gt;",
    "\\u003cscript\\u003e",
    "`${alert(1)}`",
]
#: What Champ may send but no database or page can hold as is (see runs.lifecycle.storable).
UNSTORABLE = ["\x00", "\ud800", "\udfff"]

safe_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


def hostile_text(extra=(), alphabet=safe_chars, max_size=4):
    pieces = st.sampled_from(HOSTILE + list(extra)) | st.text(alphabet, max_size=8)
    return st.lists(pieces, max_size=max_size).map("".join)


def json_values(text):
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        # PostgreSQL's jsonb keeps numbers as decimals: beyond 2**53 a float comes
        # back as the integer its repr spells, which is not the same double.
        | st.floats(-(2.0**53), 2.0**53, allow_nan=False)
        | text
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=12,
    )


champ_text = hostile_text(UNSTORABLE)
champ_output = json_values(champ_text)
user_input = st.dictionaries(hostile_text(), json_values(hostile_text()), max_size=5)
names = itertools.count(1)


class Inertness(HTMLParser):
    """Collects what could execute: scripts, event handlers, javascript: URLs, new elements."""

    URL_ATTRIBUTES = {"href", "src", "action", "formaction", "hx-get", "hx-post", "data"}
    NEVER = {"img", "svg", "iframe", "object", "embed", "math", "base", "frame"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag in self.NEVER:
            self.problems.append(f"<{tag}>")
        if tag == "script" and not dict(attrs).get("src", "").startswith("/static/"):
            self.problems.append("an inline <script>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"an event handler {name}=")
            if name in self.URL_ATTRIBUTES and (value or "").strip().lower().startswith(
                ("javascript:", "vbscript:", "data:text")
            ):
                self.problems.append(f"{name}={value!r}")


def problems(text: str) -> list[str]:
    parser = Inertness()
    parser.feed(text)
    parser.close()
    return parser.problems


def assert_inert(response, where, *, baseline=()):
    """No active content but the page's own (``baseline``: the admin's icons and config)."""
    assert response.status_code == 200, (where, response.status_code)
    text = response.content.decode()
    assert sorted(problems(text)) == sorted(baseline), where
    assert "<img src=x" not in text and "</script><script>" not in text, where
    return text


@pytest.fixture
def stage(world):
    """Clients for a member of org A (an operator) and for the audit console."""
    Membership.objects.filter(user=world.olivia).update(role=Role.OPERATOR)
    member, root = Client(), Client()
    member.force_login(world.olivia)
    root.force_login(world.root)
    benign = root.get(reverse("admin:runs_run_change", args=[world.run_a_done.pk]))
    benign_list = root.get(reverse("admin:runs_run_changelist"), {"q": world.preset_a.name})
    return {
        "member": member,
        "root": root,
        "world": world,
        "admin_baseline": problems(benign.content.decode()),
        "admin_list_baseline": problems(benign_list.content.decode()),
    }


def store_hostile_run(world, *, run_input, output, error, champ_url_text, name, description):
    """What Champ and a user can put into a run, stored the way the portal stores it."""
    number = next(names)
    preset = WorkflowPreset.objects.create(
        organisation=world.org_a,
        name=f"{number} {name}"[:200],
        workflow_id=101,
        input=run_input,
        description=description,
    )
    workflow_id = 10_000 + number  # a history filter that finds exactly this run
    run = lifecycle.open_run(
        organisation=world.org_a,
        workflow_id=workflow_id,
        input=run_input,
        preset=preset,
        preset_input={"other": name},
        token=world.token_a,
        triggered_by=world.olivia,
    )
    lifecycle.record_status(
        run,
        seen=RunStatus.UNKNOWN,
        new=RunStatus.IN_PROGRESS,
        source=EventSource.TRIGGER,
        snapshot={"status": "in_progress", "url": champ_url_text},
        message=error,
        extra_fields={
            "champ_run_id": 900_000 + number,
            "champ_url": f"https://api.champ.ai/{champ_url_text}"[:500],
        },
    )
    Run.objects.filter(pk=run.pk).update(last_poll_error=lifecycle.storable(error))
    return run, workflow_id


def run_pages(stage, run, workflow_id):
    """The surfaces a run is followed on: its page, the live fragment, the history."""
    member = stage["member"]
    return {
        "run page (open)": member.get(run.get_absolute_url()),
        "live fragment (open)": member.get(reverse("run_live", args=[run.pk])),
        "history": member.get(reverse("run_list"), {"workflow": workflow_id}),
        "history partial": member.get(
            reverse("run_list"), {"workflow": workflow_id}, HTTP_HX_REQUEST="true"
        ),
    }


def other_pages(stage, run):
    """Where a run's preset, its name and the run itself appear besides."""
    member, root = stage["member"], stage["root"]
    return {
        "preset page": member.get(run.preset.get_absolute_url()),
        "dashboard": member.get(reverse("dashboard")),
        "admin run": root.get(reverse("admin:runs_run_change", args=[run.pk])),
        "admin run list": root.get(reverse("admin:runs_run_changelist"), {"q": run.preset.name}),
    }


def examples(count):
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@given(
    run_input=user_input,
    output=champ_output,
    error=champ_text,
    champ_url_text=champ_text,
    name=hostile_text(max_size=3),
    description=hostile_text(),
)
@examples(30)
def test_hostile_json_renders_inert_on_the_run_page_live_fragment_history_and_exports(
    stage, run_input, output, error, champ_url_text, name, description
):
    # The user's input arrives through the form's parser, as typed JSON.
    run_input = parse_json_object(json.dumps(run_input))
    run, workflow_id = store_hostile_run(
        stage["world"],
        run_input=run_input,
        output=output,
        error=error,
        champ_url_text=champ_url_text,
        name=name,
        description=description,
    )
    for where, response in run_pages(stage, run, workflow_id).items():
        assert_inert(response, where)

    # Champ's final answer through the door: output and error text.
    change = lifecycle.record_status(
        run,
        seen=RunStatus.IN_PROGRESS,
        new=RunStatus.FAILED,
        source=EventSource.POLL,
        output=output,
        error=error,
        message=error,
        snapshot={"output": output},
    )
    assert change.recorded
    run.refresh_from_db()
    stored = run.output
    assert stored == lifecycle.storable(output)  # only NUL and lone surrogates are replaced
    member = stage["member"]
    page = assert_inert(member.get(run.get_absolute_url()), "run page (final)")
    live = assert_inert(member.get(reverse("run_live", args=[run.pk])), "live fragment (final)")
    for text in (page, live):
        if stored is not None:
            assert escape(pretty_json(stored)) in text  # shown, and escaped
        assert escape(run.error) in text
    assert escape(pretty_json(run.input)) in page  # as stored (jsonb orders the keys)

    # The exports: valid JSON and CSV that give back exactly what is stored.
    exported = json.loads(
        b"".join(member.get(reverse("run_export_json"), {"workflow": workflow_id}))
    )
    assert [(row["input"], row["output"], row["error"]) for row in exported] == [
        (run.input, stored, run.error)
    ]
    (row,) = csv.DictReader(
        io.StringIO(
            b"".join(member.get(reverse("run_export_csv"), {"workflow": workflow_id})).decode()
        )
    )
    assert (row["input"], row["output"], row["error"]) == (
        csv_safe(run.input),
        csv_safe(stored),
        csv_safe(run.error),
    )


@given(
    run_input=user_input,
    output=champ_output,
    error=champ_text,
    name=hostile_text(max_size=3),
    description=hostile_text(),
)
@examples(15)
def test_hostile_json_and_names_render_inert_on_the_preset_page_dashboard_and_admin(
    stage, run_input, output, error, name, description
):
    WorkflowPreset.objects.update(archived=True)  # the dashboard shows this example's only
    run, _workflow_id = store_hostile_run(
        stage["world"],
        run_input=parse_json_object(json.dumps(run_input)),
        output=output,
        error=error,
        champ_url_text=error,
        name=name,
        description=description,
    )
    lifecycle.record_status(
        run, seen=RunStatus.IN_PROGRESS, new=RunStatus.COMPLETED, source="poll", output=output
    )
    for where, response in other_pages(stage, run).items():
        baseline = stage["admin_baseline"] if where == "admin run" else ()
        if where == "admin run list":
            baseline = stage["admin_list_baseline"]
        assert_inert(response, where, baseline=baseline)


def test_the_run_page_never_marks_champs_data_safe():
    """No template uses |safe or autoescape off (the property above is the proof)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "templates"
    for template in root.rglob("*.html"):
        source = template.read_text()
        assert "|safe" not in source, template
        assert "autoescape off" not in source, template
