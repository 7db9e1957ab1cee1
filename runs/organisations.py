"""
Writes that concern organisations: creation, members, API tokens, webhook
secret. Each function is one audited action inside one transaction.
"""

import hashlib
import hmac
import secrets

from django.db import transaction
from django.utils import timezone

from runs.models import (
    ApiToken,
    AuditAction,
    AuditEntry,
    Membership,
    Organisation,
    Role,
    Run,
)


@transaction.atomic
def organisation_create(*, name: str, slug: str, api_base_url: str, user, ip=None) -> Organisation:
    """Create an organisation with ``user`` as its first admin."""
    organisation = Organisation.objects.create(name=name, slug=slug, api_base_url=api_base_url)
    Membership.objects.create(user=user, organisation=organisation, role=Role.ADMIN)
    AuditEntry.objects.record(
        action=AuditAction.ORGANISATION_CREATED,
        actor=user,
        organisation=organisation,
        target=organisation,
        changes={"name": name, "api_base_url": api_base_url},
        ip=ip,
    )
    return organisation


@transaction.atomic
def organisation_update(*, form, user, ip=None) -> Organisation:
    """Save an OrganisationForm and audit what changed."""
    changes = {
        name: [form.initial.get(name), form.cleaned_data[name]] for name in form.changed_data
    }
    organisation = form.save()
    # A new base URL may be what runs parked after a refused poll were waiting for.
    _resume_polling(organisation)
    if changes:
        AuditEntry.objects.record(
            action=AuditAction.ORGANISATION_CHANGED,
            actor=user,
            organisation=organisation,
            target=organisation,
            changes=changes,
            ip=ip,
        )
    return organisation


@transaction.atomic
def member_add(*, organisation: Organisation, member, role: str, user, ip=None) -> Membership:
    membership = Membership.objects.create(user=member, organisation=organisation, role=role)
    AuditEntry.objects.record(
        action=AuditAction.MEMBER_ADDED,
        actor=user,
        organisation=organisation,
        target=membership,
        changes={"user": member.get_username(), "role": role},
        ip=ip,
    )
    return membership


@transaction.atomic
def member_change_role(*, membership: Membership, role: str, user, ip=None) -> None:
    old = membership.role
    if old == role:
        return
    membership.role = role
    membership.save(update_fields=["role"])
    AuditEntry.objects.record(
        action=AuditAction.MEMBER_ROLE_CHANGED,
        actor=user,
        organisation=membership.organisation,
        target=membership,
        changes={"user": membership.user.get_username(), "role": [old, role]},
        ip=ip,
    )


@transaction.atomic
def member_remove(*, membership: Membership, user, ip=None) -> None:
    AuditEntry.objects.record(
        action=AuditAction.MEMBER_REMOVED,
        actor=user,
        organisation=membership.organisation,
        target=membership,
        changes={"user": membership.user.get_username(), "role": membership.role},
        ip=ip,
    )
    membership.delete()


def is_last_admin(membership: Membership) -> bool:
    """An organisation must keep at least one admin."""
    return (
        membership.role == Role.ADMIN
        and not Membership.objects.filter(organisation=membership.organisation, role=Role.ADMIN)
        .exclude(pk=membership.pk)
        .exists()
    )


@transaction.atomic
def token_add(*, organisation: Organisation, label: str, secret: str, user, ip=None) -> ApiToken:
    """Seal and store a Champ token. ``secret`` is not kept anywhere else."""
    token = ApiToken(organisation=organisation, label=label, created_by=user)
    token.set_secret(secret)
    token.save()
    _resume_polling(organisation)
    AuditEntry.objects.record(
        action=AuditAction.TOKEN_ADDED,
        actor=user,
        organisation=organisation,
        target=token,
        changes={"label": label, "hint": token.hint},
        ip=ip,
    )
    return token


def _resume_polling(organisation: Organisation) -> None:
    """Runs that waited for a valid token are due again, and a sweep is kicked."""
    from runs.tasks import kick_poller

    waiting = Run.objects.open().filter(organisation=organisation)
    if waiting.update(next_poll_at=timezone.now()):
        transaction.on_commit(kick_poller)


@transaction.atomic
def token_revoke(*, token: ApiToken, user, ip=None) -> None:
    if token.revoked_at:
        return
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    AuditEntry.objects.record(
        action=AuditAction.TOKEN_REVOKED,
        actor=user,
        organisation=token.organisation,
        target=token,
        changes={"hint": token.hint},
        ip=ip,
    )


@transaction.atomic
def token_delete(*, token: ApiToken, user, ip=None) -> None:
    AuditEntry.objects.record(
        action=AuditAction.TOKEN_DELETED,
        actor=user,
        organisation=token.organisation,
        target=token,
        changes={"label": token.label, "hint": token.hint},
        ip=ip,
    )
    token.delete()


def token_mark_rejected(token: ApiToken) -> None:
    """Champ answered 401 with this token: stop using it until it is re-entered."""
    updated = ApiToken.objects.filter(pk=token.pk, rejected_at__isnull=True).update(
        rejected_at=timezone.now()
    )
    if updated:
        AuditEntry.objects.record(
            action=AuditAction.TOKEN_REJECTED,
            actor_label="system",
            organisation=token.organisation,
            target=token,
            changes={"hint": token.hint},
        )


def hash_webhook_secret(secret: str) -> str:
    # The secret is 256 random bits, so a fast hash is enough (no dictionary
    # to attack); SHA-256 keeps the per-request check cheap.
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def webhook_secret_create(*, organisation: Organisation, user, ip=None) -> str:
    """Generate a new webhook secret (replacing any old one); returned once, stored hashed."""
    secret = "whk_" + secrets.token_urlsafe(32)
    organisation.webhook_secret_hash = hash_webhook_secret(secret)
    organisation.webhook_secret_created_at = timezone.now()
    organisation.save(update_fields=["webhook_secret_hash", "webhook_secret_created_at"])
    AuditEntry.objects.record(
        action=AuditAction.WEBHOOK_SECRET_CREATED,
        actor=user,
        organisation=organisation,
        target=organisation,
        ip=ip,
    )
    return secret


def webhook_secret_matches(organisation: Organisation, presented: str) -> bool:
    """Constant-time check of a presented webhook credential."""
    if not organisation.webhook_secret_hash or not presented:
        return False
    return hmac.compare_digest(organisation.webhook_secret_hash, hash_webhook_secret(presented))
