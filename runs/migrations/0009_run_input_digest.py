"""Run.input_digest: the duplicate-run guard looks equal inputs up by index."""

from django.db import migrations, models

from runs.jsondiff import json_digest

BATCH = 2000


def fill_input_digests(apps, schema_editor):
    """Existing runs get their digest, so the guard still sees them as twins."""
    Run = apps.get_model("runs", "Run")
    last_pk = 0
    while True:
        batch = list(
            Run.objects.filter(pk__gt=last_pk).order_by("pk").only("pk", "input")[:BATCH]
        )
        if not batch:
            return
        for run in batch:
            run.input_digest = json_digest(run.input)
        Run.objects.bulk_update(batch, ["input_digest"])
        last_pk = batch[-1].pk


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0008_run_indexes_for_health_and_stuck_runs"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="input_digest",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.RunPython(fill_input_digests, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="run",
            index=models.Index(
                fields=["organisation", "workflow_id", "input_digest", "-triggered_at"],
                name="run_twin_idx",
            ),
        ),
    ]
