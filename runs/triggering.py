"""
Starting a run: the one place that asks Champ to start a workflow.

``run_trigger()`` is used by the preset Run buttons, the new-run form and
"run again". In order, it:

1. returns the run a form already started when its one-time
   ``submission_key`` was seen before (double click, browser resubmit);
2. picks the token (the one chosen, else the organisation's newest active
   one; none → ``NoActiveToken``, nothing stored, nothing sent);
3. checks the safeguards (``runs.guards``), serialised per organisation and
   workflow: a preset's limit on runs in progress (``OpenRunLimitReached``)
   and, unless ``confirm_duplicate``, an identical run (same organisation,
   workflow and input) started within the duplicate window
   (``DuplicateSuspected``: the caller asks "run anyway?" and calls again
   with ``confirm_duplicate=True`` and the same submission key);
4. commits the Run in status ``unknown`` with its first RunEvent, the preset
   version it used and the input paths that override that version, and the
   audit entry, *before* the HTTP request (a crash mid-request leaves an
   honest ``unknown`` run; no transaction is held open across the call);
5. sends the trigger (``runs.champ.trigger``) and records what Champ said
   through ``runs.lifecycle.record_status`` — the only way a status changes.

Outcomes (CHAMP_API.md; the API has no idempotency key, so nothing that may
have reached Champ is ever retried here):

* accepted → the status Champ returned (``pending``), ``champ_run_id`` and
  ``champ_url`` stored, the run due for polling at once, the poller kicked
  after commit;
* 401 → the token is flagged rejected, run ``rejected``;
* 404 / 422 → run ``rejected`` with Champ's error text;
* not sent (connection refused, DNS, connect timeout: ``champ.trigger``
  already retried once) → run ``rejected``: Champ never received it;
* 408 / 429 / 503 / a redirect answered to the POST → run ``rejected``: Champ
  answered and, by those codes' meaning, did not take the request;
* sent but no usable answer (read timeout, dropped connection, 500/502/504,
  a 2xx body that is not a run: ``ChampOutcomeUnknown``) → the run stays
  ``unknown`` with an explanation and a pointer to Champ's dashboard; never
  retried automatically.
"""

import logging
from dataclasses import dataclass
from typing import Literal

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from runs import champ, guards, jsondiff, lifecycle
from runs.access import require_role
from runs.crypto import TokenDecryptError
from runs.models import (
    ApiToken,
    AuditAction,
    AuditEntry,
    EventSource,
    Organisation,
    PresetVersion,
    Role,
    Run,
    RunStatus,
    WorkflowPreset,
)
from runs.organisations import token_mark_rejected
from runs.tasks import kick_poller

logger = logging.getLogger(__name__)

#: Where a person checks a workflow's runs at Champ (CHAMP_API.md, "Workflow ID").
DASHBOARD_WORKFLOW_URL = "https://dash.champ.ai/app/workflows/{workflow_id}"

Level = Literal["success", "info", "warning", "error"]


class TriggerRefused(Exception):
    """The run cannot be started as asked: nothing was stored, nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoActiveToken(TriggerRefused):
    """The organisation has no active API token; ``tokens_url`` is where to add one."""

    def __init__(self, organisation: Organisation) -> None:
        super().__init__(
            f"{organisation} has no active Champ API token, so nothing was sent. "
            "An admin of the organisation can add one on its tokens page."
        )
        self.organisation = organisation
        self.tokens_url = tokens_url(organisation)


class DuplicateSuspected(TriggerRefused):
    """An identical run (``twin``) was started within the duplicate window: ask first."""

    def __init__(self, twin: Run, *, user, minutes: int) -> None:
        self.twin = twin
        self.minutes = minutes
        self.ago = guards.ago(twin.triggered_at)
        if twin.triggered_by_id is None:
            self.who = "someone"
        elif twin.triggered_by_id == user.pk:
            self.who = "you"
        else:
            self.who = twin.triggered_by.get_username()
        super().__init__(
            f"An identical run (#{twin.pk}, {RunStatus(twin.status).label.lower()}) was started "
            f"{self.ago} ago by {self.who} — run anyway?"
        )


class OpenRunLimitReached(TriggerRefused):
    """The preset already has as many runs in progress as its limit allows."""

    def __init__(self, preset: WorkflowPreset, open_runs: int) -> None:
        self.preset = preset
        self.open_runs = open_runs
        super().__init__(
            f"Not started: “{preset}” already has {open_runs} run"
            f"{'' if open_runs == 1 else 's'} in progress and its limit is "
            f"{preset.max_open_runs}, so nothing was sent. Wait for one to finish, or raise "
            "the limit on the preset's page."
        )


@dataclass(frozen=True)
class TriggerOutcome:
    """What happened: the run (stored either way) and the message to show, with its level."""

    run: Run
    message: str
    level: Level
    #: True when the submission key had already started this run: nothing was sent.
    duplicate: bool = False

    @property
    def started(self) -> bool:
        """Champ accepted the request and created the run."""
        return self.run.champ_run_id is not None


def tokens_url(organisation: Organisation) -> str:
    """The organisation's tokens section."""
    return reverse("organisation_detail", args=[organisation.slug]) + "#tokens"


def dashboard_url(workflow_id: int) -> str:
    """Champ's dashboard page of a workflow, where its runs can be checked by hand."""
    return DASHBOARD_WORKFLOW_URL.format(workflow_id=workflow_id)


def pick_token(organisation: Organisation, token: ApiToken | None = None) -> ApiToken:
    """``token`` if it is an active token of ``organisation``, else the newest active one."""
    active = ApiToken.objects.active().filter(organisation=organisation)
    if token is not None:
        if token.organisation_id != organisation.pk or not active.filter(pk=token.pk).exists():
            raise TriggerRefused(
                f"The token “{token.label}” ({token.hint}) is not an active token of "
                f"{organisation}, so nothing was sent."
            )
        return token
    newest = active.order_by("-created_at", "-pk").first()
    if newest is None:
        raise NoActiveToken(organisation)
    return newest


def run_trigger(
    *,
    organisation: Organisation,
    workflow_id: int,
    input: dict,
    user,
    preset: WorkflowPreset | None = None,
    token: ApiToken | None = None,
    rerun_of: Run | None = None,
    submission_key: str | None = None,
    confirm_duplicate: bool = False,
    ip: str | None = None,
) -> TriggerOutcome:
    """
    Start ``workflow_id`` at Champ for ``organisation`` on behalf of ``user``.

    Returns the stored run and a plain-words message whatever Champ answered;
    raises ``TriggerRefused`` when nothing could be sent (``NoActiveToken``,
    ``OpenRunLimitReached``, or ``DuplicateSuspected`` unless
    ``confirm_duplicate``), and ``PermissionDenied`` / ``Http404`` when
    ``user`` may not run here.
    Must not be called inside a transaction: the run is committed before the
    HTTP request and nothing is held open while Champ answers.
    """
    require_role(user, organisation, Role.OPERATOR)
    if submission_key:
        existing = _run_for_submission(submission_key, user)
        if existing is not None:
            return _duplicate(existing)
    if preset is not None:
        if preset.organisation_id != organisation.pk:
            raise TriggerRefused(f"The preset “{preset}” belongs to another organisation.")
        if preset.archived:
            raise TriggerRefused(
                f"The preset “{preset}” is archived: unarchive it to run it, nothing was sent."
            )
    token = pick_token(organisation, token)
    action = AuditAction.RUN_AGAIN if rerun_of is not None else AuditAction.RUN_TRIGGERED

    try:
        with transaction.atomic():
            guards.serialise_starts(organisation.pk, workflow_id)
            version = _check_preset_limit(preset)
            twin = guards.recent_twin(
                organisation=organisation,
                workflow_id=workflow_id,
                input=input,
                minutes=guards.window_minutes(preset),
            )
            if twin is not None and not confirm_duplicate:
                raise DuplicateSuspected(twin, user=user, minutes=guards.window_minutes(preset))
            overrides = None
            if preset is not None:
                baseline = version.input if version is not None else preset.input
                overrides = jsondiff.changed_paths(baseline, input)
            run = lifecycle.open_run(
                organisation=organisation,
                workflow_id=workflow_id,
                input=input,
                preset=preset,
                preset_input=preset.input if preset is not None else None,
                preset_version=version,
                overrides=overrides,
                token=token,
                rerun_of=rerun_of,
                triggered_by=user,
                submission_key=submission_key or None,
                snapshot={"workflow_id": workflow_id, "token": token.hint},
                message=f"Sending the trigger request to Champ with the token {token.hint}.",
            )
            extra = {}
            if rerun_of is not None:
                extra["rerun_of"] = rerun_of.pk
            if version is not None:
                extra["preset_version"] = version.number
            if overrides:
                extra["overrides"] = overrides[:50]
            if twin is not None:
                # Started anyway, although an identical run had just been started.
                extra["duplicate_of"] = twin.pk
            AuditEntry.objects.record(
                action=action,
                actor=user,
                organisation=organisation,
                target=run,
                changes={
                    "workflow_id": workflow_id,
                    "preset": preset.name if preset is not None else None,
                    "preset_id": preset.pk if preset is not None else None,
                    "token": token.hint,
                    **extra,
                },
                ip=ip,
            )
    except IntegrityError:
        # The same form posted twice at once: the other request stored its run first.
        existing = _run_for_submission(submission_key, user) if submission_key else None
        if existing is None:
            raise
        return _duplicate(existing)
    return _send(run, token)


def _check_preset_limit(preset: WorkflowPreset | None) -> PresetVersion | None:
    """
    Lock the preset's row, refuse when its runs in progress reach its limit,
    and return the version the run starts from (its current one).
    """
    if preset is None:
        return None
    locked = (
        WorkflowPreset.objects.select_for_update()
        .only("pk", "name", "version", "max_open_runs")
        .get(pk=preset.pk)
    )
    if locked.max_open_runs:
        open_runs = guards.open_runs_of(locked)
        if open_runs >= locked.max_open_runs:
            raise OpenRunLimitReached(locked, open_runs)
    return PresetVersion.objects.filter(preset=locked, number=locked.version).first()


# --- Sending and recording ---------------------------------------------------------


# Below this frame the plaintext token is a local (here, in runs.champ, in httpx):
# an error report (mail_admins with include_html) shows none of their values.
@sensitive_variables()
def _send(run: Run, token: ApiToken) -> TriggerOutcome:
    organisation = run.organisation
    workflow_id = run.workflow_id
    who = f"“{token.label}” ({token.hint})"
    try:
        secret = token.reveal()
    except TokenDecryptError:
        text = (
            f"Not started: the token {who} cannot be decrypted with the portal's current keys — "
            "the token needs re-entry. Nothing was sent to Champ."
        )
        return _close(run, RunStatus.REJECTED, text, snapshot={"error": "token_decrypt_failed"})

    try:
        answer = champ.trigger(
            base_url=organisation.api_base_url,
            token=secret,
            workflow_id=workflow_id,
            input=run.input,
        )
    except champ.ChampAuthError as exc:
        token_mark_rejected(token)
        if exc.status_code is None:  # refused by the client before sending
            text = f"Not started: the token {who} is malformed — re-enter it."
        else:
            text = f"Champ rejected the token {who} — re-enter it. The run was not started."
        return _close(run, RunStatus.REJECTED, text, exc=exc)
    except champ.ChampNotFound as exc:
        _mark_used(token)
        text = f"Not started: workflow {workflow_id} not found or not published at Champ."
        return _close(run, RunStatus.REJECTED, text, exc=exc)
    except champ.ChampNotRunnable as exc:
        _mark_used(token)
        text = (
            f"Not started: workflow {workflow_id} cannot be started through the API "
            "(e.g. ticketing workflows)."
        )
        return _close(run, RunStatus.REJECTED, text, exc=exc)
    except champ.ChampOutcomeUnknown as exc:
        return _unknown(run, exc)
    except champ.ChampUnavailable as exc:
        if exc.not_sent:
            text = (
                f"Not started: Champ could not be reached at {organisation.api_base_url}, "
                "so it did not receive the request."
            )
        else:
            # 408/429/503 or a redirect: Champ (or its front door) answered and, by
            # those codes' meaning, did not take the request. (500/502/504, which
            # may hide a created run, arrive as ChampOutcomeUnknown instead.)
            text = (
                "Not started: Champ answered "
                f"{_http(exc)} and did not take the request. Try again later."
            )
        return _close(run, RunStatus.REJECTED, text, exc=exc)
    except champ.ChampError as exc:
        # Permanent, and nothing was created: an invalid API base URL (nothing
        # sent) or another 4xx answer.
        text = f"Not started: the request to Champ failed ({_http(exc)})."
        return _close(run, RunStatus.REJECTED, text, exc=exc)
    except ValueError as exc:
        # Raised before sending (the forms prevent it: input not an object, bad id).
        return _close(
            run, RunStatus.REJECTED, f"Not started: {exc}.", snapshot={"error": str(exc)}
        )
    except Exception as exc:
        # A bug below us: the request may have gone out, so say "unknown", never retry.
        logger.exception("Unexpected error triggering run %s", run.pk)
        return _unknown(run, champ.ChampOutcomeUnknown(f"unexpected error: {type(exc).__name__}"))
    return _accepted(run, token, answer)


def _accepted(run: Run, token: ApiToken, answer: champ.WorkflowRun) -> TriggerOutcome:
    now = timezone.now()
    champ_url = answer.url if answer.url and len(answer.url) <= 500 else ""
    # Champ may already say the run is over: then its output is final too.
    output = {"output": answer.output} if answer.is_terminal else {}
    try:
        lifecycle.record_status(
            run,
            seen=RunStatus.UNKNOWN,
            new=answer.status,
            source=EventSource.TRIGGER,
            snapshot=answer.raw,
            message=f"Champ accepted the request as run {answer.id}.",
            extra_fields={"champ_run_id": answer.id, "champ_url": champ_url, "next_poll_at": now},
            **output,
        )
    except IntegrityError:
        # Another run of this organisation already has this Champ run id (e.g. a
        # restarted simulator numbering from the start again). Keep it honest.
        logger.warning(
            "Champ run id %s is already stored for org %s", answer.id, run.organisation_id
        )
        error = (
            f"Champ accepted the request as run {answer.id}, but another run of this "
            "organisation already has that Champ run id, so this one cannot be followed. "
            f"Check workflow {run.workflow_id} on Champ's dashboard."
        )
        Run.objects.filter(pk=run.pk).update(error=error)
        run.refresh_from_db()
        return TriggerOutcome(run=run, message=error, level="warning")
    _mark_used(token, now)
    if run.is_open:
        transaction.on_commit(kick_poller, robust=True)
    label = RunStatus(answer.status).label.lower()
    message = (
        f"Run started: Champ accepted workflow {run.workflow_id} as run {answer.id} ({label})."
    )
    return TriggerOutcome(run=run, message=message, level="success")


def _close(
    run: Run,
    status: str,
    text: str,
    *,
    exc: champ.ChampError | None = None,
    snapshot: dict | None = None,
) -> TriggerOutcome:
    """Record a refusal: the run is final, ``run.error`` keeps the reason and Champ's words."""
    error = text
    if exc is not None:
        error = f"{text} Champ said: {exc.message}"
        snapshot = _error_snapshot(exc)
    lifecycle.record_status(
        run,
        seen=RunStatus.UNKNOWN,
        new=status,
        source=EventSource.TRIGGER,
        snapshot=snapshot,
        error=error,
        message=text,
    )
    return TriggerOutcome(run=run, message=text, level="error")


def _unknown(run: Run, exc: champ.ChampError) -> TriggerOutcome:
    """Sent, no usable answer: the run stays ``unknown`` (no status change, so no event)."""
    text = (
        f"Champ may or may not have started workflow {run.workflow_id}: the request was sent "
        "but no usable answer came back. It will not be retried automatically — check the "
        f"workflow's runs on Champ's dashboard ({dashboard_url(run.workflow_id)}) before "
        "starting it again."
    )
    error = (
        f"Champ may or may not have created this run: {exc.message}. Check the runs of "
        f"workflow {run.workflow_id} on Champ's dashboard ({dashboard_url(run.workflow_id)})."
    )
    Run.objects.filter(pk=run.pk, status=RunStatus.UNKNOWN).update(error=error)
    run.refresh_from_db()
    return TriggerOutcome(run=run, message=text, level="warning")


def _duplicate(run: Run) -> TriggerOutcome:
    return TriggerOutcome(
        run=run,
        message=(
            f"This form was already submitted: here is run #{run.pk} it started. "
            "No second request was sent to Champ."
        ),
        level="info",
        duplicate=True,
    )


def _run_for_submission(submission_key: str, user) -> Run | None:
    run = Run.objects.select_related("organisation").filter(submission_key=submission_key).first()
    if run is not None and run.triggered_by_id != user.pk:
        # Someone else's nonce: do not reveal their run, do not start another.
        raise TriggerRefused("This form has already been used. Reload the page to start a run.")
    return run


def _mark_used(token: ApiToken, when=None) -> None:
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=when or timezone.now())


def _http(exc: champ.ChampError) -> str:
    reason = exc.message
    return f"HTTP {exc.status_code} ({reason})" if exc.status_code else reason


def _error_snapshot(exc: champ.ChampError) -> dict:
    return {
        "error": exc.message,
        "type": type(exc).__name__,
        "status_code": exc.status_code,
    }
