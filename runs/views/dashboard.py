"""The home page: my organisations, their presets, active and recent runs."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from runs.models import Organisation, Run


def dashboard(request: HttpRequest) -> HttpResponse:
    organisations = Organisation.objects.for_user(request.user).order_by("name")
    runs = Run.objects.for_user(request.user).select_related(
        "organisation", "preset", "triggered_by"
    )
    context = {
        "organisations": organisations,
        "active_runs": runs.open()[:20],
        "recent_runs": runs[:10],
    }
    return render(request, "runs/dashboard.html", context)
