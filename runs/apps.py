from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Champ runs"

    def ready(self):
        from runs import checks, signals  # noqa: F401  (registers checks and receivers)
