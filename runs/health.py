"""
Preset health: per preset, how often it ran, how often it worked, how long it
takes, and its last failure — computed with a few grouped queries for a whole
list of presets, never one query per preset.

Windows are by start time (``triggered_at``, covered by the
``(preset, -triggered_at)`` index): runs in the last 7 and 30 days, and of the
last 30 days' runs:

* success rate = completed ÷ (completed + failed + rejected); skipped,
  unknown and still-open runs are not counted either way;
* p50 / p95 duration (``finished_at - triggered_at``) of the completed runs,
  interpolated linearly between the two nearest values (SQL's
  ``percentile_cont``).

Percentiles — the trade-off. PostgreSQL computes them in the same grouped
query as the counts with ``percentile_cont(…) WITHIN GROUP (ORDER BY …)``:
exact over the whole window, one index range scan per preset. SQLite has no
percentile aggregate, so its durations come back as one ordered list per
preset and are interpolated in Python; to bound memory and time at a million
runs, only the newest ``SQLITE_SAMPLE`` completed runs of each preset in the
window are read (a window function keeps the newest per preset). Below that
many runs per month — every embedded deployment we expect — the numbers are
exact; above it they describe the most recent runs.

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
from django.db.models import (
    Aggregate,
    Count,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    Subquery,
    Window,
)
from django.db.models.functions import RowNumber
from django.utils import timezone

from runs.jsondiff import compact
from runs.models import Run, RunStatus, WorkflowPreset

SHORT_WINDOW = timedelta(days=7)
LONG_WINDOW = timedelta(days=30)
#: SQLite: newest completed runs per preset whose durations are read (see above).
SQLITE_SAMPLE = 5000
FAILURE_STATUSES = (RunStatus.FAILED, RunStatus.REJECTED)


class DurationSeconds(Func):
    """``finished_at - triggered_at`` in seconds, as a float (NULL while open)."""

    output_field = FloatField()

    def __init__(self, **extra):
        super().__init__(F("finished_at"), F("triggered_at"), **extra)

    def as_sql(self, compiler, connection, **extra_context):  # pragma: no cover - other DBs
        raise NotImplementedError(f"DurationSeconds is not written for {connection.vendor}")

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra_context,
        )

    def as_postgresql(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            template="EXTRACT(EPOCH FROM (%(expressions)s))::double precision",
            arg_joiner=" - ",
            **extra_context,
        )


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        # A float we chose, never user input: safe to inline.
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


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
    preset_ids: Iterable[int | None], *, now=None, window: timedelta = LONG_WINDOW
) -> dict[int, DurationStats]:
    """Per preset: completed runs started in ``window`` and their p50 / p95 duration."""
    ids = _ids(preset_ids)
    if not ids:
        return {}
    since = (now or timezone.now()) - window
    completed = Run.objects.filter(
        preset_id__in=ids,
        triggered_at__gte=since,
        status=RunStatus.COMPLETED,
        finished_at__isnull=False,
    ).order_by()
    if connection.vendor == "postgresql":
        rows = (
            completed.values("preset_id")
            .annotate(
                n=Count("pk"),
                p50=PercentileCont(DurationSeconds(), 0.5),
                p95=PercentileCont(DurationSeconds(), 0.95),
            )
            .values_list("preset_id", "n", "p50", "p95")
        )
        return {pk: DurationStats(n, p50, p95) for pk, n, p50, p95 in rows}
    return _sqlite_duration_stats(completed)


def _sqlite_duration_stats(completed) -> dict[int, DurationStats]:
    newest = (
        completed.annotate(
            seconds=DurationSeconds(),
            rank=Window(
                RowNumber(),
                partition_by=F("preset_id"),
                order_by=[F("triggered_at").desc(), F("pk").desc()],
            ),
        )
        .filter(rank__lte=SQLITE_SAMPLE)
        .values_list("preset_id", "seconds")
    )
    durations: dict[int, list[float]] = defaultdict(list)
    for pk, seconds in newest:
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
        .annotate(
            runs_30d=Count("pk"),
            runs_7d=Count("pk", filter=Q(triggered_at__gte=now - SHORT_WINDOW)),
            completed_30d=Count("pk", filter=Q(status=RunStatus.COMPLETED)),
            failed_30d=Count("pk", filter=Q(status__in=FAILURE_STATUSES)),
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
