from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Champ runs"

    def ready(self):
        from django.db.models.signals import post_migrate

        from runs import checks, signals  # noqa: F401  (registers checks and receivers)
        from runs.notifications import ensure_stuck_schedule
        from runs.tasks import ensure_watchdog_schedule

        # Never at import time: the schedule rows are created after migrations.
        post_migrate.connect(ensure_watchdog_schedule, sender=self)
        post_migrate.connect(ensure_stuck_schedule, sender=self)
