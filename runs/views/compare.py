"""
Compare two inputs side by side: two runs, a run and a preset version, or two
versions of a preset — as a structural diff (``runs.jsondiff``).

``/runs/compare/?run=12&run=34`` (the history's "compare selected") or
``/runs/compare/?a=run-12&b=preset-5-v3`` (``preset-5`` is its current
version). Every side is looked up through ``runs.access``: another
organisation's run or preset is a 404, whichever side it is on.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from runs import jsondiff
from runs.access import get_scoped_object
from runs.history import format_duration
from runs.models import PresetVersion, Run, WorkflowPreset

_SPEC = re.compile(r"^(?:run-)?#?(?P<run>\d+)$|^preset-(?P<preset>\d+)(?:-v(?P<version>\d+))?$")


class BadSpec(ValueError):
    pass


@dataclass
class Side:
    spec: str
    label: str
    url: str
    input: Any
    workflow_id: int
    organisation: Any
    run: Run | None = None
    version: PresetVersion | None = None
    facts: dict[str, str] = field(default_factory=dict)


def _side(user, spec: str) -> Side:
    match = _SPEC.match(spec.strip())
    if not match:
        raise BadSpec(spec)
    if match["run"]:
        run = get_scoped_object(
            Run.objects.select_related("preset", "preset_version", "triggered_by"),
            user,
            pk=int(match["run"]),
        )
        version = run.preset_version
        return Side(
            spec=f"run-{run.pk}",
            label=f"run #{run.pk}",
            url=run.get_absolute_url(),
            input=run.input,
            workflow_id=run.workflow_id,
            organisation=run.organisation,
            run=run,
            facts={
                "Organisation": run.organisation.name,
                "Workflow": str(run.workflow_id),
                "Preset": (
                    f"{run.preset.name} {version.label if version else ''}".strip()
                    if run.preset
                    else "—"
                ),
                "Status": run.get_status_display(),
                "Started": f"{run.triggered_at:%Y-%m-%d %H:%M:%S}",
                "By": run.triggered_by.get_username() if run.triggered_by else "—",
                "Duration": format_duration(run.duration) or "—",
            },
        )
    preset = get_scoped_object(WorkflowPreset.objects.all(), user, pk=int(match["preset"]))
    number = int(match["version"]) if match["version"] else preset.version
    version = (
        PresetVersion.objects.select_related("created_by")
        .filter(preset=preset, number=number)
        .first()
    )
    if version is None:
        raise Http404("No such preset version.")
    return Side(
        spec=f"preset-{preset.pk}-v{number}",
        label=f"preset “{version.name}” {version.label}",
        url=preset.get_absolute_url(),
        input=version.input,
        workflow_id=version.workflow_id,
        organisation=preset.organisation,
        version=version,
        facts={
            "Organisation": preset.organisation.name,
            "Workflow": str(version.workflow_id),
            "Preset": f"{version.name} {version.label}"
            + (" (current)" if number == preset.version else ""),
            "Status": "—",
            "Started": f"saved {version.created_at:%Y-%m-%d %H:%M:%S}",
            "By": version.created_by.get_username() if version.created_by else "—",
            "Duration": "—",
        },
    )


@require_GET
def run_compare(request: HttpRequest) -> HttpResponse:
    """Two inputs (and, for two runs, their outputs) side by side with their differences."""
    picked = request.GET.getlist("run")
    specs = picked if picked else [request.GET.get("a", ""), request.GET.get("b", "")]
    specs = [spec for spec in specs if spec.strip()]
    if len(specs) != 2:
        message = (
            "Choose exactly two runs to compare: tick two boxes in the history."
            if picked
            else "Choose two runs (or a run and a preset version) to compare."
        )
        return render(request, "runs/compare.html", {"error": message}, status=400)
    try:
        left, right = (_side(request.user, spec) for spec in specs)
    except BadSpec as exc:
        message = f"“{exc}” is not a run number (e.g. 12) or a preset version (preset-5-v3)."
        return render(request, "runs/compare.html", {"error": message}, status=400)
    facts = [
        (name, left.facts[name], right.facts[name], left.facts[name] != right.facts[name])
        for name in left.facts
    ]
    both_runs = left.run is not None and right.run is not None
    context = {
        "left": left,
        "right": right,
        "facts": facts,
        "input_changes": jsondiff.diff(left.input, right.input),
        "output_changes": (
            jsondiff.diff(left.run.output, right.run.output) if both_runs else None
        ),
        "swap_url": f"{reverse('run_compare')}?a={right.spec}&b={left.spec}",
    }
    context["input_summary"] = jsondiff.summary(context["input_changes"])
    return render(request, "runs/compare.html", context)
