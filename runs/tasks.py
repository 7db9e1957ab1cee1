"""
The poller: django-q2 tasks that follow every open run until it is final.

django-q2 checks schedules only about every 30 s and has no countdown, so a
schedule cannot be the poll clock and one task per poll would flood the
broker. Instead a ``poll_sweep`` task loops for a bounded time (well under
the cluster's ``timeout``): it claims a batch of due runs under a lease, polls
them concurrently over one connection pool, records every change through
``runs.lifecycle``, sets each run's next poll, and re-enqueues itself while
runs are open. At most ``CHAMP_POLL_MAX_SWEEPS`` sweeps run at once (a
``SweepSlot`` row each, with a heartbeat); a one-minute watchdog schedule
restarts polling if every sweep died. Tasks carry no arguments, never tokens.
"""

import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone
from django_q.tasks import async_task

from runs import polling
from runs.models import OPEN_STATUSES, Run, SweepSlot

logger = logging.getLogger(__name__)

SWEEP_TASK = "runs.tasks.poll_sweep"
WATCHDOG_TASK = "runs.tasks.poll_watchdog"
WATCHDOG_SCHEDULE_NAME = "champ-portal: poll watchdog"
#: Kicks from one process within this window enqueue one sweep.
KICK_DEDUPE_SECONDS = 1.0
#: A sweep facing a backlog asks for a helper sweep at most this often.
SCALE_UP_SECONDS = 5.0


# --- Starting sweeps --------------------------------------------------------------


def _heartbeat_stale() -> timedelta:
    """A sweep whose heartbeat is older than this is presumed dead."""
    return timedelta(seconds=settings.CHAMP_POLL_HEARTBEAT_STALE_SECONDS)


def _ensure_slots() -> None:
    wanted = range(1, settings.CHAMP_POLL_MAX_SWEEPS + 1)
    if SweepSlot.objects.filter(number__in=wanted).count() < len(wanted):
        SweepSlot.objects.bulk_create(
            [SweepSlot(number=number) for number in wanted], ignore_conflicts=True
        )


def _free_slots(now=None):
    now = now or timezone.now()
    return SweepSlot.objects.filter(number__lte=settings.CHAMP_POLL_MAX_SWEEPS).filter(
        Q(owner="") | Q(heartbeat_at__lt=now - _heartbeat_stale()) | Q(heartbeat_at__isnull=True)
    )


def _pollable_runs():
    """Open runs with a next poll (a run parked after a refused poll waits for an admin)."""
    return Run.objects.open().filter(next_poll_at__isnull=False)


def kick_poller(*, dedupe: bool = True) -> bool:
    """
    Enqueue a sweep if one could start (a slot is free or stale).

    Called after a run is triggered (from ``transaction.on_commit``) so it is
    polled at once. A running sweep picks new runs up by itself, so with every
    slot busy nothing is enqueued.
    """
    # A burst of triggers needs one sweep, not one queued task each: a kick
    # in the last second from this process already asked for it. (Hand-overs
    # and the watchdog never skip: they are how polling keeps going.)
    if dedupe and not cache.add("champ-portal:poller-kicked", True, timeout=KICK_DEDUPE_SECONDS):
        return False
    _ensure_slots()
    if not _free_slots().exists():
        return False
    async_task(SWEEP_TASK, task_name="poll_sweep", group="poll_sweep")
    return True


def poll_watchdog() -> str:
    """Every minute: restart polling if open runs exist and no sweep is alive."""
    if not _pollable_runs().exists():
        return "no open runs"
    return "sweep enqueued" if kick_poller(dedupe=False) else "sweeps alive"


def ensure_watchdog_schedule(**kwargs) -> None:
    """Create the watchdog schedule idempotently (by name); run on post_migrate."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name=WATCHDOG_SCHEDULE_NAME,
        defaults={
            "func": WATCHDOG_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )


# --- The sweep --------------------------------------------------------------------


def _claim_slot(owner: str) -> int | None:
    _ensure_slots()
    now = timezone.now()
    for number in _free_slots(now).values_list("number", flat=True):
        claimed = (
            _free_slots(now)
            .filter(number=number)
            .update(owner=owner, heartbeat_at=now, started_at=now, polls=0)
        )
        if claimed:
            return number
    return None


def _heartbeat(number: int, owner: str, polls: int) -> bool:
    """Renew the slot; False if it was taken over (this sweep was presumed dead)."""
    return bool(
        SweepSlot.objects.filter(number=number, owner=owner).update(
            heartbeat_at=timezone.now(), polls=polls
        )
    )


def _release_slot(number: int, owner: str) -> None:
    SweepSlot.objects.filter(number=number, owner=owner).update(owner="", heartbeat_at=None)


def claim_due_runs(owner: str, *, limit: int, now=None) -> list[int]:
    """
    Lease up to ``limit`` due open runs to ``owner``; return their ids.

    PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` so concurrent sweeps take
    disjoint batches without waiting. SQLite: the transaction is IMMEDIATE
    (settings), so it already holds the write lock; the conditional UPDATE
    re-checks the lease either way.
    """
    now = now or timezone.now()
    lease_until = now + timedelta(seconds=settings.CHAMP_POLL_LEASE_SECONDS)
    due = (
        Run.objects.filter(next_poll_at__lte=now, status__in=OPEN_STATUSES)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("next_poll_at")
    )
    with transaction.atomic():
        ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        due.filter(pk__in=ids).update(lease_owner=owner, lease_until=lease_until)
    return list(Run.objects.filter(pk__in=ids, lease_owner=owner).values_list("pk", flat=True))


def _seconds_until_next_due(now) -> float:
    next_due = Run.objects.filter(next_poll_at__isnull=False, status__in=OPEN_STATUSES).aggregate(
        m=Min("next_poll_at")
    )["m"]
    if next_due is None:
        return -1.0
    return max(0.0, (next_due - now).total_seconds())


def poll_sweep(max_seconds: float | None = None, idle_exit_seconds: float = 5.0) -> str:
    """
    Poll due runs for up to ``max_seconds``, then hand over to a fresh sweep.

    Exits early once no run has been open for ``idle_exit_seconds``. Returns a
    one-line summary (stored by django-q2 as the task result).
    """
    owner = f"sweep-{uuid.uuid4().hex[:12]}"
    slot = _claim_slot(owner)
    if slot is None:
        return "no free sweep slot"
    max_seconds = settings.CHAMP_POLL_SWEEP_SECONDS if max_seconds is None else max_seconds
    started = time.monotonic()
    done = polling.BatchResult()
    idle_since = None
    last_scale_up = started
    try:
        with polling.Poller(owner=owner) as poller:
            # One batch in flight while the previous one is recorded.
            in_flight = None
            while time.monotonic() - started < max_seconds:
                if not _heartbeat(slot, owner, done.polls):
                    logger.warning("sweep %s lost its slot %s; stopping", owner, slot)
                    break
                ids = claim_due_runs(owner, limit=settings.CHAMP_POLL_BATCH_SIZE)
                if ids:
                    idle_since = None
                    if (
                        len(ids) == settings.CHAMP_POLL_BATCH_SIZE
                        and time.monotonic() - last_scale_up > SCALE_UP_SECONDS
                    ):
                        # A full batch means a backlog: let another sweep help
                        # (if a slot is free; with one slot this is a no-op).
                        last_scale_up = time.monotonic()
                        kick_poller(dedupe=False)
                    started_batch = poller.start(ids)
                    if in_flight is not None:
                        done += poller.record(in_flight)
                    in_flight = started_batch
                    continue
                if in_flight is not None:
                    # Record before waiting: its runs' next polls decide the wait.
                    done += poller.record(in_flight)
                    in_flight = None
                    continue
                wait = _seconds_until_next_due(timezone.now())
                if wait < 0:  # nothing open at all
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= idle_exit_seconds:
                        break
                    wait = 0.5
                time.sleep(min(max(wait, 0.02), 0.5))
            if in_flight is not None:
                done += poller.record(in_flight)
    finally:
        _release_slot(slot, owner)
    # Hand over while runs remain open. Checked after the slot is released, so
    # a run triggered meanwhile is seen either here or by its own kick.
    if _pollable_runs().exists():
        kick_poller(dedupe=False)
    elapsed = time.monotonic() - started
    summary = f"{owner}: {done.polls} polls, {done.changes} changes in {elapsed:.1f} s"
    logger.info(summary)
    return summary
