"""The run history: filters alone and combined, the URL round trip, sorting, keyset pages."""

from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from runs import lifecycle
from runs.history import SUMMARY_LENGTH
from runs.models import FINAL_STATUSES, EventSource, RunStatus, WorkflowPreset

T0 = timezone.make_aware(datetime(2026, 3, 10, 12, 0))


def make_run(
    organisation,
    *,
    status=RunStatus.COMPLETED,
    at=None,
    took=None,
    workflow_id=7,
    output=None,
    **fields,
):
    """A run recorded the only way runs are: opened, then moved through the lifecycle."""
    at = at or timezone.now()
    run = lifecycle.open_run(
        organisation=organisation, workflow_id=workflow_id, triggered_at=at, **fields
    )
    if status != RunStatus.UNKNOWN:
        observed = at + (took or timedelta(seconds=1)) if status in FINAL_STATUSES else None
        lifecycle.record_status(
            run,
            seen=RunStatus.UNKNOWN,
            new=status,
            source=EventSource.TRIGGER,
            output=output,
            observed_at=observed,
        )
    return run


def ids(response) -> list[int]:
    return [run.pk for run in response.context["page"].rows]


@pytest.fixture
def history(client_for, alice):
    """``history(**params)``: alice's history page for those URL parameters."""
    client = client_for(alice)

    def get(**params):
        response = client.get(reverse("run_list"), params)
        assert response.status_code == 200
        return response

    return get


@pytest.fixture
def preset_a(org_a, alice):
    return WorkflowPreset.objects.create(
        organisation=org_a, name="Nightly report", workflow_id=11, created_by=alice
    )


@pytest.fixture
def preset_b(org_b, bob):
    return WorkflowPreset.objects.create(
        organisation=org_b, name="B secret preset", workflow_id=11, created_by=bob
    )


# --- Scope --------------------------------------------------------------------------------


def test_history_needs_login(client):
    response = client.get(reverse("run_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_history_shows_only_my_organisations_runs(history, org_a, org_b, alice, bob):
    mine = make_run(org_a, triggered_by=alice, input={"who": "alice-run"})
    make_run(org_b, triggered_by=bob, input={"who": "bob-run"})

    response = history()

    assert ids(response) == [mine.pk]
    assert "bob-run" not in response.content.decode()


@pytest.mark.parametrize("param", ["organisation", "preset", "triggered_by"])
def test_another_organisations_ids_are_invalid_choices_and_show_nothing(
    history, org_a, org_b, alice, bob, preset_b, param
):
    make_run(org_a, triggered_by=alice)
    make_run(org_b, triggered_by=bob, preset=preset_b)
    value = {"organisation": org_b.slug, "preset": preset_b.pk, "triggered_by": bob.pk}[param]

    response = history(**{param: value})

    assert ids(response) == []
    assert param in response.context["form"].errors
    assert "B secret preset" not in response.content.decode()


def test_another_organisations_numeric_id_is_not_accepted_either(history, org_a, org_b, bob):
    make_run(org_b, triggered_by=bob)
    response = history(organisation=org_b.pk)
    assert ids(response) == []
    assert response.context["form"].errors


def test_filter_choices_list_only_my_organisations_presets_and_colleagues(
    history, org_a, org_b, preset_a, preset_b, bob
):
    form = history().context["form"]
    assert list(form.fields["organisation"].queryset) == [org_a]
    assert list(form.fields["preset"].queryset) == [preset_a]
    usernames = {user.username for user in form.fields["triggered_by"].queryset}
    assert usernames == {"alice", "olivia", "victor"}


# --- Each filter alone ---------------------------------------------------------------------


def test_status_filter_takes_several_statuses(history, org_a):
    done = make_run(org_a, status=RunStatus.COMPLETED, at=T0)
    failed = make_run(org_a, status=RunStatus.FAILED, at=T0 + timedelta(minutes=1))
    make_run(org_a, status=RunStatus.PENDING, at=T0 + timedelta(minutes=2))

    assert ids(history(status="failed")) == [failed.pk]
    assert ids(history(status=["completed", "failed"])) == [failed.pk, done.pk]


def test_unknown_status_value_is_refused(history, org_a):
    make_run(org_a)
    response = history(status="bogus")
    assert "status" in response.context["form"].errors
    assert ids(response) == []


def test_organisation_filter(history, make_org, org_a, alice):
    other = make_org("org-c", admin=[alice])
    in_a = make_run(org_a)
    make_run(other)
    assert ids(history(organisation="org-a")) == [in_a.pk]


def test_preset_filter(history, org_a, preset_a):
    with_preset = make_run(org_a, preset=preset_a, workflow_id=11)
    make_run(org_a)
    assert ids(history(preset=preset_a.pk)) == [with_preset.pk]


def test_workflow_filter(history, org_a):
    seven = make_run(org_a, workflow_id=7)
    make_run(org_a, workflow_id=8)
    assert ids(history(workflow=7)) == [seven.pk]
    assert "workflow" in history(workflow="seven").context["form"].errors


def test_triggered_by_filter(history, org_a, alice, olivia):
    by_olivia = make_run(org_a, triggered_by=olivia)
    make_run(org_a, triggered_by=alice)
    assert ids(history(triggered_by=olivia.pk)) == [by_olivia.pk]


def test_my_runs_shortcut_equals_triggered_by_me(history, org_a, alice, olivia):
    mine = make_run(org_a, triggered_by=alice)
    make_run(org_a, triggered_by=olivia)
    make_run(org_a)

    assert ids(history(mine=1)) == [mine.pk]
    assert ids(history(mine="on")) == [mine.pk]  # the checkbox
    assert ids(history(triggered_by=alice.pk)) == [mine.pk]


def test_date_range_includes_the_whole_of_the_to_day(history, org_a):
    before = make_run(org_a, at=T0 - timedelta(days=1))  # 9 March
    first = make_run(org_a, at=T0.replace(hour=0, minute=0))  # 10 March 00:00
    last = make_run(org_a, at=T0.replace(hour=23, minute=59))  # 10 March 23:59
    after = make_run(org_a, at=T0 + timedelta(days=1))  # 11 March

    assert ids(history(started_from="2026-03-10", started_to="2026-03-10")) == [last.pk, first.pk]
    assert ids(history(started_from="2026-03-11")) == [after.pk]
    assert ids(history(started_to="2026-03-09")) == [before.pk]
    assert "started_from" in history(started_from="10/03/2026x").context["form"].errors


def test_text_search_looks_in_preset_name_input_and_output(history, org_a, preset_a):
    by_preset = make_run(org_a, preset=preset_a, at=T0)
    by_input = make_run(org_a, input={"customer": "ACME Nightly"}, at=T0 + timedelta(seconds=1))
    by_output = make_run(org_a, output={"summary": "nightly totals"}, at=T0 + timedelta(seconds=2))
    make_run(org_a, input={"customer": "Globex"}, at=T0 + timedelta(seconds=3))

    assert ids(history(q="NIGHTLY")) == [by_output.pk, by_input.pk, by_preset.pk]
    assert ids(history(q="globex")) != []
    assert ids(history(q="   ")) == ids(history())


def test_text_search_finds_non_ascii_and_quoted_text(history, org_a):
    cafe = make_run(org_a, input={"place": "Café Zürich"})
    quoted = make_run(org_a, input={"note": 'say "hi"'})
    assert ids(history(q="Zürich")) == [cafe.pk]
    assert ids(history(q='"hi"')) == [quoted.pk]


def test_text_search_does_not_match_another_organisations_preset(history, org_a, org_b, preset_b):
    make_run(org_b, preset=preset_b)
    make_run(org_a)
    assert ids(history(q="secret preset")) == []


def test_filters_combine(history, org_a, alice, olivia, preset_a):
    target = make_run(
        org_a,
        status=RunStatus.FAILED,
        preset=preset_a,
        workflow_id=11,
        triggered_by=olivia,
        input={"region": "north"},
        at=T0,
    )
    # Each of these misses exactly one of the filters below.
    make_run(
        org_a,
        status=RunStatus.COMPLETED,
        preset=preset_a,
        workflow_id=11,
        triggered_by=olivia,
        input={"region": "north"},
        at=T0,
    )
    make_run(
        org_a,
        status=RunStatus.FAILED,
        workflow_id=11,
        triggered_by=olivia,
        input={"region": "north"},
        at=T0,
    )
    make_run(
        org_a,
        status=RunStatus.FAILED,
        preset=preset_a,
        workflow_id=11,
        triggered_by=alice,
        input={"region": "north"},
        at=T0,
    )
    make_run(
        org_a,
        status=RunStatus.FAILED,
        preset=preset_a,
        workflow_id=11,
        triggered_by=olivia,
        input={"region": "south"},
        at=T0,
    )
    make_run(
        org_a,
        status=RunStatus.FAILED,
        preset=preset_a,
        workflow_id=11,
        triggered_by=olivia,
        input={"region": "north"},
        at=T0 - timedelta(days=3),
    )

    response = history(
        status=["failed", "suspended"],
        organisation="org-a",
        preset=preset_a.pk,
        workflow=11,
        triggered_by=olivia.pk,
        started_from="2026-03-10",
        started_to="2026-03-10",
        q="north",
    )
    assert ids(response) == [target.pk]


# --- The URL is the view ------------------------------------------------------------------


def test_filters_round_trip_through_the_form_and_every_link(history, org_a, olivia, preset_a):
    make_run(org_a, status=RunStatus.FAILED, preset=preset_a, workflow_id=11, triggered_by=olivia)
    params = {
        "status": ["completed", "failed"],
        "organisation": "org-a",
        "preset": str(preset_a.pk),
        "workflow": "11",
        "triggered_by": str(olivia.pk),
        "started_from": "2026-01-01",
        "started_to": "2026-12-31",
        "q": "<b>bold</b> & co",
        "sort": "started",
    }
    response = history(**params)
    html = response.content.decode()
    form = response.context["form"]

    # The form shows back exactly what was asked (and escapes it).
    assert {name: form[name].value() for name in params} == params
    assert 'value="completed" checked' in html.replace(' id="id_status_2"', "")
    assert 'value="&lt;b&gt;bold&lt;/b&gt; &amp; co"' in html
    assert "<b>bold</b>" not in html
    # Export and pagination links carry the same filters.
    for key in ("export_csv_url", "export_json_url", "first_url", "last_url"):
        query = parse_qs(urlsplit(response.context[key]).query)
        query.pop("page", None)
        assert query == {
            name: value if isinstance(value, list) else [value] for name, value in params.items()
        }, key
    assert response.context["export_csv_url"].startswith(reverse("run_export_csv") + "?")
    assert response.context["export_json_url"].startswith(reverse("run_export_json") + "?")


def test_sort_links_keep_the_filters_and_toggle_the_direction(history, org_a):
    make_run(org_a)
    links = history(status="completed").context["sort_links"]
    started = parse_qs(urlsplit(links["started"]["url"]).query)
    duration = parse_qs(urlsplit(links["duration"]["url"]).query)
    assert started == {"status": ["completed"], "sort": ["started"]}  # default is newest first
    assert duration == {"status": ["completed"], "sort": ["-duration"]}


def test_history_link_is_in_the_navigation(client_for, alice, org_a):
    html = client_for(alice).get(reverse("dashboard")).content.decode()
    assert f'href="{reverse("run_list")}"' in html


# --- Columns -----------------------------------------------------------------------------


def test_row_shows_badge_preset_or_workflow_who_duration_and_escaped_input(
    history, org_a, olivia, preset_a
):
    long_input = {"html": "<script>alert(1)</script>", "padding": "x" * 200}
    make_run(org_a, preset=preset_a, triggered_by=olivia, took=timedelta(seconds=75))
    make_run(org_a, workflow_id=42, input=long_input, status=RunStatus.PENDING)

    response = history()
    html = response.content.decode()

    assert "badge status-completed" in html and "badge status-pending" in html
    assert "Nightly report" in html and "workflow 42" in html
    assert "olivia" in html
    assert "1 min 15 s" in html
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)" in html
    summary = response.context["page"].rows[0].input_summary
    assert len(summary) == SUMMARY_LENGTH and summary.endswith("…")


# --- Sorting -----------------------------------------------------------------------------


def test_sort_by_start_time_both_ways(history, org_a):
    runs = [make_run(org_a, at=T0 + timedelta(minutes=n)) for n in range(3)]
    assert ids(history()) == [r.pk for r in reversed(runs)]
    assert ids(history(sort="started")) == [r.pk for r in runs]


def test_sort_by_duration_puts_open_runs_last_both_ways(history, org_a):
    short = make_run(org_a, took=timedelta(seconds=5), at=T0)
    long = make_run(org_a, took=timedelta(hours=2), at=T0 + timedelta(seconds=1))
    still_open = make_run(org_a, status=RunStatus.IN_PROGRESS, at=T0 + timedelta(seconds=2))

    assert ids(history(sort="-duration")) == [long.pk, short.pk, still_open.pk]
    assert ids(history(sort="duration")) == [short.pk, long.pk, still_open.pk]


def test_unknown_sort_is_refused(history, org_a):
    assert "sort" in history(sort="champ_run_id").context["form"].errors


# --- Keyset pagination --------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["-started", "started", "-duration", "duration"])
def test_pages_walk_every_run_once_forwards_and_backwards(history, org_a, monkeypatch, sort):
    monkeypatch.setattr("runs.history.PAGE_SIZE", 3)
    expected = []
    for n in range(11):
        # Ties on the start time and on the duration, and some open runs.
        status = RunStatus.PENDING if n % 4 == 0 else RunStatus.COMPLETED
        expected.append(
            make_run(
                org_a,
                status=status,
                at=T0 + timedelta(minutes=n // 3),
                took=timedelta(seconds=n // 2),
            )
        )
    response = history(sort=sort)
    assert len(ids(response)) == 3
    pages = [ids(response)]
    while response.context["next_url"]:
        response = history(**_params(response.context["next_url"]))
        pages.append(ids(response))
    forwards = [pk for page in pages for pk in page]
    assert sorted(forwards) == sorted(run.pk for run in expected)
    assert len(pages) == 4

    backwards = [ids(response)]
    while response.context["prev_url"]:
        response = history(**_params(response.context["prev_url"]))
        backwards.append(ids(response))
    assert backwards == pages[::-1]


def test_last_page_is_the_oldest_runs_with_a_way_back(history, org_a, monkeypatch):
    monkeypatch.setattr("runs.history.PAGE_SIZE", 2)
    runs = [make_run(org_a, at=T0 + timedelta(minutes=n)) for n in range(5)]
    response = history(page="last")
    assert ids(response) == [runs[1].pk, runs[0].pk]
    assert response.context["next_url"] is None
    previous = history(**_params(response.context["prev_url"]))
    assert ids(previous) == [runs[3].pk, runs[2].pk]


def test_a_malformed_cursor_shows_the_first_page(history, org_a):
    run = make_run(org_a)
    for cursor in ["nonsense", "1~2~3", "~5", "99999999999999999999999~1", "abc~1"]:
        assert ids(history(after=cursor)) == [run.pk]


def test_history_page_runs_no_count_and_a_fixed_number_of_queries(
    client_for, alice, org_a, olivia, preset_a, monkeypatch
):
    monkeypatch.setattr("runs.history.PAGE_SIZE", 5)
    for n in range(12):
        make_run(org_a, triggered_by=olivia, preset=preset_a if n % 2 else None)
    client = client_for(alice)
    client.get(reverse("run_list"))  # warm the session

    for params in [{}, {"status": "completed", "q": "x"}, {"page": "last"}, {"sort": "duration"}]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(reverse("run_list"), params)
        assert response.status_code == 200
        sql = [query["sql"].upper() for query in queries]
        assert not [q for q in sql if "COUNT(" in q], sql
        # Session, user, choice lists, one page: nothing per row.
        assert len(sql) <= 10, sql


def test_htmx_request_gets_only_the_results_partial(client_for, alice, org_a):
    make_run(org_a)
    response = client_for(alice).get(reverse("run_list"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'id="history-results"' in html
    assert 'aria-label="Filter runs"' not in html  # the filter form is not repeated
    assert "<html" not in html


def _params(url: str) -> dict:
    return {key: values for key, values in parse_qs(urlsplit(url).query).items()}


def test_run_page_links_to_the_history_of_its_workflow_and_preset(
    client_for, alice, org_a, preset_a
):
    run = make_run(org_a, preset=preset_a, workflow_id=11)
    html = client_for(alice).get(run.get_absolute_url()).content.decode()
    assert f'href="{reverse("run_list")}?workflow=11"' in html
    assert f'href="{reverse("run_list")}?preset={preset_a.pk}"' in html
