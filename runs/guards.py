"""
Safeguards checked by ``run_trigger`` before a run is stored: the duplicate-run
guard and a preset's limit on runs in progress.

Both run inside the transaction that stores the run, after
``serialise_starts()``: on PostgreSQL an advisory lock per organisation and
workflow (SQLite's IMMEDIATE transactions already serialise every writer), so
two people pressing Run at the same moment cannot both slip under a limit or
both miss the other's identical run.
"""

import hashlib
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from runs import site_defaults
from runs.jsondiff import json_digest, json_equal
from runs.models import Organisation, Run, RunStatus, WorkflowPreset

#: How many recent runs with an equal input digest are compared with the new input.
MAX_CANDIDATES = 20
#: A run still ``unknown`` this young is probably being sent: it counts as in progress.
IN_FLIGHT = timedelta(minutes=2)


def serialise_starts(organisation_id: int, workflow_id: int) -> None:
    """Inside a transaction: one start of this organisation's workflow at a time."""
    if connection.vendor != "postgresql":
        return
    digest = hashlib.blake2b(f"start:{organisation_id}:{workflow_id}".encode(), digest_size=8)
    key = int.from_bytes(digest.digest(), "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def window_minutes(preset: WorkflowPreset | None) -> int:
    """The duplicate guard's window: the preset's setting, else the site default."""
    if preset is not None:
        return preset.duplicate_window_minutes
    return site_defaults.duplicate_window_minutes()


def recent_twin(
    *,
    organisation: Organisation,
    workflow_id: int,
    input: dict,
    minutes: int,
    now=None,
) -> Run | None:
    """
    The newest run of ``organisation`` with this workflow and an equal input,
    started in the last ``minutes`` (rejected runs never started and do not
    count). None when the window is 0.
    """
    if minutes <= 0:
        return None
    since = (now or timezone.now()) - timedelta(minutes=minutes)
    candidates = (
        Run.objects.filter(
            organisation=organisation,
            workflow_id=workflow_id,
            input_digest=json_digest(input),
            triggered_at__gte=since,
        )
        .exclude(status=RunStatus.REJECTED)
        .select_related("triggered_by")
        .only("pk", "input", "status", "triggered_at", "organisation_id", "triggered_by")
        .order_by("-triggered_at", "-pk")[:MAX_CANDIDATES]
    )
    for run in candidates:
        # Equal digests mean equal inputs; comparing costs little and makes sure.
        if json_equal(run.input, input):
            return run
    return None


def open_runs_of(preset: WorkflowPreset, now=None) -> int:
    """Runs of ``preset`` pending, in progress, suspended, or being sent right now."""
    now = now or timezone.now()
    open_count = Run.objects.filter(preset=preset).open().count()
    sending = Run.objects.filter(
        preset=preset, status=RunStatus.UNKNOWN, triggered_at__gte=now - IN_FLIGHT
    ).count()
    return open_count + sending


def ago(moment, now=None) -> str:
    """``40 s``, ``3 min``, ``1 h 5 min``: how long ago, in plain words."""
    seconds = max(int(((now or timezone.now()) - moment).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
