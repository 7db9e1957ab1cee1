"""
Stuck runs: open runs that have not changed for far longer than they should.

A run is *stuck* when, since its last status change (``status_changed_at``):

* it has been ``pending`` or ``in_progress`` longer than its preset's limit —
  the preset's ``stuck_after_minutes`` when set, else 3 x the 95th percentile
  duration of the preset's completed runs of the last 30 days (its newest
  ``SAMPLE``, at least ``MIN_SAMPLE``), never below ``CHAMP_STUCK_MIN_MINUTES``; runs
  without a preset, or of a preset with too little history, use
  ``CHAMP_STUCK_DEFAULT_MINUTES``;
* or it has been ``suspended`` longer than the preset's
  ``suspended_limit_minutes`` (else ``CHAMP_STUCK_SUSPENDED_MINUTES``).

Time since the last change (not since the start) so that a run resumed after
a long approval is not flagged the moment it resumes.

``limits_for()`` computes the limits of a set of presets with a handful of
queries (their settings, one grouped percentile query); ``StuckLimits`` then
flags rows in Python (``is_stuck``) and filters querysets in SQL (``q``), so
list pages never query per row.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from runs import health, site_defaults
from runs.models import Run, RunStatus, WorkflowPreset

#: Statuses judged against the preset's usual duration.
ACTIVE_STATUSES = (RunStatus.PENDING, RunStatus.IN_PROGRESS)
#: A preset needs this many completed runs in 30 days for an automatic limit.
MIN_SAMPLE = 5
#: The automatic limit is this many times the 95th percentile duration.
P95_FACTOR = 3
#: ... of the preset's newest this-many completed runs of the 30 days (a bounded read).
SAMPLE = 200


@dataclass(frozen=True)
class StuckLimits:
    """How long a run may stay in a status, per preset (``None``: runs without one)."""

    active: dict[int, timedelta] = field(default_factory=dict)
    suspended: dict[int, timedelta] = field(default_factory=dict)
    default_active: timedelta = timedelta(minutes=60)
    default_suspended: timedelta = timedelta(days=1)

    def limit_for(self, run: Run) -> timedelta | None:
        if run.status in ACTIVE_STATUSES:
            return self.active.get(run.preset_id, self.default_active)
        if run.status == RunStatus.SUSPENDED:
            return self.suspended.get(run.preset_id, self.default_suspended)
        return None

    def is_stuck(self, run: Run, now=None) -> bool:
        limit = self.limit_for(run)
        if limit is None:
            return False
        return (now or timezone.now()) - run.status_changed_at > limit

    def q(self, now=None) -> Q:
        """A filter for stuck runs (combine with a scoped queryset)."""
        now = now or timezone.now()
        return Q(status__in=ACTIVE_STATUSES) & self._since_change(
            self.active, self.default_active, now
        ) | Q(status=RunStatus.SUSPENDED) & self._since_change(
            self.suspended, self.default_suspended, now
        )

    @staticmethod
    def _since_change(limits: dict[int, timedelta], default: timedelta, now) -> Q:
        # Presets sharing a limit share one term: the filter grows with the
        # number of distinct limits, not of presets.
        by_limit: dict[timedelta, list[int]] = defaultdict(list)
        for pk, limit in limits.items():
            by_limit[limit].append(pk)
        condition = Q(status_changed_at__lt=now - default) & ~Q(preset_id__in=list(limits))
        for limit, pks in sorted(by_limit.items()):
            condition |= Q(preset_id__in=sorted(pks), status_changed_at__lt=now - limit)
        return condition


def limits_for(preset_ids: Iterable[int | None], *, now=None) -> StuckLimits:
    """The limits of these presets (ids of open runs' presets; ``None`` is ignored)."""
    ids = sorted({pk for pk in preset_ids if pk is not None})
    floor = timedelta(minutes=site_defaults.stuck_min_minutes())
    default_active = timedelta(minutes=site_defaults.stuck_default_minutes())
    default_suspended = timedelta(minutes=site_defaults.stuck_suspended_minutes())
    active: dict[int, timedelta] = {}
    suspended: dict[int, timedelta] = {}
    automatic = []
    settings_rows = WorkflowPreset.objects.filter(pk__in=ids).values_list(
        "pk", "stuck_after_minutes", "suspended_limit_minutes"
    )
    for pk, stuck_after, suspended_limit in settings_rows:
        if stuck_after:
            active[pk] = timedelta(minutes=stuck_after)
        else:
            automatic.append(pk)
        if suspended_limit:
            suspended[pk] = timedelta(minutes=suspended_limit)
    for pk, stats in health.duration_stats(automatic, now=now, sample=SAMPLE).items():
        if stats.completed >= MIN_SAMPLE and stats.p95 is not None:
            active[pk] = max(timedelta(seconds=stats.p95 * P95_FACTOR), floor)
    return StuckLimits(
        active=active,
        suspended=suspended,
        default_active=default_active,
        default_suspended=default_suspended,
    )


def limits_for_open_runs(runs: QuerySet, *, now=None) -> StuckLimits:
    """The limits for every open run of ``runs`` (a scoped queryset)."""
    # Open runs are few: de-duplicated here. (A DISTINCT would tempt SQLite
    # into walking the preset index over every run instead of the open ones.)
    preset_ids = set(runs.open().order_by().values_list("preset_id", flat=True))
    return limits_for(preset_ids, now=now)


def stuck_runs(runs: QuerySet, *, now=None) -> QuerySet:
    """The stuck runs of ``runs`` (a scoped queryset), longest unchanged first."""
    now = now or timezone.now()
    limits = limits_for_open_runs(runs, now=now)
    return runs.open().filter(limits.q(now)).order_by("status_changed_at", "pk")


def flag(runs: Iterable[Run], *, now=None, limits: StuckLimits | None = None) -> list[Run]:
    """Set ``run.is_stuck`` and ``run.unchanged_for`` on each run (no query per row)."""
    runs = list(runs)
    now = now or timezone.now()
    if limits is None:
        limits = limits_for((run.preset_id for run in runs if run.is_open), now=now)
    for run in runs:
        run.is_stuck = run.is_open and limits.is_stuck(run, now)
        run.unchanged_for = now - run.status_changed_at if run.is_open else None
    return runs
