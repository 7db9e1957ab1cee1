"""
Writes that concern workflow presets: create, change, archive, unarchive.

Each function is one audited action inside one transaction. Who may do it
(operator or admin of the preset's organisation) is checked by the views
through ``runs.access``; the preset's name is unique within its organisation
(``PresetForm`` says so nicely, the database constraint makes sure).
"""

from django.db import transaction

from runs.models import AuditAction, AuditEntry, Organisation, WorkflowPreset


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
) -> WorkflowPreset:
    """Save a new preset and audit it (PRESET_CREATED)."""
    preset = WorkflowPreset.objects.create(
        organisation=organisation,
        name=name,
        workflow_id=workflow_id,
        input=input,
        description=description,
        created_by=user,
    )
    AuditEntry.objects.record(
        action=AuditAction.PRESET_CREATED,
        actor=user,
        organisation=organisation,
        target=preset,
        changes={"name": name, "workflow_id": workflow_id, "input": input},
        ip=ip,
    )
    return preset


@transaction.atomic
def preset_update(*, form, user, ip: str | None = None) -> WorkflowPreset:
    """Save a bound, valid ``PresetForm`` for an existing preset; audit the changed fields."""
    changes = {
        name: [form.initial.get(name), form.cleaned_data[name]] for name in form.changed_data
    }
    preset = form.save()
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
