"""Champ's webhook deliveries: authentication, limits, and the lifecycle door."""

import base64
import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runs import lifecycle
from runs import organisations as org_actions
from runs.models import AuditAction, AuditEntry, Run, RunEvent, RunStatus


@pytest.fixture
def secret(org_a, alice):
    return org_actions.webhook_secret_create(organisation=org_a, user=alice)


@pytest.fixture
def run(org_a, alice):
    run = lifecycle.open_run(organisation=org_a, workflow_id=67890, input={}, triggered_by=alice)
    lifecycle.record_status(
        run, seen="unknown", new="pending", source="trigger", extra_fields={"champ_run_id": 12345}
    )
    return run


def payload(run_id=12345, status="completed", output=None):
    return {
        "event": f"workflow_run.{status}",
        "timestamp": "2026-04-22T10:30:45Z",
        "data": {
            "workflow_run": {
                "id": run_id,
                "workflow_id": 67890,
                "status": status,
                "input": {},
                "output": output if output is not None else {"result": 42},
                "created_at": "2026-04-22T10:25:00Z",
                "updated_at": "2026-04-22T10:30:45Z",
            }
        },
    }


def deliver(client, org, body, *, secret=None, auth=None, raw=None):
    headers = {}
    if auth is not None:
        headers["HTTP_AUTHORIZATION"] = auth
    elif secret is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    data = raw if raw is not None else json.dumps(body)
    return client.post(
        reverse("champ_webhook", args=[org.slug]),
        data,
        content_type="application/json",
        **headers,
    )


def test_a_delivery_closes_the_run_through_the_lifecycle(client, org_a, secret, run):
    response = deliver(client, org_a, payload(), secret=secret)
    assert response.status_code == 200
    assert response.json() == {"recorded": True}
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert run.output == {"result": 42}
    event = run.events.order_by("-seq").first()
    assert (event.from_status, event.to_status, event.source) == (
        "pending",
        "completed",
        "webhook",
    )


def test_basic_auth_with_the_secret_as_password_is_accepted(client, org_a, secret, run):
    credential = base64.b64encode(f"champ:{secret}".encode()).decode()
    response = deliver(client, org_a, payload(), auth=f"Basic {credential}")
    assert response.status_code == 200


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer ", "Basic !!!", "Token x"])
def test_a_missing_or_wrong_credential_is_401_and_audited(client, org_a, secret, run, auth):
    response = deliver(client, org_a, payload(), auth=auth)
    assert response.status_code == 401
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    assert AuditEntry.objects.filter(action=AuditAction.WEBHOOK_REJECTED).exists()


def test_an_organisation_without_a_secret_refuses_every_delivery(client, org_a, run):
    assert deliver(client, org_a, payload(), auth="Bearer ").status_code == 401


def test_an_unknown_organisation_answers_like_a_wrong_secret(client, db):
    response = client.post(
        "/hooks/champ/no-such-org/",
        "{}",
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer x",
    )
    assert response.status_code == 401


def test_an_oversized_body_is_413(client, org_a, secret, run):
    body = payload(output={"blob": "x" * (1024 * 1024)})
    assert deliver(client, org_a, body, secret=secret).status_code == 413


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"data": {}}',
        json.dumps(payload(run_id="12345")),
        json.dumps(payload(status="exploded")),
    ],
)
def test_bad_json_or_a_wrong_shape_is_400(client, org_a, secret, run, raw):
    assert deliver(client, org_a, None, secret=secret, raw=raw).status_code == 400


def test_a_replayed_delivery_adds_no_event(client, org_a, secret, run):
    deliver(client, org_a, payload(), secret=secret)
    count = RunEvent.objects.filter(run=run).count()
    response = deliver(client, org_a, payload(), secret=secret)
    assert response.json() == {"recorded": False}
    assert RunEvent.objects.filter(run=run).count() == count


def test_an_out_of_order_delivery_never_leaves_a_final_status(client, org_a, secret, run):
    deliver(client, org_a, payload(status="failed"), secret=secret)
    deliver(client, org_a, payload(status="in_progress"), secret=secret)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_webhook_before_the_poll_means_the_poll_adds_nothing(client, org_a, secret, run):
    deliver(client, org_a, payload(), secret=secret)
    change = lifecycle.record_status(run.pk, seen="pending", new="completed", source="poll")
    assert not change.recorded
    assert run.events.filter(to_status="completed").count() == 1


def test_an_unknown_run_is_recorded_in_the_audit_log_and_ignored(client, org_a, secret, run):
    response = deliver(client, org_a, payload(run_id=999), secret=secret)
    assert response.status_code == 202
    entry = AuditEntry.objects.get(action=AuditAction.WEBHOOK_UNKNOWN_RUN)
    assert entry.changes["champ_run_id"] == 999


def test_a_run_of_another_organisation_is_not_touched(client, org_a, org_b, bob, secret):
    other = lifecycle.open_run(organisation=org_b, workflow_id=1, input={}, triggered_by=bob)
    lifecycle.record_status(
        other, seen="unknown", new="pending", source="trigger", extra_fields={"champ_run_id": 777}
    )
    response = deliver(client, org_a, payload(run_id=777), secret=secret)
    assert response.status_code == 202
    other.refresh_from_db()
    assert other.status == RunStatus.PENDING


def test_get_is_not_allowed(client, org_a, secret):
    assert client.get(reverse("champ_webhook", args=[org_a.slug])).status_code == 405


def test_a_non_final_status_is_only_a_hint_to_poll_now(
    client, org_a, secret, run, monkeypatch, django_capture_on_commit_callbacks
):
    kicks = []
    monkeypatch.setattr("runs.views.hooks.kick_poller", lambda: kicks.append(1))
    later = timezone.now() + timedelta(minutes=10)
    Run.objects.filter(pk=run.pk).update(next_poll_at=later)
    events = RunEvent.objects.filter(run=run).count()

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, org_a, payload(status="in_progress"), secret=secret)

    assert response.status_code == 200
    assert response.json()["recorded"] is False
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING  # what Champ says comes from a poll
    assert RunEvent.objects.filter(run=run).count() == events
    assert run.next_poll_at < later
    assert kicks == [1]


def test_a_hint_leaves_a_parked_or_final_run_alone(
    client, org_a, secret, run, monkeypatch, django_capture_on_commit_callbacks
):
    kicks = []
    monkeypatch.setattr("runs.views.hooks.kick_poller", lambda: kicks.append(1))
    Run.objects.filter(pk=run.pk).update(next_poll_at=None)  # parked after a refused poll
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, org_a, payload(status="suspended"), secret=secret)
    assert Run.objects.get(pk=run.pk).next_poll_at is None

    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, org_a, payload(status="completed"), secret=secret)
        deliver(client, org_a, payload(status="in_progress"), secret=secret)
    run.refresh_from_db()
    assert (run.status, run.next_poll_at) == (RunStatus.COMPLETED, None)
    assert kicks == []
