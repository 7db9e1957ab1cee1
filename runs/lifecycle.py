"""
The one door through which a run's status changes.

Whatever saw the change — the trigger response, a webhook — calls
``record_status()``; the poller hands a whole batch to ``record_changes()``,
which ``record_status()`` is the one-change case of. In one transaction:

1. each run is changed only if it is still as the caller saw it (status
   ``seen``, read under lock), so two workers that observe the same change
   record it once;
2. exactly one RunEvent is appended per change;
3. final statuses set ``output``/``finished_at`` and are never left: a late
   poll or a duplicate webhook changes nothing.

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
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from runs.jsondiff import json_digest
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


@dataclass(frozen=True)
class StatusChange:
    """
    One observed change, for ``record_changes()``: run ``run_id`` moved from
    ``seen`` to ``new`` (``seen_changed_at``: the ``status_changed_at`` read
    with ``seen``; given, the run must not have changed at all since).
    """

    run_id: int
    seen: str
    new: str
    source: str
    observed_at: datetime
    seen_changed_at: datetime | None = None
    snapshot: Any = None
    output: Any = _UNSET
    error: str | None = None
    message: str = ""
    extra_fields: dict = field(default_factory=dict)

    def run_values(self) -> dict[str, Any]:
        """The run's columns this change writes."""
        values: dict[str, Any] = {
            "status": self.new,
            "status_changed_at": self.observed_at,
            **{name: storable(value) for name, value in self.extra_fields.items()},
        }
        if self.new in FINAL_STATUSES:
            values.update(
                finished_at=self.observed_at, next_poll_at=None, lease_owner="", lease_until=None
            )
        elif self.new not in OPEN_STATUSES:
            # `unknown`: nothing to poll until someone links the Champ run.
            values.update(next_poll_at=None)
        if self.output is not _UNSET:
            values["output"] = storable(self.output)
        if self.error is not None:
            values["error"] = storable(self.error)
        return values

    def event(self, seq: int) -> RunEvent:
        """The (unsaved) event recording this change as the run's ``seq``-th."""
        return RunEvent(
            run_id=self.run_id,
            seq=seq,
            from_status=self.seen,
            to_status=self.new,
            observed_at=self.observed_at,
            source=self.source,
            snapshot=storable(self.snapshot),
            message=storable(self.message),
        )


def open_run(*, snapshot: dict | None = None, message: str = "", **fields) -> Run:
    """
    Create a run in status ``unknown`` with its first event, before Champ is asked.

    Committed before the request goes out, so a crash mid-request leaves an
    honest ``unknown`` run rather than nothing at all.
    """
    now = timezone.now()
    fields.setdefault("triggered_at", now)
    fields["input_digest"] = json_digest(fields.get("input", {}))
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

    ``extra_fields`` are written with the change (e.g. the ``champ_run_id``
    the trigger response carries). Returns whether a change was recorded; the
    in-memory ``run`` (if given) is refreshed on success.
    """
    run_id = run if isinstance(run, int) else run.pk
    events = record_changes(
        [
            StatusChange(
                run_id=run_id,
                seen=seen,
                new=new,
                source=source,
                observed_at=observed_at or timezone.now(),
                seen_changed_at=seen_changed_at,
                snapshot=snapshot,
                output=output,
                error=error,
                message=message,
                extra_fields=extra_fields or {},
            )
        ]
    )
    if not events:
        return Change(recorded=False)
    if isinstance(run, Run):
        run.refresh_from_db()
    return Change(recorded=True, event=events[0])


def record_changes(changes: Sequence[StatusChange]) -> list[RunEvent]:
    """
    Record observed changes in one transaction; return the events written.

    A change applies only while its run is still as the observer saw it
    (status ``seen``, unchanged since ``seen_changed_at`` when given) and not
    final, so two workers that observe the same change record it once. The
    runs are read under lock first (``SELECT … FOR UPDATE`` on PostgreSQL;
    on SQLite the IMMEDIATE transaction already holds the write lock), so the
    check holds until the commit. Then one ``executemany`` per set of written
    columns and one multi-row INSERT of events: a poll batch's hundreds of
    changes cost a handful of statements, not several each.
    """
    for change in changes:
        if change.new not in RunStatus.values:
            raise ValueError(f"unknown status {change.new!r}")
    candidates = [c for c in changes if c.seen != c.new and c.seen not in FINAL_STATUSES]
    if not candidates:
        return []
    with transaction.atomic():
        current = {
            pk: (status, changed_at)
            for pk, status, changed_at in Run.objects.filter(pk__in={c.run_id for c in candidates})
            .order_by("pk")  # a stable lock order between concurrent batches
            .select_for_update()
            .values_list("pk", "status", "status_changed_at")
        }
        applied = []
        for change in candidates:
            status, changed_at = current.get(change.run_id, (None, None))
            if status != change.seen or status in FINAL_STATUSES:
                continue
            if change.seen_changed_at is not None and changed_at != change.seen_changed_at:
                continue
            applied.append(change)
            current[change.run_id] = (change.new, change.observed_at)
        if not applied:
            return []
        _write_runs(applied)
        events = _append_events(applied)
        for change in applied:
            if change.new == RunStatus.FAILED:
                # After the commit, outside this transaction; robust: a failure to
                # enqueue the email is logged and never undoes the status change.
                transaction.on_commit(_after_failure(change.run_id), robust=True)
    for change in applied:
        logger.info("run %s: %s → %s (%s)", change.run_id, change.seen, change.new, change.source)
    return events


def _write_runs(changes: list[StatusChange]) -> None:
    """One ``executemany`` per set of written columns (a poll batch has two or three)."""
    by_columns: dict[tuple[str, ...], list[tuple[int, dict]]] = defaultdict(list)
    for change in changes:
        values = change.run_values()
        by_columns[tuple(values)].append((change.run_id, values))
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for names, rows in by_columns.items():
            fields = [Run._meta.get_field(name) for name in names]
            assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
            # Identifiers are the model's own columns, quoted; every value is a parameter.
            sql = (
                f"UPDATE {quote(Run._meta.db_table)} SET {assignments} "  # noqa: S608
                f"WHERE {quote(Run._meta.pk.column)} = %s"
            )
            cursor.executemany(
                sql,
                [
                    [f.get_db_prep_save(values[f.name], connection) for f in fields] + [run_id]
                    for run_id, values in rows
                ],
            )


def _append_events(changes: list[StatusChange]) -> list[RunEvent]:
    """One event per change, numbered after the run's last (stable: the runs are locked)."""
    last_seq = dict(
        RunEvent.objects.filter(run_id__in={c.run_id for c in changes})
        .order_by()
        .values("run_id")
        .annotate(last=Max("seq"))
        .values_list("run_id", "last")
    )
    events = []
    for change in changes:
        last_seq[change.run_id] = last_seq.get(change.run_id, 0) + 1
        events.append(change.event(last_seq[change.run_id]))
    return RunEvent.objects.bulk_create(events)


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
