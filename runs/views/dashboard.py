"""The home page: my organisations, their presets, stuck, active and recent runs."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from runs import stuck
from runs.models import Membership, Organisation, Role, Run, WorkflowPreset, role_at_least

#: Rows of the dashboard's stuck and active runs.
LISTED = 20


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
        "recent_runs": runs[:10],
        **_open_runs(runs),
    }
    return render(request, "runs/dashboard.html", context)


@require_GET
def active_runs(request: HttpRequest) -> HttpResponse:
    """The dashboard's active-runs rows, refreshed by htmx while any run is open."""
    context = _open_runs(_my_runs(request.user), with_stuck=False)
    return render(request, "partials/active_runs.html", context)


def _open_runs(runs, *, with_stuck: bool = True) -> dict:
    """Active runs (and stuck runs), flagged from one set of limits (no query per row)."""
    now = timezone.now()
    limits = stuck.limits_for_open_runs(runs, now=now)
    active = stuck.flag(runs.open()[:LISTED], now=now, limits=limits)
    if not with_stuck:
        return {"active_runs": active}
    stuck_rows = stuck.flag(
        runs.open().filter(limits.q(now)).order_by("status_changed_at", "pk")[:LISTED],
        now=now,
        limits=limits,
    )
    return {"active_runs": active, "stuck_runs": stuck_rows}


def _my_runs(user):
    return Run.objects.for_user(user).select_related("organisation", "preset", "triggered_by")
