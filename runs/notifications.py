"""
Emails about a person's own runs — when one fails, when one is stuck — for
those who asked (``NotificationSettings``, off by default).

Never on the path of a status change:

* ``runs.lifecycle.record_status`` registers ``run_failed`` with
  ``transaction.on_commit(..., robust=True)`` when a run becomes ``failed``
  (whoever saw it: the poller or the webhook). After the commit it only
  checks whether the starter wants an email and enqueues a django-q2 task;
  an error there is logged, and the status change is already committed.
* The task ``notify_run_failed`` sends the email on a worker, through
  Django's email backend.
* Stuck runs are found every few minutes by the schedule
  ``champ-portal: stuck run emails`` (``notify_stuck_runs``), created after
  ``migrate`` like the poll watchdog.

At most one email per run, person and kind: a ``RunNotification`` row is
claimed (unique constraint) *before* sending, so two workers, a retried task
or a replayed webhook never send it twice. A failed send is recorded on that
row and not retried (at most once, rather than maybe twice).
"""

import logging

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from runs import health, site_defaults, stuck
from runs.history import format_duration
from runs.models import (
    NotificationKind,
    NotificationSettings,
    Run,
    RunNotification,
    RunStatus,
)

logger = logging.getLogger(__name__)

FAILED_TASK = "runs.notifications.notify_run_failed"
STUCK_TASK = "runs.notifications.notify_stuck_runs"
STUCK_SCHEDULE_NAME = "champ-portal: stuck run emails"
STUCK_CHECK_MINUTES = 5
#: At most this many stuck-run emails per check (the rest wait for the next one).
STUCK_BATCH = 200


def run_failed(run_id: int) -> bool:
    """
    After a run's failure is committed (``transaction.on_commit``): enqueue the
    email if the person who started it wants one. Returns whether it did.
    """
    wanted = Run.objects.filter(
        pk=run_id, triggered_by__notification_settings__on_failure=True
    ).exists()
    if wanted:
        async_task(FAILED_TASK, run_id, task_name=f"notify_failed_{run_id}", group="notify")
    return wanted


def notify_run_failed(run_id: int) -> str:
    """django-q2 task: the "your run failed" email."""
    run = _load(Run.objects.filter(pk=run_id))
    if run is None or run.status != RunStatus.FAILED:
        return f"run {run_id}: nothing to send"
    note = send_notification(run, NotificationKind.FAILED)
    return f"run {run_id}: {_outcome(note)}"


def notify_stuck_runs(now=None) -> str:
    """django-q2 task (scheduled): "your run is stuck" emails, once per run."""
    now = now or timezone.now()
    candidates = Run.objects.open().filter(triggered_by__notification_settings__on_stuck=True)
    limits = stuck.limits_for_open_runs(candidates, now=now)
    already = RunNotification.objects.filter(kind=NotificationKind.STUCK).values("run_id")
    due = candidates.filter(limits.q(now)).exclude(pk__in=already).order_by("status_changed_at")
    sent = 0
    for run in stuck.flag(_load(due, limit=STUCK_BATCH), now=now, limits=limits):
        note = send_notification(run, NotificationKind.STUCK, limit=limits.limit_for(run))
        sent += note is not None and note.sent_at is not None
    return f"{sent} stuck-run emails sent"


def send_notification(run: Run, kind: str, *, limit=None) -> RunNotification | None:
    """
    Claim the (run, person, kind) row, then send. None when the person does
    not want this email, has no address, or it was already claimed.
    """
    user = run.triggered_by
    if user is None or not user.is_active:
        return None
    prefs = NotificationSettings.objects.filter(user=user).first()
    wants = prefs is not None and (
        prefs.on_failure if kind == NotificationKind.FAILED else prefs.on_stuck
    )
    if not wants or not prefs.address:
        return None
    try:
        with transaction.atomic():
            note = RunNotification.objects.create(
                run=run, user=user, kind=kind, address=prefs.address
            )
    except IntegrityError:
        return None
    subject, body = _message(run, kind, limit=limit)
    try:
        send_mail(subject, body, None, [prefs.address])
    except Exception as exc:  # SMTP, DNS, …: record it, do not retry (never twice)
        logger.warning("Notification %s for run %s not sent: %s", kind, run.pk, exc)
        RunNotification.objects.filter(pk=note.pk).update(error=f"{type(exc).__name__}: {exc}")
        note.error = str(exc)
        return note
    note.sent_at = timezone.now()
    RunNotification.objects.filter(pk=note.pk).update(sent_at=note.sent_at)
    return note


def _message(run: Run, kind: str, *, limit=None) -> tuple[str, str]:
    what = _one_line(run.preset.name if run.preset else f"workflow {run.workflow_id}")
    link = site_defaults.portal_url() + run.get_absolute_url()
    started = f"{run.triggered_at:%Y-%m-%d %H:%M:%S %Z}".strip()
    if kind == NotificationKind.FAILED:
        subject = f"[Champ Portal] Run #{run.pk} failed: {what}"
        reason = health.failure_reason(run) or "Champ gave no reason."
        lines = [
            f"Run #{run.pk} ({what}, workflow {run.workflow_id}) that you started at "
            f"{started} in {run.organisation.name} failed.",
            "",
            f"Reason: {reason}",
        ]
    else:
        unchanged = format_duration(timezone.now() - run.status_changed_at)
        subject = f"[Champ Portal] Run #{run.pk} looks stuck: {what}"
        lines = [
            f"Run #{run.pk} ({what}, workflow {run.workflow_id}) that you started at "
            f"{started} in {run.organisation.name} has been "
            f"{run.get_status_display().lower()} with no change for {unchanged}"
            + (f" (the limit is {format_duration(limit)})." if limit else "."),
            "",
            "Check it on Champ's dashboard; the portal keeps polling it.",
        ]
    lines += ["", f"Run page: {link}", "", "You get these emails because you turned them on:"]
    lines.append(site_defaults.portal_url() + reverse("notification_settings"))
    return subject[:200], "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _load(queryset, *, limit: int | None = None):
    """One run (``limit`` None) or a list of at most ``limit``, with what the emails show."""
    queryset = queryset.select_related("organisation", "preset", "triggered_by")
    return queryset.first() if limit is None else list(queryset[:limit])


def _outcome(note: RunNotification | None) -> str:
    if note is None:
        return "not wanted, no address, or already sent"
    return "sent" if note.sent_at else f"not sent ({note.error})"


def ensure_stuck_schedule(**kwargs) -> None:
    """Create the stuck-run email schedule idempotently (by name); run on post_migrate."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name=STUCK_SCHEDULE_NAME,
        defaults={
            "func": STUCK_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": STUCK_CHECK_MINUTES,
            "repeats": -1,
        },
    )
