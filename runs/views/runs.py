"""Run pages: the new-run form, run again, the run page and its live fragment."""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from runs.access import get_scoped_object
from runs.forms import RunForm, new_submission_key
from runs.models import Role, Run, WorkflowPreset, role_at_least
from runs.request_info import client_ip
from runs.triggering import (
    NoActiveToken,
    TriggerOutcome,
    TriggerRefused,
    dashboard_url,
    run_trigger,
)

_RUN_RELATED = ("organisation", "preset", "token", "triggered_by", "rerun_of")


def flash_outcome(request: HttpRequest, outcome: TriggerOutcome) -> None:
    """Show what ``run_trigger`` did as a message of the matching level."""
    getattr(messages, outcome.level)(request, outcome.message)


@never_cache  # the form carries a one-time nonce
def run_create(request: HttpRequest) -> HttpResponse:
    """The new-run form; ``?preset=<id>`` pre-fills it ("run with different input")."""
    preset = None
    initial = {}
    if preset_id := request.GET.get("preset"):
        preset = get_scoped_object(
            WorkflowPreset.objects.all(), request.user, Role.OPERATOR, pk=_int_or_404(preset_id)
        )
        initial = {
            "organisation": preset.organisation_id,
            "workflow_id": preset.workflow_id,
            "input": preset.input,
        }
    return _run_form(request, initial=initial, preset=preset)


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
    return _run_form(request, initial=initial, preset=original.preset, rerun_of=original)


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Everything about one run: who, what, Champ's answer, the event timeline."""
    run = get_scoped_object(Run.objects.select_related(*_RUN_RELATED), request.user, pk=pk)
    context = _live_context(run)
    context.update(
        can_run=role_at_least(run.my_role, Role.OPERATOR),
        preset_input_differs=run.preset_input is not None and run.preset_input != run.input,
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
    return {"run": run, "events": events, "dashboard_url": dashboard_url(run.workflow_id)}


def _run_form(request, *, initial: dict, preset=None, rerun_of=None) -> HttpResponse:
    initial["submission_key"] = new_submission_key()
    form = RunForm(request.POST or None, user=request.user, preset=preset, initial=initial)
    no_token = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
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
                ip=client_ip(request),
            )
        except NoActiveToken as exc:
            form.add_error(None, exc.message)
            no_token = exc
        except TriggerRefused as exc:
            form.add_error(None, exc.message)
        else:
            flash_outcome(request, outcome)
            return redirect(outcome.run)
    context = {"form": form, "preset": preset, "rerun_of": rerun_of, "no_token": no_token}
    return render(request, "runs/run_form.html", context)


def _int_or_404(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise Http404("No such preset.") from None
