"""Email notifications: opt-in per user, once per run, never in the way of a status change."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runs import lifecycle, notifications
from runs.models import (
    AuditAction,
    AuditEntry,
    EventSource,
    NotificationKind,
    NotificationSettings,
    Run,
    RunNotification,
    RunStatus,
)
from tests.run_fixtures import *  # noqa: F403


@pytest.fixture(autouse=True)
def _locmem_email(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "portal@example.test"
    settings.CHAMP_PORTAL_URL = "https://portal.example.test"


@pytest.fixture
def enqueued(monkeypatch):
    """django-q2's async_task, run at once (no cluster): the list of (func, args) enqueued."""
    calls = []

    def fake(func, *args, **kwargs):
        calls.append((func, args))
        assert func == notifications.FAILED_TASK
        notifications.notify_run_failed(*args)

    monkeypatch.setattr(notifications, "async_task", fake)
    return calls


def wants(user, *, on_failure=False, on_stuck=False, email=""):
    return NotificationSettings.objects.create(
        user=user, on_failure=on_failure, on_stuck=on_stuck, email=email
    )


def fail(run, *, capture, source=EventSource.POLL, seen=RunStatus.PENDING):
    with capture(execute=True):
        return lifecycle.record_status(
            run,
            seen=seen,
            new=RunStatus.FAILED,
            source=source,
            output={"error": "Step 'Validate' failed: simulated failure"},
        )


# --- Failures ----------------------------------------------------------------------------------


def test_a_failed_run_emails_the_person_who_started_it(
    olivia, org_a, make_run, enqueued, mailoutbox, django_capture_on_commit_callbacks, preset_a
):
    wants(olivia, on_failure=True, email="olivia@example.test")
    run = make_run(org_a, triggered_by=olivia, preset=preset_a)

    fail(run, capture=django_capture_on_commit_callbacks)

    assert enqueued == [(notifications.FAILED_TASK, (run.pk,))]
    [email] = mailoutbox
    assert email.to == ["olivia@example.test"]
    assert email.from_email == "portal@example.test"
    assert email.subject == f"[Champ Portal] Run #{run.pk} failed: Echo hello"
    assert "Step 'Validate' failed: simulated failure" in email.body
    assert f"https://portal.example.test/runs/{run.pk}/" in email.body
    assert "https://portal.example.test/account/notifications/" in email.body
    note = RunNotification.objects.get()
    assert (note.run, note.user, note.kind, note.sent_at is not None) == (
        run,
        olivia,
        NotificationKind.FAILED,
        True,
    )


def test_the_account_address_is_used_when_none_is_set(
    olivia, org_a, make_run, enqueued, mailoutbox, django_capture_on_commit_callbacks
):
    olivia.email = "o@account.test"
    olivia.save()
    wants(olivia, on_failure=True)
    fail(make_run(org_a, triggered_by=olivia), capture=django_capture_on_commit_callbacks)
    assert mailoutbox[0].to == ["o@account.test"]


def test_nothing_is_sent_or_enqueued_without_asking(
    olivia, alice, org_a, make_run, enqueued, mailoutbox, django_capture_on_commit_callbacks
):
    wants(alice, on_failure=True, email="alice@example.test")  # someone else's choice
    wants(olivia, on_stuck=True, email="olivia@example.test")  # stuck only
    fail(make_run(org_a, triggered_by=olivia), capture=django_capture_on_commit_callbacks)
    fail(make_run(org_a), capture=django_capture_on_commit_callbacks)  # nobody started it
    assert enqueued == [] and mailoutbox == []


def test_never_twice_for_one_run(
    olivia, org_a, make_run, enqueued, mailoutbox, django_capture_on_commit_callbacks
):
    wants(olivia, on_failure=True, email="olivia@example.test")
    run = make_run(org_a, triggered_by=olivia)
    fail(run, capture=django_capture_on_commit_callbacks)
    # A replayed webhook changes nothing; a redelivered task finds the claimed row.
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.observe_status(run, new=RunStatus.FAILED, source=EventSource.WEBHOOK)
    notifications.notify_run_failed(run.pk)
    notifications.notify_run_failed(run.pk)
    assert len(mailoutbox) == 1
    assert RunNotification.objects.count() == 1


def test_a_failed_send_is_recorded_and_the_status_change_stands(
    olivia, org_a, make_run, enqueued, mailoutbox, django_capture_on_commit_callbacks, monkeypatch
):
    wants(olivia, on_failure=True, email="olivia@example.test")
    run = make_run(org_a, triggered_by=olivia)

    def broken(*args, **kwargs):
        raise ConnectionRefusedError("SMTP server down")

    monkeypatch.setattr(notifications, "send_mail", broken)
    change = fail(run, capture=django_capture_on_commit_callbacks)

    assert change.recorded
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    note = RunNotification.objects.get()
    assert note.sent_at is None and "SMTP server down" in note.error
    monkeypatch.undo()
    notifications.notify_run_failed(run.pk)  # not retried: at most once
    assert mailoutbox == []


def test_a_broken_queue_never_fails_the_status_change(
    olivia, org_a, make_run, django_capture_on_commit_callbacks, monkeypatch
):
    wants(olivia, on_failure=True, email="olivia@example.test")
    run = make_run(org_a, triggered_by=olivia)

    def broken(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(notifications, "async_task", broken)
    change = fail(run, capture=django_capture_on_commit_callbacks)
    assert change.recorded
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED
    assert run.events.filter(to_status=RunStatus.FAILED).count() == 1


def test_the_email_waits_for_the_commit(
    olivia, org_a, make_run, enqueued, django_capture_on_commit_callbacks
):
    wants(olivia, on_failure=True, email="olivia@example.test")
    run = make_run(org_a, triggered_by=olivia)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        lifecycle.record_status(run, seen="pending", new="failed", source=EventSource.POLL)
    assert enqueued == []  # nothing before the commit
    assert len(callbacks) == 1
    callbacks[0]()
    assert enqueued == [(notifications.FAILED_TASK, (run.pk,))]


def test_only_failures_are_emailed(
    olivia, org_a, make_run, enqueued, mailoutbox, django_capture_on_commit_callbacks
):
    wants(olivia, on_failure=True, on_stuck=True, email="olivia@example.test")
    run = make_run(org_a, triggered_by=olivia)
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.record_status(run, seen="pending", new="completed", source=EventSource.POLL)
    assert enqueued == [] and mailoutbox == []


# --- Stuck runs ----------------------------------------------------------------------------------


def stuck_run(organisation, user, hours=3):
    changed = timezone.now() - timedelta(hours=hours)
    run = lifecycle.open_run(
        organisation=organisation, workflow_id=9, triggered_by=user, triggered_at=changed
    )
    lifecycle.record_status(
        run, seen="unknown", new="in_progress", source=EventSource.POLL, observed_at=changed
    )
    return run


def test_a_stuck_run_is_emailed_once(olivia, alice, org_a, mailoutbox):
    wants(olivia, on_stuck=True, email="olivia@example.test")
    mine = stuck_run(org_a, olivia)
    stuck_run(org_a, alice)  # alice did not ask
    stuck_run(org_a, olivia, hours=0)  # not stuck yet

    assert notifications.notify_stuck_runs() == "1 stuck-run emails sent"
    assert notifications.notify_stuck_runs() == "0 stuck-run emails sent"

    [email] = mailoutbox
    assert email.subject == f"[Champ Portal] Run #{mine.pk} looks stuck: workflow 9"
    assert "in progress with no change for 3 h 0 min (the limit is 1 h 0 min)" in email.body
    assert RunNotification.objects.get().kind == NotificationKind.STUCK


def test_the_stuck_email_schedule_is_created_once(db):
    from django_q.models import Schedule

    notifications.ensure_stuck_schedule()
    notifications.ensure_stuck_schedule()
    schedule = Schedule.objects.get(name=notifications.STUCK_SCHEDULE_NAME)
    assert (schedule.func, schedule.minutes, schedule.repeats) == (notifications.STUCK_TASK, 5, -1)


# --- The settings page ---------------------------------------------------------------------------


def test_the_settings_page_turns_emails_on_and_audits_it(client_for, victor):
    client = client_for(victor)
    page = client.get(reverse("notification_settings"))
    assert page.status_code == 200
    assert not NotificationSettings.objects.exists()  # a GET writes nothing

    response = client.post(
        reverse("notification_settings"),
        {"on_failure": "on", "email": "victor@example.test"},
    )

    assert response.status_code == 302
    prefs = NotificationSettings.objects.get(user=victor)
    assert (prefs.on_failure, prefs.on_stuck, prefs.address) == (
        True,
        False,
        "victor@example.test",
    )
    entry = AuditEntry.objects.get(action=AuditAction.NOTIFICATIONS_CHANGED)
    assert entry.actor == victor
    assert entry.changes["on_failure"] == [False, True]

    client.post(reverse("notification_settings"), {"email": "victor@example.test"})
    prefs.refresh_from_db()
    assert not prefs.on_failure
    assert AuditEntry.objects.filter(action=AuditAction.NOTIFICATIONS_CHANGED).count() == 2


def test_emails_need_an_address(client_for, victor):
    response = client_for(victor).post(reverse("notification_settings"), {"on_stuck": "on"})
    assert "enter one to send the emails to" in response.content.decode()
    assert not NotificationSettings.objects.exists()


def test_each_person_sees_and_changes_only_their_own(client_for, victor, alice):
    wants(alice, on_failure=True, email="alice@example.test")
    client = client_for(victor)
    assert (
        "alice@example.test" not in client.get(reverse("notification_settings")).content.decode()
    )
    client.post(reverse("notification_settings"), {"email": "v@example.test", "on_stuck": "on"})
    alice_prefs = NotificationSettings.objects.get(user=alice)
    assert (alice_prefs.on_failure, alice_prefs.email) == (True, "alice@example.test")
