"""CSV and JSON exports: exactly the filtered set, streamed, formula-safe, no token material."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse

from runs.history import csv_safe
from runs.models import ApiToken, Run, RunStatus, WorkflowPreset
from tests.conftest import KNOWN_TOKEN
from tests.test_history import T0, make_run


def body(response) -> str:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode()


def export_csv(client, **params) -> list[dict]:
    response = client.get(reverse("run_export_csv"), params)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="runs-')
    return list(csv.DictReader(io.StringIO(body(response))))


def export_json(client, **params) -> list[dict]:
    response = client.get(reverse("run_export_json"), params)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return json.loads(body(response))


@pytest.fixture
def client_a(client_for, alice):
    return client_for(alice)


def test_csv_export_is_streamed_with_a_header_row(client_a, org_a, olivia):
    run = make_run(
        org_a,
        triggered_by=olivia,
        input={"k": "v"},
        output={"ok": True},
        at=T0,
        took=timedelta(seconds=90),
    )
    response = client_a.get(reverse("run_export_csv"))
    assert isinstance(response, StreamingHttpResponse)
    assert "no-store" in response["Cache-Control"]
    lines = body(response).splitlines()
    assert lines[0] == (
        "id,organisation,status,workflow_id,preset,champ_run_id,triggered_by,"
        "triggered_at,finished_at,duration_seconds,input,output,error"
    )
    row = next(csv.DictReader(io.StringIO("\n".join(lines))))
    assert row["id"] == str(run.pk)
    assert row["organisation"] == "Org-A"
    assert row["status"] == "completed"
    assert row["triggered_by"] == "olivia"
    assert row["triggered_at"] == "2026-03-10T12:00:00+00:00"
    assert row["duration_seconds"] == "90.0"
    assert json.loads(row["input"]) == {"k": "v"}
    assert json.loads(row["output"]) == {"ok": True}


def test_json_export_is_one_array_of_objects(client_a, org_a):
    run = make_run(org_a, status=RunStatus.PENDING, input={"n": 1})
    response = client_a.get(reverse("run_export_json"))
    assert isinstance(response, StreamingHttpResponse)
    rows = json.loads(body(response))
    assert rows == [
        {
            "id": run.pk,
            "organisation": "Org-A",
            "status": "pending",
            "workflow_id": 7,
            "preset": None,
            "champ_run_id": None,
            "triggered_by": None,
            "triggered_at": run.triggered_at.isoformat(),
            "finished_at": None,
            "duration_seconds": None,
            "input": {"n": 1},
            "output": None,
            "error": "",
        }
    ]


def test_empty_exports_are_still_valid(client_a, org_a):
    assert export_json(client_a) == []
    assert export_csv(client_a) == []


@pytest.mark.parametrize("export", [export_csv, export_json])
def test_export_is_exactly_the_filtered_set_not_one_page(client_a, org_a, monkeypatch, export):
    monkeypatch.setattr("runs.history.PAGE_SIZE", 2)
    failed = [
        make_run(org_a, status=RunStatus.FAILED, at=T0 + timedelta(minutes=n)) for n in range(5)
    ]
    make_run(org_a, status=RunStatus.COMPLETED)
    make_run(org_a, status=RunStatus.FAILED, workflow_id=99)

    rows = export(client_a, status="failed", workflow=7, after="whatever~1", page="last")

    assert [int(row["id"]) for row in rows] == [run.pk for run in reversed(failed)]
    rows = export(client_a, status="failed", workflow=7, sort="started")
    assert [int(row["id"]) for row in rows] == [run.pk for run in failed]


@pytest.mark.parametrize("export_name", ["run_export_csv", "run_export_json"])
def test_export_never_contains_another_organisations_runs(
    client_a, org_a, org_b, bob, export_name
):
    make_run(org_a, input={"who": "mine"})
    make_run(org_b, triggered_by=bob, input={"who": "B-ONLY"})
    preset_b = WorkflowPreset.objects.create(organisation=org_b, name="Bp", workflow_id=7)

    everything = body(client_a.get(reverse(export_name)))
    assert "mine" in everything and "B-ONLY" not in everything

    for params in (
        {"organisation": org_b.slug},
        {"preset": preset_b.pk},
        {"triggered_by": bob.pk},
    ):
        response = client_a.get(reverse(export_name), params)
        assert response.status_code == 400
        assert "B-ONLY" not in response.content.decode()
        assert "nothing exported" in response.content.decode()


def test_formula_cells_are_escaped(client_a, org_a, alice):
    alice.username = "-alice"
    alice.save()
    preset = WorkflowPreset.objects.create(
        organisation=org_a, name='=HYPERLINK("http://evil","x")', workflow_id=7
    )
    dangerous = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tTAB", "\rCR"]
    for n, text in enumerate(dangerous):
        run = make_run(org_a, preset=preset, triggered_by=alice, at=T0 + timedelta(minutes=n))
        Run.objects.filter(pk=run.pk).update(error=text)

    rows = export_csv(client_a, sort="started")

    assert [row["error"] for row in rows] == ["'" + text for text in dangerous]
    assert {row["preset"] for row in rows} == {"'" + preset.name}
    assert {row["triggered_by"] for row in rows} == {"'-alice"}
    # Numbers and JSON that merely contain those characters are left alone.
    assert all(row["workflow_id"] == "7" for row in rows)


def test_csv_safe_escapes_only_text_that_starts_a_formula():
    assert csv_safe("=x") == "'=x"
    assert csv_safe("a=b") == "a=b"
    assert csv_safe(-5) == "-5"
    assert csv_safe(None) == ""
    assert csv_safe({"a": "=b"}) == '{"a":"=b"}'
    assert csv_safe(["-1"]) == '["-1"]'


def test_exports_contain_no_token_material(client_a, org_a, token_a):
    make_run(org_a, token=token_a, input={"x": 1})
    token = ApiToken.objects.get(pk=token_a.pk)
    for name in ("run_export_csv", "run_export_json"):
        text = body(client_a.get(reverse(name)))
        assert KNOWN_TOKEN not in text
        assert token.ciphertext not in text
        assert token.hint not in text


def test_export_links_on_the_history_page_carry_the_filters(client_a, org_a):
    make_run(org_a)
    html = client_a.get(reverse("run_list"), {"status": "failed", "q": "a b"}).content.decode()
    assert 'href="/runs/export.csv?status=failed&amp;q=a+b"' in html
    assert 'href="/runs/export.json?status=failed&amp;q=a+b"' in html


def test_exports_need_login(client):
    for name in ("run_export_csv", "run_export_json"):
        assert client.get(reverse(name)).status_code == 302
