"""
Writes that concern workflow presets: create, change, archive, unarchive,
and save a run's input as a preset (a new one, or a new version of its own).

Each function is one audited action inside one transaction. Versions are
written by ``WorkflowPreset.save()`` whenever the content changes; these
functions say who changed it (``changed_by``) and audit the version number.
Who may do it (operator or admin of the preset's organisation) is checked by
the views through ``runs.access``; the preset's name is unique within its organisation
(``PresetForm`` says so nicely, the database constraint makes sure).
"""

from dataclasses import dataclass

from django.db import transaction

from runs import jsondiff
from runs.models import (
    AuditAction,
    AuditEntry,
    Organisation,
    PresetVersion,
    Run,
    WorkflowPreset,
)


class PresetConflict(Exception):
    """The preset changed since the form was opened (``current`` is its version now)."""

    def __init__(self, preset: WorkflowPreset) -> None:
        super().__init__(f"{preset} is at v{preset.version}")
        self.preset = preset


@transaction.atomic
def preset_create(
    *,
    organisation: Organisation,
    name: str,
    workflow_id: int,
    input: dict,
    description: str = "",
    user,
    ip: str | None = None,
    extra_changes: dict | None = None,
    **safeguards,
) -> WorkflowPreset:
    """
    Save a new preset (as v1) and audit it (PRESET_CREATED).

    ``safeguards``: the duplicate window, the open-runs limit and the stuck
    limits (model defaults otherwise). ``extra_changes`` go into the audit
    entry (e.g. the run a preset was saved from).
    """
    extra_changes = extra_changes or {}
    preset = WorkflowPreset.objects.create(
        organisation=organisation,
        name=name,
        workflow_id=workflow_id,
        input=input,
        description=description,
        created_by=user,
        **safeguards,
    )
    AuditEntry.objects.record(
        action=AuditAction.PRESET_CREATED,
        actor=user,
        organisation=organisation,
        target=preset,
        changes={
            "name": name,
            "workflow_id": workflow_id,
            "input": input,
            "version": preset.version,
            **extra_changes,
        },
        ip=ip,
    )
    return preset


@transaction.atomic
def preset_update(
    *, form, user, ip: str | None = None, base_version: int | None = None
) -> WorkflowPreset:
    """
    Save a bound, valid ``PresetForm`` for an existing preset; audit the changed fields.

    A change of content (name, workflow, input, description) makes a new
    version, audited as ``"version": [old, new]``. ``base_version`` is the
    version the form was opened on: if someone saved another version since,
    ``PresetConflict`` is raised and nothing is saved.
    """
    preset = form.instance
    if base_version is not None:
        current = (
            WorkflowPreset.objects.select_for_update()
            .filter(pk=preset.pk)
            .values_list("version", flat=True)
            .get()
        )
        if current != base_version:
            preset.refresh_from_db()
            raise PresetConflict(preset)
    changes = {
        name: [form.initial.get(name), form.cleaned_data[name]]
        for name in form.changed_data
        if name != "base_version"
    }
    old_version = preset.version
    preset = form.save(commit=False)
    preset.changed_by = user
    preset.save()
    if preset.version != old_version:
        changes["version"] = [old_version, preset.version]
    if changes:
        AuditEntry.objects.record(
            action=AuditAction.PRESET_CHANGED,
            actor=user,
            organisation=preset.organisation,
            target=preset,
            changes=changes,
            ip=ip,
        )
    return preset


@transaction.atomic
def preset_new_version_from_run(
    *, preset: WorkflowPreset, run: Run, input: dict, user, ip: str | None = None
) -> WorkflowPreset:
    """
    Make ``input`` (a run's, possibly edited) the preset's input as a new version.

    The workflow becomes the run's as well; name and description stay. No
    new version when nothing differs.
    """
    preset = WorkflowPreset.objects.select_for_update().get(pk=preset.pk)
    before = preset.content()
    old_version = preset.version
    preset.input = input
    preset.workflow_id = run.workflow_id
    preset.changed_by = user
    preset.save()
    if preset.version != old_version:
        changes = {
            name: [before[name], value]
            for name, value in preset.content().items()
            if before[name] != value
        }
        AuditEntry.objects.record(
            action=AuditAction.PRESET_CHANGED,
            actor=user,
            organisation=preset.organisation,
            target=preset,
            changes={**changes, "version": [old_version, preset.version], "from_run": run.pk},
            ip=ip,
        )
    return preset


@transaction.atomic
def preset_archive(*, preset: WorkflowPreset, user, ip: str | None = None) -> bool:
    """Hide a preset from the Run buttons (its runs stay). False if it already was archived."""
    return _set_archived(preset, True, AuditAction.PRESET_ARCHIVED, user=user, ip=ip)


@transaction.atomic
def preset_unarchive(*, preset: WorkflowPreset, user, ip: str | None = None) -> bool:
    """Bring an archived preset back (audited as PRESET_CHANGED). False if it was live."""
    return _set_archived(preset, False, AuditAction.PRESET_CHANGED, user=user, ip=ip)


def _set_archived(preset: WorkflowPreset, archived: bool, action: str, *, user, ip) -> bool:
    # Conditional update: two clicks (or two tabs) archive once, audit once.
    updated = WorkflowPreset.objects.filter(pk=preset.pk, archived=not archived).update(
        archived=archived
    )
    preset.archived = archived
    if updated:
        AuditEntry.objects.record(
            action=action,
            actor=user,
            organisation=preset.organisation,
            target=preset,
            changes={"archived": [not archived, archived]},
            ip=ip,
        )
    return bool(updated)


# --- Reading the history ------------------------------------------------------------


@dataclass
class VersionEntry:
    """One version and what changed from the version before it."""

    version: PresetVersion
    previous: PresetVersion | None
    #: (label, old, new) for the name, workflow and description.
    field_changes: list[tuple[str, object, object]]
    input_changes: list[jsondiff.Change]

    @property
    def is_first(self) -> bool:
        return self.previous is None


_FIELD_LABELS = {"name": "Name", "workflow_id": "Workflow ID", "description": "Description"}


def version_history(
    preset: WorkflowPreset, *, limit: int = 10, before: int | None = None
) -> list[VersionEntry]:
    """
    The newest ``limit`` versions (below number ``before`` if given), newest
    first, each with its differences from its predecessor. One query.
    """
    versions = preset.versions.select_related("created_by").order_by("-number")
    if before is not None:
        versions = versions.filter(number__lt=before)
    rows = list(versions[: limit + 1])
    entries = []
    for index, version in enumerate(rows[:limit]):
        previous = rows[index + 1] if index + 1 < len(rows) else None
        entries.append(version_entry(version, previous))
    return entries


def version_entry(version: PresetVersion, previous: PresetVersion | None) -> VersionEntry:
    field_changes = []
    input_changes = []
    if previous is not None:
        for name, label in _FIELD_LABELS.items():
            old, new = getattr(previous, name), getattr(version, name)
            if old != new:
                field_changes.append((label, old, new))
        input_changes = jsondiff.diff(previous.input, version.input)
    return VersionEntry(version, previous, field_changes, input_changes)
