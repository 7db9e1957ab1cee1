"""Audit log entries for authentication events."""

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from runs.models import AuditAction, AuditEntry
from runs.request_info import client_ip


@receiver(user_logged_in)
def audit_login(sender, request, user, **kwargs):
    AuditEntry.objects.record(action=AuditAction.LOGIN, actor=user, ip=client_ip(request))


@receiver(user_logged_out)
def audit_logout(sender, request, user, **kwargs):
    if user is not None:
        AuditEntry.objects.record(action=AuditAction.LOGOUT, actor=user, ip=client_ip(request))


@receiver(user_login_failed)
def audit_login_failed(sender, credentials, request=None, **kwargs):
    # `credentials` has the password already scrubbed by Django; keep the username only.
    AuditEntry.objects.record(
        action=AuditAction.LOGIN_FAILED,
        actor_label=str(credentials.get("username", ""))[:150] or "(blank)",
        ip=client_ip(request) if request is not None else None,
    )


@receiver(user_locked_out)
def audit_locked_out(sender, request, username, ip_address, **kwargs):
    AuditEntry.objects.record(
        action=AuditAction.LOGIN_LOCKED_OUT,
        actor_label=str(username or "")[:150] or "(blank)",
        ip=client_ip(request) if request is not None else ip_address,
    )
