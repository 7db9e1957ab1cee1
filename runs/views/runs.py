"""
Run pages: the new-run form (also opened from shared links), run again, the
duplicate guard's "run anyway?" page, the run page and its live fragment, and
saving a run's input as a preset.
"""

from dataclasses import dataclass

from django.contrib import messages
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from runs import jsondiff, sharing, stuck
from runs import presets as preset_actions
from runs.access import get_scoped_object
from runs.forms import RunForm, SavePresetForm, clean_submission_key, new_submission_key
from runs.models import Organisation, Role, Run, WorkflowPreset, role_at_least
from runs.request_info import client_ip
from runs.triggering import (
    DuplicateSuspected,
    NoActiveToken,
    TriggerOutcome,
    TriggerRefused,
    dashboard_url,
    run_trigger,
)

_RUN_RELATED = (
    "organisation",
    "preset",
    "preset_version",
    "token",
    "triggered_by",
    "rerun_of",
)


@dataclass(frozen=True)
class Baseline:
    """What a run form is compared with: the original run, or the preset's version."""

    label: str
    organisation: Organisation
    workflow_id: int
    input: dict


def flash_outcome(request: HttpRequest, outcome: TriggerOutcome) -> None:
    """Show what ``run_trigger`` did as a message of the matching level."""
    getattr(messages, outcome.level)(request, outcome.message)


def render_duplicate(
    request: HttpRequest,
    exc: DuplicateSuspected,
    *,
    action: str,
    fields: list[tuple[str, str]],
    cancel_url: str,
) -> HttpResponse:
    """
    The duplicate guard's question: "an identical run was started 40 s ago by
    Ana — run anyway?". Its form posts the same submission again with
    ``confirm_duplicate=1`` and the same one-time key, so the override starts
    one run however often it is clicked.
    """
    fields = [(name, value) for name, value in fields if name != "submission_key"]
    key = clean_submission_key(request.POST.get("submission_key")) or new_submission_key()
    fields.append(("submission_key", key))
    context = {"exc": exc, "twin": exc.twin, "action": action, "fields": fields}
    context["cancel_url"] = cancel_url
    return render(request, "runs/run_duplicate.html", context)


@never_cache  # the form carries a one-time nonce
def run_create(request: HttpRequest) -> HttpResponse:
    """
    The new-run form. ``?preset=<id>`` pre-fills it from a preset ("run with
    different input"); a shared link adds ``input.<key>=…`` / ``input=…`` (or
    ``organisation=<slug>&workflow=<id>`` without a preset). Only ever
    pre-fills: the run starts when the form is posted.
    """
    preset = None
    initial: dict = {}
    baseline = None
    if preset_id := request.GET.get("preset"):
        preset = get_scoped_object(
            WorkflowPreset.objects.all(), request.user, Role.OPERATOR, pk=_int_or_404(preset_id)
        )
        initial = {
            "organisation": preset.organisation_id,
            "workflow_id": preset.workflow_id,
            "input": preset.input,
        }
        baseline = Baseline(
            f"the preset “{preset.name}” v{preset.version}",
            preset.organisation,
            preset.workflow_id,
            preset.input,
        )
    prefill = None
    if request.method == "GET":
        prefill = sharing.prefill_input(request.GET, base=initial.get("input", {}))
        if prefill.used:
            initial["input"] = prefill.input
        if workflow := request.GET.get("workflow"):
            prefill.used = True
            initial["workflow_id"] = workflow
        if slug := request.GET.get("organisation"):
            prefill.used = True
            organisation = (
                Organisation.objects.for_user(request.user, Role.OPERATOR)
                .filter(slug=slug)
                .first()
            )
            if organisation is None:
                prefill.errors.append(
                    f"You cannot start runs in an organisation called “{slug}”: choose one below."
                )
            else:
                initial["organisation"] = organisation.pk
    return _run_form(request, initial=initial, preset=preset, baseline=baseline, prefill=prefill)


@never_cache
def run_again(request: HttpRequest, pk: int) -> HttpResponse:
    """The new-run form pre-filled with a past run's organisation, workflow and input."""
    original = get_scoped_object(
        Run.objects.select_related("preset"), request.user, Role.OPERATOR, pk=pk
    )
    initial = {
        "organisation": original.organisation_id,
        "workflow_id": original.workflow_id,
        "input": original.input,
    }
    baseline = Baseline(
        f"run #{original.pk}", original.organisation, original.workflow_id, original.input
    )
    return _run_form(
        request, initial=initial, preset=original.preset, rerun_of=original, baseline=baseline
    )


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Everything about one run: who, what, Champ's answer, the event timeline."""
    run = get_scoped_object(Run.objects.select_related(*_RUN_RELATED), request.user, pk=pk)
    context = _live_context(run)
    version = run.preset_version
    if version is not None:
        version_changes = jsondiff.diff(version.input, run.input)
    elif run.preset_input is not None:
        version_changes = jsondiff.diff(run.preset_input, run.input)
    else:
        version_changes = None
    context.update(
        can_run=role_at_least(run.my_role, Role.OPERATOR),
        preset_input_differs=version is None
        and run.preset_input is not None
        and not jsondiff.json_equal(run.preset_input, run.input),
        version=version,
        version_changes=version_changes,
        preset_is_newer=version is not None
        and run.preset is not None
        and run.preset.version > version.number,
        reruns=run.reruns.select_related("triggered_by").order_by("-triggered_at")[:10],
    )
    return render(request, "runs/run_detail.html", context)


@require_GET
def run_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The status and timeline block of the run page, refreshed by htmx while the run is open."""
    run = get_scoped_object(Run.objects.select_related(*_RUN_RELATED), request.user, pk=pk)
    return render(request, "partials/run_live.html", _live_context(run))


def _live_context(run: Run) -> dict:
    events = list(run.events.order_by("seq"))
    for event in events:
        event.since_trigger = event.observed_at - run.triggered_at
    if run.is_open:
        stuck.flag([run])
    return {"run": run, "events": events, "dashboard_url": dashboard_url(run.workflow_id)}


@never_cache
def run_save_preset(request: HttpRequest, pk: int) -> HttpResponse:
    """Save a run's input as a new preset, or as a new version of its preset (operators+)."""
    run = get_scoped_object(
        Run.objects.select_related("organisation", "preset"), request.user, Role.OPERATOR, pk=pk
    )
    form = SavePresetForm(request.POST or None, run=run)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        ip = client_ip(request)
        if data["mode"] == SavePresetForm.VERSION:
            before = run.preset.version
            preset = preset_actions.preset_new_version_from_run(
                preset=run.preset, run=run, input=data["input"], user=request.user, ip=ip
            )
            if preset.version == before:
                messages.info(request, f"“{preset}” v{before} already has this input.")
            else:
                messages.success(request, f"Saved as “{preset}” v{preset.version}.")
            return redirect(preset)
        try:
            preset = preset_actions.preset_create(
                organisation=run.organisation,
                name=data["name"],
                workflow_id=run.workflow_id,
                input=data["input"],
                description=data["description"],
                user=request.user,
                ip=ip,
                extra_changes={"from_run": run.pk},
            )
        except IntegrityError:
            form.add_error("name", "A preset with this name was just created. Choose another.")
        else:
            messages.success(request, f"Preset “{preset}” saved from run #{run.pk}.")
            return redirect(preset)
    return render(request, "runs/run_save_preset.html", {"form": form, "run": run})


def _run_form(
    request,
    *,
    initial: dict,
    preset=None,
    rerun_of=None,
    baseline: Baseline | None = None,
    prefill: sharing.Prefill | None = None,
) -> HttpResponse:
    initial["submission_key"] = new_submission_key()
    form = RunForm(request.POST or None, user=request.user, preset=preset, initial=initial)
    no_token = None
    share_url = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if "share" in request.POST:
            share_url = _share_url(request, data, preset=preset)
        elif "preview" not in request.POST:
            try:
                outcome = run_trigger(
                    organisation=data["organisation"],
                    workflow_id=data["workflow_id"],
                    input=data["input"],
                    user=request.user,
                    preset=data["preset"],
                    token=data["token"],
                    rerun_of=rerun_of,
                    submission_key=data["submission_key"],
                    confirm_duplicate=request.POST.get("confirm_duplicate") == "1",
                    ip=client_ip(request),
                )
            except NoActiveToken as exc:
                form.add_error(None, exc.message)
                no_token = exc
            except DuplicateSuspected as exc:
                fields = [(name, form.data.get(name, "")) for name in RunForm.RESUBMITTED]
                cancel = rerun_of or preset
                return render_duplicate(
                    request,
                    exc,
                    action=request.get_full_path(),
                    fields=fields,
                    cancel_url=cancel.get_absolute_url()
                    if cancel
                    else exc.twin.get_absolute_url(),
                )
            except TriggerRefused as exc:
                form.add_error(None, exc.message)
            else:
                flash_outcome(request, outcome)
                return redirect(outcome.run)
    context = {
        "form": form,
        "preset": preset,
        "rerun_of": rerun_of,
        "no_token": no_token,
        "baseline": baseline,
        "changes": _mark_changes(form, baseline),
        "prefill": prefill if prefill is not None and prefill.used else None,
        "share_url": share_url,
    }
    return render(request, "runs/run_form.html", context)


def _mark_changes(form: RunForm, baseline: Baseline | None) -> list[jsondiff.Change] | None:
    """
    Compare the form with its baseline: returns the input's changes and marks
    the organisation and workflow fields that differ (``bound_field.was``).
    """
    if baseline is None:
        return None
    if form.is_bound:
        form.is_valid()
        values = form.cleaned_data  # the fields that are valid
    else:
        values = form.initial
    organisation = values.get("organisation")
    organisation_id = getattr(organisation, "pk", organisation)
    if organisation_id is not None and organisation_id != baseline.organisation.pk:
        form["organisation"].was = baseline.organisation.name
    workflow = values.get("workflow_id")
    if workflow is not None and str(workflow) != str(baseline.workflow_id):
        form["workflow_id"].was = baseline.workflow_id
    current = values.get("input")
    if not isinstance(current, dict):
        return None
    return jsondiff.diff(baseline.input, current)


def _share_url(request, data: dict, *, preset) -> str:
    keep_preset = data.get("preset")
    if keep_preset is not None:
        query = sharing.share_query(
            preset=keep_preset,
            workflow_id=data["workflow_id"],
            input=data["input"],
            base=keep_preset.input,
        )
    else:
        query = sharing.share_query(
            organisation=data["organisation"],
            workflow_id=data["workflow_id"],
            input=data["input"],
        )
    return request.build_absolute_uri(f"{reverse('run_create')}?{query}")


def _int_or_404(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise Http404("No such preset.") from None
