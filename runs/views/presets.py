"""
Preset pages: list (with each preset's health), detail (health, version
history, share link), create, edit, archive, the version history, and the
one-click Run button.
"""

from urllib.parse import quote

from django.contrib import messages
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from runs import health, site_defaults
from runs import presets as preset_actions
from runs.access import get_scoped_object
from runs.forms import PresetForm, clean_submission_key
from runs.models import Membership, Organisation, Role, WorkflowPreset, role_at_least
from runs.request_info import client_ip
from runs.triggering import DuplicateSuspected, NoActiveToken, TriggerRefused, run_trigger
from runs.views.runs import flash_outcome, render_duplicate

#: Versions shown on the preset page (the rest on its history page).
RECENT_VERSIONS = 5
VERSIONS_PER_PAGE = 50


@never_cache  # Run buttons: a fresh nonce on every visit, Back included
def preset_list(request: HttpRequest) -> HttpResponse:
    """My organisations' presets, optionally of one organisation (``?organisation=<slug>``)."""
    organisations = Organisation.objects.for_user(request.user).order_by("name")
    presets = WorkflowPreset.objects.for_user(request.user).select_related("organisation")
    selected = request.GET.get("organisation", "")
    if selected:
        presets = presets.filter(organisation__slug=selected)
    show_archived = request.GET.get("archived") == "1"
    presets = list(presets.filter(archived=show_archived).order_by("organisation__name", "name"))
    roles = _my_roles(request.user)
    health_of = health.preset_health(preset.pk for preset in presets)
    for preset in presets:
        preset.can_run = role_at_least(roles.get(preset.organisation_id), Role.OPERATOR)
        preset.health = health_of[preset.pk]
    context = {
        "presets": presets,
        "organisations": organisations,
        "selected": selected,
        "show_archived": show_archived,
        "can_create": any(role_at_least(role, Role.OPERATOR) for role in roles.values()),
    }
    return render(request, "runs/preset_list.html", context)


@never_cache
def preset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A preset, its input, and its recent runs."""
    preset = get_scoped_object(
        WorkflowPreset.objects.select_related("created_by"), request.user, pk=pk
    )
    runs = preset.runs.select_related("organisation", "preset", "triggered_by")[:20]
    versions = preset_actions.version_history(preset, limit=RECENT_VERSIONS)
    context = {
        "preset": preset,
        "can_run": role_at_least(preset.my_role, Role.OPERATOR),
        "runs": runs,
        "health": health.preset_health([preset.pk])[preset.pk],
        "versions": versions,
        "more_versions": bool(versions) and versions[-1].version.number > 1,
        "share_url": request.build_absolute_uri(f"{reverse('run_create')}?preset={preset.pk}"),
        "share_example": _share_example(request, preset),
        "suspended_default": site_defaults.stuck_suspended_minutes(),
    }
    return render(request, "runs/preset_detail.html", context)


@require_GET
def preset_versions(request: HttpRequest, pk: int) -> HttpResponse:
    """Every version of a preset, newest first, each with its diff from the one before."""
    preset = get_scoped_object(WorkflowPreset.objects.all(), request.user, pk=pk)
    before = request.GET.get("before")
    before = int(before) if before and before.isdecimal() else None
    entries = preset_actions.version_history(preset, limit=VERSIONS_PER_PAGE, before=before)
    older = entries[-1].version.number if entries and entries[-1].version.number > 1 else None
    context = {"preset": preset, "versions": entries, "older": older, "paged": before}
    return render(request, "runs/preset_versions.html", context)


def preset_create(request: HttpRequest) -> HttpResponse:
    """A new preset in one of the organisations where I am operator or admin."""
    initial = {}
    if slug := request.GET.get("organisation"):
        initial["organisation"] = (
            Organisation.objects.for_user(request.user, Role.OPERATOR)
            .filter(slug=slug)
            .values_list("pk", flat=True)
            .first()
        )
    form = PresetForm(request.POST or None, user=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            preset = preset_actions.preset_create(
                organisation=data["organisation"],
                name=data["name"],
                workflow_id=data["workflow_id"],
                input=data["input"],
                description=data["description"],
                user=request.user,
                ip=client_ip(request),
            )
        except IntegrityError:  # the same name saved by someone else a moment ago
            form.add_error("name", "A preset with this name was just created. Choose another.")
        else:
            messages.success(request, f"Preset “{preset}” saved.")
            return redirect(preset)
    return render(request, "runs/preset_form.html", {"form": form})


def preset_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a preset's name, workflow, input or description (operators and admins)."""
    preset = get_scoped_object(WorkflowPreset.objects.all(), request.user, Role.OPERATOR, pk=pk)
    form = PresetForm(request.POST or None, instance=preset, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            preset = preset_actions.preset_update(
                form=form,
                user=request.user,
                ip=client_ip(request),
                base_version=form.cleaned_data.get("base_version"),
            )
        except IntegrityError:
            form.add_error("name", "A preset with this name was just created. Choose another.")
        except preset_actions.PresetConflict as exc:
            newer = exc.preset
            form.add_error(
                None,
                f"Not saved: someone saved v{newer.version} of this preset after you opened "
                "this form. Open the preset again to see their changes, then edit that version.",
            )
        else:
            messages.success(request, f"Preset “{preset}” saved.")
            return redirect(preset)
    return render(request, "runs/preset_form.html", {"form": form, "preset": preset})


@require_POST
def preset_archive(request: HttpRequest, pk: int) -> HttpResponse:
    preset = get_scoped_object(WorkflowPreset.objects.all(), request.user, Role.OPERATOR, pk=pk)
    if preset_actions.preset_archive(preset=preset, user=request.user, ip=client_ip(request)):
        messages.success(request, f"Preset “{preset}” archived: it no longer shows a Run button.")
    else:
        messages.info(request, f"Preset “{preset}” was already archived.")
    return redirect(preset)


@require_POST
def preset_unarchive(request: HttpRequest, pk: int) -> HttpResponse:
    preset = get_scoped_object(WorkflowPreset.objects.all(), request.user, Role.OPERATOR, pk=pk)
    if preset_actions.preset_unarchive(preset=preset, user=request.user, ip=client_ip(request)):
        messages.success(request, f"Preset “{preset}” is back in the list.")
    else:
        messages.info(request, f"Preset “{preset}” was not archived.")
    return redirect(preset)


@require_POST
def preset_run(request: HttpRequest, pk: int) -> HttpResponse:
    """The one-click Run button: start the preset as saved and show the run."""
    preset = get_scoped_object(WorkflowPreset.objects.all(), request.user, Role.OPERATOR, pk=pk)
    try:
        outcome = run_trigger(
            organisation=preset.organisation,
            workflow_id=preset.workflow_id,
            input=preset.input,
            user=request.user,
            preset=preset,
            submission_key=clean_submission_key(request.POST.get("submission_key")),
            confirm_duplicate=request.POST.get("confirm_duplicate") == "1",
            ip=client_ip(request),
        )
    except NoActiveToken as exc:
        messages.error(request, exc.message)
        return redirect(exc.tokens_url)
    except DuplicateSuspected as exc:
        return render_duplicate(
            request,
            exc,
            action=reverse("preset_run", args=[preset.pk]),
            fields=[],
            cancel_url=preset.get_absolute_url(),
        )
    except TriggerRefused as exc:
        messages.error(request, exc.message)
        return redirect(preset)
    flash_outcome(request, outcome)
    return redirect(outcome.run)


def _share_example(request: HttpRequest, preset: WorkflowPreset) -> str | None:
    """The share link with one top-level key of the input overridden, as an example."""
    for key, value in preset.input.items():
        if key and "." not in key and not isinstance(value, dict | list):
            base = f"{reverse('run_create')}?preset={preset.pk}"
            return request.build_absolute_uri(base) + f"&input.{quote(key, safe='')}=…"
    return None


def _my_roles(user) -> dict[int, str]:
    return dict(Membership.objects.filter(user=user).values_list("organisation_id", "role"))
