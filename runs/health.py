"""
Preset health: per preset, how often it ran, how often it worked, how long it
takes, and its last failure — computed with a few grouped queries for a whole
list of presets, never one query per preset.

Windows are by start time (``triggered_at``). Of the last 30 days' runs:

* runs in the last 7 and 30 days;
* success rate = completed ÷ (completed + failed + rejected); skipped,
  unknown and still-open runs are not counted either way;
* p50 / p95 duration (``finished_at - triggered_at``) of the completed runs,
  interpolated linearly between the two nearest values (SQL's
  ``percentile_cont``).

Cost at a million runs. The counts are one grouped query over the
``(preset, -triggered_at, status, finished_at)`` index, which covers it: the
rows themselves are never read. The percentiles are taken over each preset's
newest ``SAMPLE`` completed runs of the window — all of them for a preset
that ran fewer times than that in 30 days (exact), the most recent ones for a
busier preset — so their cost is bounded by the sample, not by the table:

* PostgreSQL: ``percentile_cont(…) WITHIN GROUP (ORDER BY …)`` over a
  ``LATERAL`` sub-select per preset (newest first, ``LIMIT SAMPLE``), in the
  database;
* SQLite has no percentile aggregate: the same samples come back as one
  ``UNION ALL`` of per-preset sub-selects (durations computed with
  ``julianday()`` in SQL) and are sorted and interpolated in Python — at most
  ``SAMPLE`` floats per preset cross the connection.

Both give the same numbers for the same data. The stuck-run limits use the
same function with a smaller sample (``runs.stuck``).

The last failure (status ``failed`` or ``rejected``, at any time) comes from
a partial index of failures per preset, so a preset that never fails does not
cost a walk through its successes.
"""

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone

from runs.jsondiff import compact
from runs.models import FAILURE_STATUS_LIST, Run, RunStatus, WorkflowPreset

SHORT_WINDOW = timedelta(days=7)
LONG_WINDOW = timedelta(days=30)
#: Percentiles describe at most this many of a preset's newest completed runs (see above).
SAMPLE = 1000
FAILURE_STATUSES = FAILURE_STATUS_LIST  # as the partial index has it (see models)


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks, like ``percentile_cont``."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class DurationStats:
    """Completed runs counted, and their median and 95th percentile duration in seconds."""

    completed: int = 0
    p50: float | None = None
    p95: float | None = None


@dataclass
class PresetHealth:
    runs_7d: int = 0
    runs_30d: int = 0
    completed_30d: int = 0
    failed_30d: int = 0
    p50: float | None = None
    p95: float | None = None
    last_failure: Run | None = None

    @property
    def success_rate(self) -> float | None:
        """Completed ÷ (completed + failed + rejected) over 30 days; None without any."""
        decided = self.completed_30d + self.failed_30d
        return self.completed_30d / decided if decided else None

    @property
    def success_percent(self) -> str:
        rate = self.success_rate
        return "—" if rate is None else f"{rate * 100:.0f} %"

    @property
    def p50_delta(self) -> timedelta | None:
        return None if self.p50 is None else timedelta(seconds=self.p50)

    @property
    def p95_delta(self) -> timedelta | None:
        return None if self.p95 is None else timedelta(seconds=self.p95)


def _ids(preset_ids: Iterable[int | None]) -> list[int]:
    return sorted({pk for pk in preset_ids if pk is not None})


def duration_stats(
    preset_ids: Iterable[int | None],
    *,
    now=None,
    window: timedelta = LONG_WINDOW,
    sample: int | None = None,
) -> dict[int, DurationStats]:
    """
    Per preset: its newest ``sample`` completed runs started in ``window``
    (how many) and their p50 / p95 duration. Presets without any are absent.
    """
    ids = _ids(preset_ids)
    if not ids:
        return {}
    since = (now or timezone.now()) - window
    sample = int(sample or SAMPLE)
    if connection.vendor == "postgresql":
        return _postgresql_duration_stats(ids, since, sample)
    return _sqlite_duration_stats(ids, since, sample)


def _postgresql_duration_stats(ids: list[int], since, sample: int) -> dict[int, DurationStats]:
    table = connection.ops.quote_name(Run._meta.db_table)
    sql = f"""
        SELECT p.id, count(*),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY s.seconds),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY s.seconds)
        FROM unnest(%s::bigint[]) AS p(id)
        CROSS JOIN LATERAL (
            SELECT EXTRACT(EPOCH FROM (r.finished_at - r.triggered_at))::double precision
                   AS seconds
            FROM {table} r
            WHERE r.preset_id = p.id AND r.status = %s AND r.triggered_at >= %s
                  AND r.finished_at IS NOT NULL
            ORDER BY r.triggered_at DESC
            LIMIT %s
        ) s
        GROUP BY p.id
    """  # noqa: S608 - the table name is ours; every value is a parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids, RunStatus.COMPLETED, since, sample])
        rows = cursor.fetchall()
    return {pk: DurationStats(n, p50, p95) for pk, n, p50, p95 in rows}


#: SQLite allows 500 terms in a compound SELECT.
_SQLITE_COMPOUND_LIMIT = 400


def _sqlite_duration_stats(ids: list[int], since, sample: int) -> dict[int, DurationStats]:
    table = connection.ops.quote_name(Run._meta.db_table)
    # One newest-first, index-only walk per preset, stopped by LIMIT.
    part = f"""
        SELECT * FROM (
            SELECT preset_id, (julianday(finished_at) - julianday(triggered_at)) * 86400.0
            FROM {table}
            WHERE preset_id = %s AND status = %s AND triggered_at >= %s
                  AND finished_at IS NOT NULL
            ORDER BY triggered_at DESC
            LIMIT {sample:d}
        )
    """  # noqa: S608 - the table name is ours; every value is a parameter
    since = connection.ops.adapt_datetimefield_value(since)
    durations: dict[int, list[float]] = defaultdict(list)
    for start in range(0, len(ids), _SQLITE_COMPOUND_LIMIT):
        chunk = ids[start : start + _SQLITE_COMPOUND_LIMIT]
        params = [value for pk in chunk for value in (pk, RunStatus.COMPLETED, since)]
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join([part] * len(chunk)), params)
            for pk, seconds in cursor.fetchall():
                # julianday() arithmetic is exact to well under a millisecond.
                durations[pk].append(round(max(seconds, 0.0), 3))
    stats = {}
    for pk, values in durations.items():
        values.sort()
        stats[pk] = DurationStats(len(values), percentile(values, 0.5), percentile(values, 0.95))
    return stats


def preset_health(preset_ids: Iterable[int | None], *, now=None) -> dict[int, PresetHealth]:
    """Health of each preset in ``preset_ids`` (every id gets an entry, zeros included)."""
    ids = _ids(preset_ids)
    if not ids:
        return {}
    now = now or timezone.now()
    health = {pk: PresetHealth() for pk in ids}
    counts = (
        Run.objects.filter(preset_id__in=ids, triggered_at__gte=now - LONG_WINDOW)
        .order_by()
        .values("preset_id")
        # COUNT(status) (never NULL), not COUNT(id): every column used is in
        # the index, so the rows are never read.
        .annotate(
            runs_30d=Count("status"),
            runs_7d=Count("status", filter=Q(triggered_at__gte=now - SHORT_WINDOW)),
            completed_30d=Count("status", filter=Q(status=RunStatus.COMPLETED)),
            failed_30d=Count("status", filter=Q(status__in=FAILURE_STATUSES)),
        )
    )
    for row in counts:
        entry = health[row["preset_id"]]
        entry.runs_7d, entry.runs_30d = row["runs_7d"], row["runs_30d"]
        entry.completed_30d, entry.failed_30d = row["completed_30d"], row["failed_30d"]
    for pk, stats in duration_stats(ids, now=now).items():
        health[pk].p50, health[pk].p95 = stats.p50, stats.p95
    for pk, run in last_failures(ids).items():
        health[pk].last_failure = run
    return health


def last_failures(preset_ids: Iterable[int | None]) -> dict[int, Run]:
    """Each preset's most recent failed or rejected run (two queries for any number)."""
    ids = _ids(preset_ids)
    if not ids:
        return {}
    newest_failure = (
        Run.objects.filter(preset_id=OuterRef("pk"), status__in=FAILURE_STATUSES)
        .order_by("-triggered_at")
        .values("pk")[:1]
    )
    by_preset = dict(
        WorkflowPreset.objects.filter(pk__in=ids)
        .annotate(failure_id=Subquery(newest_failure))
        .filter(failure_id__isnull=False)
        .values_list("pk", "failure_id")
    )
    runs = Run.objects.only(
        "pk", "preset_id", "status", "error", "output", "triggered_at", "finished_at"
    ).in_bulk(by_preset.values())
    for run in runs.values():
        run.reason = failure_reason(run)
    return {pk: runs[run_id] for pk, run_id in by_preset.items() if run_id in runs}


def failure_reason(run: Run) -> str:
    """Why a run failed, in one line: the portal's error, else Champ's ``error`` in the output."""
    if run.error:
        return run.error
    output = run.output
    if isinstance(output, dict) and isinstance(output.get("error"), str):
        return output["error"]
    return "" if output is None else compact(output)
