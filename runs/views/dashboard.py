"""The home page: my organisations, their presets, active and recent runs."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from runs.models import Membership, Organisation, Role, Run, WorkflowPreset, role_at_least


# never_cache: a page with Run buttons is fetched again on Back, so each button
# carries a fresh one-time nonce (a stale one would only find the old run).
@never_cache
def dashboard(request: HttpRequest) -> HttpResponse:
    organisations = Organisation.objects.for_user(request.user).order_by("name")
    runs = _my_runs(request.user)
    roles = dict(
        Membership.objects.filter(user=request.user).values_list("organisation_id", "role")
    )
    presets = (
        WorkflowPreset.objects.for_user(request.user)
        .live()
        .select_related("organisation")
        .order_by("organisation__name", "name")
    )
    for preset in presets:
        preset.can_run = role_at_least(roles.get(preset.organisation_id), Role.OPERATOR)
    context = {
        "organisations": organisations,
        "presets": presets,
        "can_run_somewhere": any(role_at_least(role, Role.OPERATOR) for role in roles.values()),
        "active_runs": runs.open()[:20],
        "recent_runs": runs[:10],
    }
    return render(request, "runs/dashboard.html", context)


@require_GET
def active_runs(request: HttpRequest) -> HttpResponse:
    """The dashboard's active-runs rows, refreshed by htmx while any run is open."""
    context = {"active_runs": _my_runs(request.user).open()[:20]}
    return render(request, "partials/active_runs.html", context)


def _my_runs(user):
    return Run.objects.for_user(user).select_related("organisation", "preset", "triggered_by")
