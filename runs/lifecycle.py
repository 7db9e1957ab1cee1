"""
The one door through which a run's status changes.

Whatever saw the change — the trigger response, a poll, a webhook — calls
``record_status()``. In one transaction it:

1. updates the run only if its status is still the one the caller saw
   (``UPDATE … WHERE status = seen``), so two workers that observe the same
   change record it once;
2. appends exactly one RunEvent for that change;
3. sets ``output``/``finished_at`` on final statuses, which are never left: a
   late poll or a duplicate webhook changes nothing.

A poll that sees no change writes nothing here. After a change to
``failed`` commits, ``runs.notifications.run_failed`` may enqueue an email
(``on_commit``, robust: it can never undo or fail the change).

What Champ sends is stored as it came, except for two things valid JSON may
carry that no database column can hold: NUL characters (``\\u0000``, refused by
PostgreSQL's jsonb and text) and unpaired surrogates (``\\ud800``, not UTF-8):
``storable()`` replaces them with U+FFFD, so one odd reply cannot make the
poller's whole batch fail again and again.
"""

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from runs.models import FINAL_STATUSES, OPEN_STATUSES, EventSource, Run, RunEvent, RunStatus

logger = logging.getLogger(__name__)

_UNSET: Any = object()

#: What json.dumps (ASCII) writes for a NUL character or a surrogate code point.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])", re.IGNORECASE)
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def _storable_text(text: str) -> str:
    return _UNSTORABLE_CHARS.sub("\ufffd", text)


def storable(value: Any) -> Any:
    """
    ``value`` (JSON data or text) with NUL characters and unpaired surrogates
    replaced by U+FFFD, in strings and in object keys; everything else as is.

    A Python string holds a surrogate code point only when it is unpaired
    (``json.loads`` joins a valid pair into one character).
    """
    if isinstance(value, str):
        return _storable_text(value)
    if not isinstance(value, dict | list):
        return value
    try:
        if not _SUSPECT_ESCAPE.search(json.dumps(value, default=str)):
            return value  # the common case, decided at C speed
    except (TypeError, ValueError, RecursionError):
        pass
    # Rebuilt without recursion (an output may be nested hundreds deep).
    root = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = _storable_text(item)
        elif isinstance(item, list):
            container[key] = item = list(item)
            stack.extend((item, index) for index in range(len(item)))
        elif isinstance(item, dict):
            container[key] = item = {
                _storable_text(k) if isinstance(k, str) else k: v for k, v in item.items()
            }
            stack.extend((item, k) for k in item)
    return root[0]


@dataclass(frozen=True)
class Change:
    """What ``record_status()`` did: ``recorded`` is False when nothing changed."""

    recorded: bool
    event: RunEvent | None = None


def open_run(*, snapshot: dict | None = None, message: str = "", **fields) -> Run:
    """
    Create a run in status ``unknown`` with its first event, before Champ is asked.

    Committed before the request goes out, so a crash mid-request leaves an
    honest ``unknown`` run rather than nothing at all.
    """
    now = timezone.now()
    fields.setdefault("triggered_at", now)
    with transaction.atomic():
        run = Run.objects.create(status=RunStatus.UNKNOWN, status_changed_at=now, **fields)
        RunEvent.objects.create(
            run=run,
            seq=1,
            from_status="",
            to_status=RunStatus.UNKNOWN,
            observed_at=now,
            source=EventSource.TRIGGER,
            snapshot=storable(snapshot),
            message=storable(message) or "Sending the trigger request to Champ.",
        )
    return run


def record_status(
    run: Run | int,
    *,
    seen: str,
    new: str,
    source: str,
    snapshot: dict | None = None,
    output: Any = _UNSET,
    error: str | None = None,
    message: str = "",
    observed_at: datetime | None = None,
    extra_fields: dict | None = None,
    seen_changed_at: datetime | None = None,
) -> Change:
    """
    Move a run from ``seen`` to ``new`` if it is still ``seen``; append one event.

    ``seen_changed_at``: the ``status_changed_at`` the caller read with
    ``seen``. Given, the run must not have changed at all since then: a poll
    that read "in progress" and is recorded only after others recorded
    "suspended" and "in progress" again is stale, although the status matches.

    ``extra_fields`` are written in the same conditional update (e.g. the
    ``champ_run_id`` the trigger response carries). Returns whether a change
    was recorded; the in-memory ``run`` (if given) is refreshed on success.
    """
    if new not in RunStatus.values:
        raise ValueError(f"unknown status {new!r}")
    run_id = run if isinstance(run, int) else run.pk
    if seen == new or seen in FINAL_STATUSES:
        return Change(recorded=False)

    now = observed_at or timezone.now()
    extra = {name: storable(value) for name, value in (extra_fields or {}).items()}
    values: dict[str, Any] = {"status": new, "status_changed_at": now, **extra}
    if new in FINAL_STATUSES:
        values.update(finished_at=now, next_poll_at=None, lease_owner="", lease_until=None)
    elif new not in OPEN_STATUSES:
        # `unknown`: nothing to poll until someone links the Champ run.
        values.update(next_poll_at=None)
    if output is not _UNSET:
        values["output"] = storable(output)
    if error is not None:
        values["error"] = storable(error)

    with transaction.atomic():
        unchanged = Run.objects.filter(pk=run_id, status=seen)
        if seen_changed_at is not None:
            unchanged = unchanged.filter(status_changed_at=seen_changed_at)
        updated = unchanged.exclude(status__in=FINAL_STATUSES).update(**values)
        if not updated:
            return Change(recorded=False)
        # The UPDATE above holds the row lock (PostgreSQL) or the database
        # write lock (SQLite, IMMEDIATE), so this max is stable.
        last_seq = RunEvent.objects.filter(run_id=run_id).aggregate(m=Max("seq"))["m"] or 0
        event = RunEvent.objects.create(
            run_id=run_id,
            seq=last_seq + 1,
            from_status=seen,
            to_status=new,
            observed_at=now,
            source=source,
            snapshot=storable(snapshot),
            message=storable(message),
        )
        if new == RunStatus.FAILED:
            # After the commit, outside this transaction; robust: a failure to
            # enqueue the email is logged and never undoes the status change.
            transaction.on_commit(_after_failure(run_id), robust=True)
    logger.info("run %s: %s → %s (%s)", run_id, seen, new, source)
    if isinstance(run, Run):
        run.refresh_from_db()
    return Change(recorded=True, event=event)


def _after_failure(run_id: int):
    """The on_commit callback for a failed run (a named function: Django logs its name)."""

    def notify_run_failed() -> None:
        from runs.notifications import run_failed

        run_failed(run_id)

    return notify_run_failed


def observe_status(
    run: Run | int,
    *,
    new: str,
    source: str,
    snapshot: dict | None = None,
    output: Any = _UNSET,
    error: str | None = None,
    message: str = "",
) -> Change:
    """
    Record that Champ now reports ``new`` for this run, whatever it was before.

    For observers that do not know the status the portal last stored (a
    webhook): reads it, then goes through ``record_status()``; if another
    writer got there in between, looks again. A final status is never left.
    """
    run_id = run if isinstance(run, int) else run.pk
    for _attempt in range(3):
        current = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
        if current is None or current == new or current in FINAL_STATUSES:
            return Change(recorded=False)
        change = record_status(
            run,
            seen=current,
            new=new,
            source=source,
            snapshot=snapshot,
            output=output,
            error=error,
            message=message,
        )
        if change.recorded:
            return change
    return Change(recorded=False)
