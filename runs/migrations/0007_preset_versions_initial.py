"""Every existing preset gets its v1: its content as it is when versioning starts."""

from django.db import migrations


def create_first_versions(apps, schema_editor):
    WorkflowPreset = apps.get_model("runs", "WorkflowPreset")
    PresetVersion = apps.get_model("runs", "PresetVersion")
    versioned = PresetVersion.objects.values_list("preset_id", flat=True)
    batch = []
    presets = WorkflowPreset.objects.exclude(pk__in=versioned).order_by("pk")
    for preset in presets.iterator(chunk_size=500):
        batch.append(
            PresetVersion(
                preset_id=preset.pk,
                number=1,
                name=preset.name,
                workflow_id=preset.workflow_id,
                input=preset.input,
                description=preset.description,
                created_by_id=preset.created_by_id,
                created_at=preset.updated_at,
            )
        )
        if len(batch) >= 500:
            PresetVersion.objects.bulk_create(batch)
            batch = []
    if batch:
        PresetVersion.objects.bulk_create(batch)
    WorkflowPreset.objects.update(version=1)


class Migration(migrations.Migration):
    dependencies = [("runs", "0006_preset_versions_safeguards_notifications")]

    operations = [
        # Reversing drops the table with 0006, so nothing to undo here.
        migrations.RunPython(create_first_versions, migrations.RunPython.noop),
    ]
