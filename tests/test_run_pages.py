"""The run page, its live fragment, the dashboard and the new-run form pages."""

import pytest
from django.urls import reverse

from runs import lifecycle
from runs.models import EventSource, Run, RunStatus
from runs.simulator import WORKFLOW_ECHO
from tests.run_fixtures import *  # noqa: F403

HOSTILE = {
    "html": "</script><script>alert(1)</script>",
    "img": "<img src=x onerror=alert(1)>",
    "link": "javascript:alert(1)",
    "separator": "line\u2028break",
}


def test_run_page_shows_who_what_and_the_timeline(
    client_for, olivia, alice, org_a, demo_token, make_run, preset_a
):
    run = make_run(
        org_a,
        triggered_by=olivia,
        token=demo_token,
        preset=preset_a,
        preset_input={"message": "hello"},
        input={"message": "bye"},
    )
    lifecycle.record_status(run, seen="pending", new="in_progress", source=EventSource.POLL)

    response = client_for(alice).get(run.get_absolute_url())

    text = response.content.decode()
    assert response.status_code == 200
    assert run.get_absolute_url() == f"/runs/{run.pk}/"
    for expected in ("Org-A", "olivia", preset_a.name, demo_token.hint, str(run.champ_run_id)):
        assert expected in text
    assert "Run again" in text
    assert "&quot;message&quot;: &quot;bye&quot;" in text
    assert "input at that moment" in text  # it differs from the run's
    events = response.context["events"]
    assert [(e.from_status, e.to_status) for e in events] == [
        ("", "unknown"),
        ("unknown", "pending"),
        ("pending", "in_progress"),
    ]
    assert all(e.since_trigger.total_seconds() >= 0 for e in events)
    assert "Poll" in text and "Trigger" in text
    assert "api_KNOWN" not in text


def test_run_page_escapes_whatever_champ_returned(client_for, olivia, org_a, make_run):
    run = make_run(org_a, status=RunStatus.COMPLETED, output=HOSTILE, input=HOSTILE)
    Run.objects.filter(pk=run.pk).update(error="<img src=x onerror=alert(2)>")

    text = client_for(olivia).get(run.get_absolute_url()).content.decode()

    assert "</script><script>" not in text
    assert "<img src=x" not in text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text
    assert 'href="javascript:' not in text
    assert "<script>" not in text.replace(
        '<script src="/static/js/htmx.min.js" defer></script>', ""
    )


def test_live_fragment_polls_while_open_and_stops_when_final(client_for, olivia, org_a, make_run):
    run = make_run(org_a)
    client = client_for(olivia)
    url = reverse("run_live", args=[run.pk])
    assert url == f"/runs/{run.pk}/live/"

    open_fragment = client.get(url).content.decode()
    assert 'hx-trigger="every 2s"' in open_fragment
    assert f'hx-get="{url}"' in open_fragment
    assert 'hx-swap="outerHTML"' in open_fragment
    assert "status-pending" in open_fragment
    assert "<html" not in open_fragment  # a fragment, not a page

    lifecycle.record_status(
        run, seen="pending", new="completed", source=EventSource.POLL, output={"ok": True}
    )
    final_fragment = client.get(url).content.decode()
    assert "status-completed" in final_fragment
    assert "hx-trigger" not in final_fragment
    assert "&quot;ok&quot;: true" in final_fragment
    assert "hx-trigger" not in client.get(run.get_absolute_url()).content.decode()


def test_full_page_includes_the_polling_fragment_while_open(client_for, olivia, org_a, make_run):
    run = make_run(org_a)
    text = client_for(olivia).get(run.get_absolute_url()).content.decode()
    assert 'id="run-live"' in text
    assert f'hx-get="{reverse("run_live", args=[run.pk])}"' in text


def test_unknown_run_explains_and_links_to_champs_dashboard(client_for, olivia, org_a, make_run):
    run = make_run(org_a, status=RunStatus.UNKNOWN)
    text = client_for(olivia).get(run.get_absolute_url()).content.decode()
    assert "may or may not have created this run" in text
    assert f"https://dash.champ.ai/app/workflows/{WORKFLOW_ECHO}" in text


def test_last_poll_error_is_shown(client_for, olivia, org_a, make_run):
    run = make_run(org_a)
    Run.objects.filter(pk=run.pk).update(last_poll_error="Champ answered HTTP 503")
    text = client_for(olivia).get(reverse("run_live", args=[run.pk])).content.decode()
    assert "Champ answered HTTP 503" in text


def test_viewer_sees_a_run_without_run_again_and_gets_403_there(
    client_for, victor, org_a, make_run
):
    run = make_run(org_a)
    client = client_for(victor)
    text = client.get(run.get_absolute_url()).content.decode()
    assert "status-pending" in text
    assert reverse("run_again", args=[run.pk]) not in text
    assert client.get(reverse("run_again", args=[run.pk])).status_code == 403
    assert client.post(reverse("run_again", args=[run.pk]), {}).status_code == 403


@pytest.mark.parametrize("name", ["run_detail", "run_live", "run_again"])
def test_another_organisation_gets_404_for_a_run_by_id(
    client_for, bob, org_a, org_b, make_run, name
):
    run = make_run(org_a)
    response = client_for(bob).get(reverse(name, args=[run.pk]))
    assert response.status_code == 404
    assert client_for(bob).post(reverse("run_again", args=[run.pk]), {}).status_code == 404
    assert Run.objects.count() == 1


def test_run_pages_need_login(client, org_a, make_run):
    run = make_run(org_a)
    for url in (run.get_absolute_url(), reverse("run_live", args=[run.pk]), reverse("run_create")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_run_form_offers_only_organisations_where_i_can_run(client_for, olivia, org_a, org_b):
    response = client_for(olivia).get(reverse("run_create"))
    form = response.context["form"]
    assert list(form.fields["organisation"].queryset) == [org_a]
    assert form.initial["organisation"] == org_a.pk
    assert not form.show_token  # no organisation has several tokens
    text = response.content.decode()
    assert 'name="submission_key"' in text
    assert 'name="token"' not in text
    assert "no-store" in response["Cache-Control"]


def test_viewer_only_is_told_they_cannot_start_runs(client_for, victor, org_a):
    text = client_for(victor).get(reverse("run_create")).content.decode()
    assert "only in an organisation where you are an operator or admin" in text


def test_run_form_shows_line_and_column_of_bad_json(client_for, olivia, org_a):
    response = client_for(olivia).post(
        reverse("run_create"),
        {"organisation": org_a.pk, "workflow_id": "1", "input": '{\n  "a": }'},
    )
    assert "line 2, column 8" in response.content.decode()
    assert not Run.objects.exists()


def test_dashboard_has_one_click_buttons_only_where_i_can_run(
    client_for, olivia, victor, org_a, preset_a, make_run
):
    make_run(org_a, triggered_by=olivia)
    run_url = reverse("preset_run", args=[preset_a.pk])

    operator_page = client_for(olivia).get(reverse("dashboard"))
    text = operator_page.content.decode()
    assert run_url in text
    assert 'name="csrfmiddlewaretoken"' in text
    assert reverse("preset_list") in text and reverse("run_create") in text  # nav links
    assert 'id="active-runs" hx-get="/runs/active/"' in text
    assert "no-store" in operator_page["Cache-Control"]

    viewer_text = client_for(victor).get(reverse("dashboard")).content.decode()
    assert preset_a.name in viewer_text
    assert run_url not in viewer_text


def test_active_runs_fragment_stops_polling_when_nothing_is_open(
    client_for, olivia, org_a, make_run
):
    run = make_run(org_a)
    client = client_for(olivia)
    assert 'hx-trigger="every 2s"' in client.get(reverse("active_runs")).content.decode()
    lifecycle.record_status(run, seen="pending", new="failed", source=EventSource.POLL)
    fragment = client.get(reverse("active_runs")).content.decode()
    assert "hx-trigger" not in fragment
    assert "No run is in progress" in fragment
