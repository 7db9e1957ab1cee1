"""
One sweep's polling machinery: poll a batch of leased runs concurrently and
record what Champ said.

The ORM is synchronous and must stay out of the event loop, so the loop runs
in a background thread owning one ``champ.AsyncChamp`` connection pool for
the whole sweep, and the calling (task) thread does all the database work:
load the batch → poll it concurrently in the loop → record changes through
``runs.lifecycle`` and set each run's next poll.
"""

import asyncio
import logging
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from runs import champ, lifecycle
from runs.crypto import TokenDecryptError
from runs.models import FINAL_STATUSES, OPEN_STATUSES, ApiToken, EventSource, Run, RunStatus
from runs.organisations import token_mark_rejected

logger = logging.getLogger(__name__)

#: How long a decrypted token is reused before its row is looked at again
#: (so a revocation takes effect within this time).
TOKEN_CACHE_SECONDS = 10.0
#: When an organisation has no usable token, look again this often.
NO_TOKEN_RETRY_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 300.0
#: The run table in the poller's raw SQL (lower-case like its columns: no quoting needed).
_RUN_TABLE = Run._meta.db_table
#: The run fields a poll reads.
POLL_FIELDS = (
    "id",
    "organisation_id",
    "workflow_id",
    "champ_run_id",
    "champ_url",
    "status",
    "triggered_at",
    "status_changed_at",
    "poll_failures",
    "lease_owner",
)


def next_poll_delay(
    *,
    age: float,
    since_change: float,
    status: str,
    failures: int = 0,
    retry_after: float | None = None,
    interval: float = 1.0,
    jitter: random.Random | None = None,
) -> float:
    """
    Seconds until a run should be polled again.

    Healthy, with the default ``interval`` of 1 s: about 1 s while the run is
    young or changed in the last 30 s, slower as it keeps running (2 s after a
    minute, 5 s after ten, 15 s after an hour); a run suspended for more than
    30 s waits on an outside signal, so 10 s. Failing: capped exponential back-off
    with jitter (about 1, 2, 4 … 300 s). Never sooner than ``retry_after``.
    """
    rng = jitter or random
    if failures:
        ceiling = min(MAX_BACKOFF_SECONDS, interval * 2.0 ** min(failures - 1, 16))
        delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    else:
        if since_change < 30:
            factor = 1.0
        elif status == RunStatus.SUSPENDED:
            factor = 10.0
        elif age < 60:
            factor = 1.0
        elif age < 600:
            factor = 2.0
        elif age < 3600:
            factor = 5.0
        else:
            factor = 15.0
        delay = interval * factor * rng.uniform(0.9, 1.1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@dataclass
class BatchResult:
    polls: int = 0
    changes: int = 0

    def __add__(self, other: "BatchResult") -> "BatchResult":
        return BatchResult(self.polls + other.polls, self.changes + other.changes)


@dataclass
class _Bookkeeping:
    """What one poll writes besides a status change: when, how it went, when next."""

    run_id: int
    polled_at: Any
    failures: int = 0
    error: str = ""
    next_poll_at: Any = None
    final: bool = False


@dataclass
class _Outcome:
    run: Run
    token: ApiToken | None
    result: Any  # champ.WorkflowRun, champ.ChampError, or a str (no usable token)


class _LoopThread:
    """An asyncio event loop in a daemon thread, fed coroutines from sync code."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine, timeout: float | None = None):
        return self.submit(coroutine).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class Poller:
    """
    Polls batches of runs for one sweep. Use as a context manager.

    ``transport`` lets tests poll the in-process simulator.
    """

    def __init__(self, *, owner: str, transport=None, max_connections: int | None = None):
        self.owner = owner
        self._transport = transport
        self._max_connections = max_connections or settings.CHAMP_POLL_CONCURRENCY
        self._tokens: dict[int, tuple[float, ApiToken | None, str | None]] = {}
        self._in_flight: set[Future] = set()

    def __enter__(self):
        self._loop = _LoopThread()
        self._champ = champ.AsyncChamp(
            max_connections=self._max_connections, transport=self._transport
        )
        self._loop.run(self._champ.__aenter__())
        return self

    def __exit__(self, *exc_info):
        # A batch left in flight (the sweep is failing): its leases expire.
        for polling in list(self._in_flight):
            polling.cancel()
        try:
            self._loop.run(self._champ.aclose(), timeout=10)
        finally:
            self._loop.stop()

    # --- tokens ---------------------------------------------------------------------

    def _token_for(self, run: Run) -> tuple[ApiToken | None, str | None]:
        """The token to poll with: the run's own while usable, else the org's newest."""
        cached = self._tokens.get(run.organisation_id)
        if cached and time.monotonic() - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1], cached[2]
        active = ApiToken.objects.active().filter(organisation_id=run.organisation_id)
        token = plaintext = None
        for candidate in active.order_by("-created_at"):
            try:
                plaintext = candidate.reveal()
            except TokenDecryptError:
                continue
            token = candidate
            break
        self._tokens[run.organisation_id] = (time.monotonic(), token, plaintext)
        return token, plaintext

    def _forget_token(self, organisation_id: int) -> None:
        self._tokens.pop(organisation_id, None)

    # --- one batch ------------------------------------------------------------------

    def poll(self, run_ids: list[int]) -> BatchResult:
        """Poll the leased runs ``run_ids`` once each and record the outcomes."""
        return self.record(self.start(run_ids))

    def start(self, run_ids: list[int]) -> Future:
        """
        Start polling the leased runs ``run_ids``; pass the result to ``record()``.

        The requests go out in the loop thread while the caller goes on: the
        sweep claims and starts the next batch before recording this one, so
        one batch's requests are in flight while the database work of the
        previous one is done.
        """
        runs = list(
            Run.objects.filter(pk__in=run_ids, lease_owner=self.owner)
            .select_related("organisation")
            # Not input/output: large JSON the poll does not need.
            .only(*POLL_FIELDS, "organisation__api_base_url")
        )
        jobs = []
        for run in runs:
            token, plaintext = self._token_for(run)
            jobs.append((run, token, plaintext))
        polling = self._loop.submit(self._poll_all(jobs))
        self._in_flight.add(polling)
        polling.add_done_callback(self._in_flight.discard)
        return polling

    def record(self, polling: Future) -> BatchResult:
        """Wait for a batch ``start()`` started and record what Champ said."""
        return self._record(polling.result())

    async def _poll_all(self, jobs) -> list[_Outcome]:
        async def one(run: Run, token: ApiToken | None, plaintext: str | None) -> _Outcome:
            if plaintext is None:
                return _Outcome(run, None, "no usable API token")
            try:
                result = await self._champ.fetch_run(
                    base_url=run.organisation.api_base_url,
                    token=plaintext,
                    workflow_id=run.workflow_id,
                    run_id=run.champ_run_id,
                    url=run.champ_url or None,
                )
            except champ.ChampError as exc:
                result = exc
            return _Outcome(run, token, result)

        return await asyncio.gather(*(one(*job) for job in jobs))

    def _record(self, outcomes: list[_Outcome]) -> BatchResult:
        now = timezone.now()
        rejected_tokens: dict[int, ApiToken] = {}
        used_tokens: set[int] = set()
        changes: list[lifecycle.StatusChange] = []
        bookkeeping: list[_Bookkeeping] = []
        for outcome in outcomes:
            self._assess(outcome, now, rejected_tokens, used_tokens, changes, bookkeeping)
        # One transaction per batch: one commit (one fsync on SQLite) for
        # hundreds of polls, the changes first (they release final runs).
        with transaction.atomic():
            events = lifecycle.record_changes(changes)
            self._write_bookkeeping(bookkeeping)
            if used_tokens:
                ApiToken.objects.filter(pk__in=used_tokens).update(last_used_at=now)
        for token in rejected_tokens.values():
            token_mark_rejected(token)
            self._forget_token(token.organisation_id)
        return BatchResult(polls=len(outcomes), changes=len(events))

    def _write_bookkeeping(self, rows: list[_Bookkeeping]) -> None:
        """
        Release the leases and set the next polls of a batch, in one statement
        for the runs still open and one for those that just went final.

        The hot path of the poller: most polls see no change. Guarded like an
        ORM update would be: only while this sweep still holds the lease, and
        never on a run that went final meanwhile (a webhook), whose
        ``next_poll_at`` stays NULL.
        """
        still_open = [row for row in rows if not row.final]
        went_final = [row for row in rows if row.final]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                self._bookkeeping_postgresql(cursor, still_open, went_final)
            else:
                self._bookkeeping_executemany(cursor, still_open, went_final)

    def _bookkeeping_postgresql(self, cursor, still_open, went_final) -> None:
        # One UPDATE … FROM unnest(arrays) per kind, whatever the batch size:
        # measured against executemany (one statement per run, pipelined),
        # it saves most of the server time of a batch.
        open_placeholders = ", ".join(["%s"] * len(OPEN_STATUSES))
        if still_open:
            cursor.execute(
                # Identifiers are constants; every value is a parameter.
                f"UPDATE {_RUN_TABLE} AS r SET last_polled_at = v.polled_at, "  # noqa: S608
                "poll_attempts = r.poll_attempts + 1, poll_failures = v.failures, "
                "last_poll_error = v.error, next_poll_at = v.next_poll_at, "
                "lease_owner = '', lease_until = NULL "
                "FROM unnest(%s::bigint[], %s::timestamptz[], %s::integer[], %s::text[], "
                "%s::timestamptz[]) AS v(id, polled_at, failures, error, next_poll_at) "
                f"WHERE r.id = v.id AND r.lease_owner = %s AND r.status IN ({open_placeholders})",
                [
                    [row.run_id for row in still_open],
                    [row.polled_at for row in still_open],
                    [row.failures for row in still_open],
                    [row.error for row in still_open],
                    [row.next_poll_at for row in still_open],
                    self.owner,
                    *sorted(OPEN_STATUSES),
                ],
            )
        if went_final:
            # The lifecycle already released the lease and cleared next_poll_at.
            cursor.execute(
                f"UPDATE {_RUN_TABLE} AS r SET last_polled_at = v.polled_at, "  # noqa: S608
                "poll_attempts = r.poll_attempts + 1, poll_failures = 0, last_poll_error = '' "
                "FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, polled_at) "
                "WHERE r.id = v.id",
                [[row.run_id for row in went_final], [row.polled_at for row in went_final]],
            )

    def _bookkeeping_executemany(self, cursor, still_open, went_final) -> None:
        # SQLite: executemany runs its loop in C, in process; no round trips to save.
        ops = connection.ops
        polled = (
            # Identifiers are constants; every value is a parameter.
            f"UPDATE {_RUN_TABLE} SET last_polled_at = %s, "  # noqa: S608
            "poll_attempts = poll_attempts + 1, poll_failures = %s, last_poll_error = %s"
        )
        open_placeholders = ", ".join(["%s"] * len(OPEN_STATUSES))
        statuses = sorted(OPEN_STATUSES)
        if still_open:
            cursor.executemany(
                f"{polled}, next_poll_at = %s, lease_owner = '', lease_until = NULL "
                f"WHERE id = %s AND lease_owner = %s AND status IN ({open_placeholders})",
                [
                    (
                        ops.adapt_datetimefield_value(row.polled_at),
                        row.failures,
                        row.error,
                        ops.adapt_datetimefield_value(row.next_poll_at),
                        row.run_id,
                        self.owner,
                        *statuses,
                    )
                    for row in still_open
                ],
            )
        if went_final:
            cursor.executemany(
                f"{polled} WHERE id = %s",
                [
                    (ops.adapt_datetimefield_value(row.polled_at), 0, "", row.run_id)
                    for row in went_final
                ],
            )

    def _assess(
        self, outcome: _Outcome, now, rejected_tokens, used_tokens, changes, bookkeeping
    ) -> None:
        """Turn one poll's outcome into a change (if any) and its bookkeeping row."""
        run, response = outcome.run, outcome.result
        age = (now - run.triggered_at).total_seconds()
        since_change = (now - run.status_changed_at).total_seconds()
        status = run.status
        failures, retry_after, error, parked = 0, None, "", False
        observed = {
            "run_id": run.pk,
            "seen": run.status,
            # Stale if the run changed since this poll read it (e.g. the lease
            # expired and another sweep recorded newer changes).
            "seen_changed_at": run.status_changed_at,
            "source": EventSource.POLL,
            "observed_at": now,
        }

        if isinstance(response, champ.WorkflowRun):
            if outcome.token is not None:
                used_tokens.add(outcome.token.pk)
            if response.status != run.status:
                extra = {"output": response.output} if response.status in FINAL_STATUSES else {}
                changes.append(
                    lifecycle.StatusChange(
                        new=response.status, snapshot=response.raw, **observed, **extra
                    )
                )
                status, since_change = response.status, 0.0
        elif isinstance(response, champ.ChampNotFound):
            # Champ no longer knows the run: close it rather than poll forever.
            changes.append(
                lifecycle.StatusChange(
                    new=RunStatus.FAILED,
                    snapshot={"http_status": 404, "error": response.message},
                    error=f"Champ answered 404 for this run: {response.message}",
                    message="Run not found at Champ",
                    **observed,
                )
            )
            status = RunStatus.FAILED
        elif isinstance(response, champ.ChampAuthError):
            rejected_tokens[outcome.token.pk] = outcome.token
            error = (
                f"Champ rejected the token {outcome.token.hint} (401). Polling resumes "
                "when the organisation has a valid token."
            )
            retry_after = NO_TOKEN_RETRY_SECONDS
        elif isinstance(response, champ.ChampError) and response.permanent:
            # Another 4xx (400, 403, 409, 410, 422 …) or an invalid base URL: the
            # same request would get the same answer, so it is not retried by
            # itself (only 429 and 408 are). The run stays as it was, parked
            # until an admin adds a token or saves the organisation.
            failures, parked = run.poll_failures + 1, True
            code = f"HTTP {response.status_code}: " if response.status_code else ""
            error = (
                f"Champ refused the status request ({code}{response.message}); it is not "
                "retried automatically. Polling resumes when an admin of the organisation "
                "adds a token or saves the organisation's settings."
            )
        elif isinstance(response, champ.ChampError):
            failures = run.poll_failures + 1
            retry_after = response.retry_after
            error = f"{response.message} (attempt {failures}; retrying with back-off)"
        else:  # no usable token
            error = (
                "No usable API token for this organisation: add or re-enter one on the "
                "organisation page. Polling resumes then."
            )
            retry_after = NO_TOKEN_RETRY_SECONDS

        if status in FINAL_STATUSES:
            bookkeeping.append(_Bookkeeping(run.pk, now, final=True))
        elif parked:
            bookkeeping.append(_Bookkeeping(run.pk, now, failures, error, next_poll_at=None))
        else:
            delay = next_poll_delay(
                age=age,
                since_change=since_change,
                status=status,
                failures=failures,
                retry_after=retry_after,
                interval=settings.CHAMP_POLL_INTERVAL_SECONDS,
            )
            next_poll_at = now + timedelta(seconds=delay)
            bookkeeping.append(_Bookkeeping(run.pk, now, failures, error, next_poll_at))


def poller_status() -> dict:
    """The poller at a glance, for ``manage.py poll_status`` and the dashboard."""
    from django.db.models import Count, Min

    from runs.models import SweepSlot

    now = timezone.now()
    open_runs = Run.objects.open()
    due = open_runs.filter(next_poll_at__lte=now)
    oldest = due.aggregate(m=Min("next_poll_at"))["m"]
    stale_after = settings.CHAMP_POLL_HEARTBEAT_STALE_SECONDS
    sweeps = []
    for slot in SweepSlot.objects.order_by("number"):
        age = (now - slot.heartbeat_at).total_seconds() if slot.heartbeat_at else None
        sweeps.append(
            {
                "number": slot.number,
                "owner": slot.owner,
                "polls": slot.polls,
                "heartbeat_age_seconds": age,
                "stale": bool(slot.owner) and (age is None or age > stale_after),
            }
        )
    return {
        "open_runs": open_runs.count(),
        "open_by_status": dict(
            open_runs.order_by()
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        ),
        "due_runs": due.count(),
        "oldest_overdue_seconds": (now - oldest).total_seconds() if oldest else None,
        "runs_with_poll_errors": open_runs.exclude(last_poll_error="").count(),
        "sweeps": sweeps,
    }
