"""My account's settings: which emails the portal sends me about my runs."""

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from runs.forms import NotificationSettingsForm
from runs.models import AuditAction, AuditEntry, NotificationSettings, RunNotification
from runs.request_info import client_ip


def notification_settings(request: HttpRequest) -> HttpResponse:
    """Turn the "my run failed" / "my run is stuck" emails on or off, and where they go."""
    current = NotificationSettings.objects.filter(user=request.user).first()
    instance = current or NotificationSettings(user=request.user)
    form = NotificationSettingsForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        changes = {
            name: [form.initial.get(name), form.cleaned_data[name]] for name in form.changed_data
        }
        with transaction.atomic():
            form.save()
            if changes:
                AuditEntry.objects.record(
                    action=AuditAction.NOTIFICATIONS_CHANGED,
                    actor=request.user,
                    target=form.instance,
                    changes=changes,
                    ip=client_ip(request),
                )
        messages.success(request, "Notification settings saved.")
        return redirect("notification_settings")
    context = {
        "form": form,
        "account_email": request.user.email,
        "recent": RunNotification.objects.filter(user=request.user).select_related("run")[:10],
    }
    return render(request, "runs/notification_settings.html", context)
