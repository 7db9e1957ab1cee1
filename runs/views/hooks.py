"""
Champ's webhook deliveries: ``POST /hooks/champ/<org-slug>/``.

Champ does not sign payloads; the receiver is authenticated by a credential
the organisation configures on Champ's side (CHAMP_API.md, "Webhooks"): here
a per-organisation secret sent as ``Authorization: Bearer <secret>`` or as the
basic-auth password. A final status goes through the lifecycle door like a
poll, so replays and out-of-order deliveries change nothing; any other status
only makes the run due for a poll now.
"""

import base64
import binascii
import json
import logging

from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from runs import lifecycle
from runs.models import (
    FINAL_STATUSES,
    AuditAction,
    AuditEntry,
    EventSource,
    Organisation,
    Run,
    RunStatus,
)
from runs.organisations import webhook_secret_matches
from runs.request_info import client_ip
from runs.tasks import kick_poller

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
CHAMP_STATUSES = {
    RunStatus.PENDING,
    RunStatus.IN_PROGRESS,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.SUSPENDED,
    RunStatus.SKIPPED,
}


def _presented_secret(request: HttpRequest) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt
@login_not_required
@require_POST
def champ_webhook(request: HttpRequest, slug: str) -> JsonResponse:
    organisation = Organisation.objects.filter(slug=slug).first()
    if organisation is None or not webhook_secret_matches(
        organisation, _presented_secret(request)
    ):
        if organisation is not None:
            AuditEntry.objects.record(
                action=AuditAction.WEBHOOK_REJECTED,
                actor_label="webhook",
                organisation=organisation,
                changes={"reason": "missing or wrong credential"},
                ip=client_ip(request),
            )
        # Same answer for an unknown organisation: the slug is not an oracle.
        return _error("missing or invalid credentials", 401)

    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        return _error(f"body larger than {MAX_BODY_BYTES} bytes", 413)
    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _error(f"body larger than {MAX_BODY_BYTES} bytes", 413)

    try:
        payload = json.loads(body)
        workflow_run = payload["data"]["workflow_run"]
        champ_run_id = workflow_run["id"]
        status = workflow_run["status"]
    except (ValueError, KeyError, TypeError):
        return _error("expected a Champ webhook event as JSON", 400)
    if not isinstance(champ_run_id, int) or isinstance(champ_run_id, bool):
        return _error("data.workflow_run.id must be an integer", 400)
    if status not in CHAMP_STATUSES:
        return _error("data.workflow_run.status is not a Champ status", 400)

    event = lifecycle.storable(str(payload.get("event", ""))[:64])
    run = Run.objects.filter(organisation=organisation, champ_run_id=champ_run_id).first()
    if run is None:
        AuditEntry.objects.record(
            action=AuditAction.WEBHOOK_UNKNOWN_RUN,
            actor_label="webhook",
            organisation=organisation,
            changes={
                "champ_run_id": champ_run_id,
                "status": status,
                "event": event,
            },
            ip=client_ip(request),
        )
        return JsonResponse({"recorded": False, "detail": "unknown run; ignored"}, status=202)

    if status not in FINAL_STATUSES:
        # Champ sends only terminal events (workflow_run.completed / .failed).
        # Anything else is taken as a hint to look now, never as a status of
        # its own: the poller asks Champ. A parked run stays parked.
        due = Run.objects.open().filter(pk=run.pk, next_poll_at__isnull=False)
        if due.update(next_poll_at=timezone.now()):
            transaction.on_commit(kick_poller, robust=True)
        return JsonResponse(
            {"recorded": False, "detail": "not a final status: the run is polled now"}
        )

    change = lifecycle.observe_status(
        run,
        new=status,
        source=EventSource.WEBHOOK,
        snapshot=workflow_run,
        output=workflow_run.get("output"),
        message=f"Webhook {event}",
    )
    return JsonResponse({"recorded": change.recorded})
