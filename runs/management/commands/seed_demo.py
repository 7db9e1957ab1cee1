"""
Seed the demo: a user, an organisation pointing at the built-in simulator,
its token and a preset per catalogue workflow. Safe to run again: nothing is
duplicated, and the demo password printed by `make run` keeps working.
"""

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from runs import organisations as org_actions
from runs import simulator
from runs.models import Membership, Organisation, Role, WorkflowPreset

DEMO_USERNAME = "demo"
VIEWER_USERNAME = "viewer"
DEMO_SLUG = "demo"

#: One preset per runnable catalogue workflow of the simulator (see README).
DEMO_PRESETS = [
    {
        "name": "Echo (completes in ~2 s)",
        "workflow_id": simulator.WORKFLOW_ECHO,
        "input": {"customer": "ACME", "priority": "high"},
        "description": "pending → in_progress → completed; the output echoes the input.",
    },
    {
        "name": "Slow report (~30 s)",
        "workflow_id": simulator.WORKFLOW_SLOW,
        "input": {"report": "monthly", "month": "2026-11"},
        "description": "Stays in_progress for about 30 seconds, then completes.",
    },
    {
        "name": "Always fails",
        "workflow_id": simulator.WORKFLOW_FAILS,
        "input": {"dry_run": False},
        "description": "pending → in_progress → failed, with an error output.",
    },
    {
        "name": "Needs approval (suspends, then resumes)",
        "workflow_id": simulator.WORKFLOW_SUSPEND_RESUME,
        "input": {"amount": 1200, "currency": "EUR"},
        "description": "in_progress → suspended → in_progress → completed.",
    },
    {
        "name": "Skipped",
        "workflow_id": simulator.WORKFLOW_SKIPPED,
        "input": {},
        "description": "pending → skipped.",
    },
    {
        "name": "Unpublished workflow (404)",
        "workflow_id": simulator.WORKFLOW_UNPUBLISHED,
        "input": {},
        "description": "Champ answers 404: shows how a rejected trigger looks.",
    },
    {
        "name": "Ticketing workflow (422)",
        "workflow_id": simulator.WORKFLOW_TICKETING,
        "input": {},
        "description": "Champ answers 422: ticketing workflows cannot be started by API.",
    },
]


def _private_file(name: str) -> Path:
    path = Path(settings.VAR_DIR) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_private(path: Path, value: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(value + "\n")


def _demo_webhook_secret(organisation, user) -> None:
    """
    Give the demo organisation a webhook secret the simulator can present.

    Written to var/demo_webhook_secret (0600) for the Procfile's simulator; kept
    across re-runs while it still matches the stored hash.
    """
    path = _private_file("demo_webhook_secret")
    if path.exists() and org_actions.webhook_secret_matches(
        organisation, path.read_text().strip()
    ):
        return
    secret = org_actions.webhook_secret_create(organisation=organisation, user=user)
    _write_private(path, secret)


def _demo_password() -> str:
    path = _private_file("demo_password")
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(12))
    return path.read_text().strip()


class Command(BaseCommand):
    help = "Create (or refresh) the demo user, organisation, simulator token and presets."

    @transaction.atomic
    def handle(self, *args, **options):
        password = _demo_password()
        users = get_user_model().objects
        demo, _ = users.get_or_create(
            username=DEMO_USERNAME, defaults={"email": "demo@example.com"}
        )
        demo.is_staff = demo.is_superuser = demo.is_active = True
        demo.set_password(password)
        demo.save()
        viewer, _ = users.get_or_create(username=VIEWER_USERNAME)
        viewer.set_password(password)
        viewer.save()

        organisation = Organisation.objects.filter(slug=DEMO_SLUG).first()
        if organisation is None:
            organisation = org_actions.organisation_create(
                name="Demo organisation",
                slug=DEMO_SLUG,
                api_base_url=settings.CHAMP_API_BASE,
                user=demo,
            )
        if organisation.api_base_url != settings.CHAMP_API_BASE:
            # The demo follows the simulator wherever `make run` starts it.
            organisation.api_base_url = settings.CHAMP_API_BASE
            organisation.save(update_fields=["api_base_url"])
        Membership.objects.update_or_create(
            user=demo, organisation=organisation, defaults={"role": Role.ADMIN}
        )
        Membership.objects.get_or_create(
            user=viewer, organisation=organisation, defaults={"role": Role.VIEWER}
        )
        if not organisation.tokens.active().exists():
            org_actions.token_add(
                organisation=organisation,
                label="Simulator demo token",
                secret=simulator.DEMO_TOKEN,
                user=demo,
            )
        _demo_webhook_secret(organisation, demo)
        for spec in DEMO_PRESETS:
            WorkflowPreset.objects.get_or_create(
                organisation=organisation,
                name=spec["name"],
                defaults={
                    "workflow_id": spec["workflow_id"],
                    "input": spec["input"],
                    "description": spec["description"],
                    "created_by": demo,
                },
            )
        self.stdout.write(
            f"Demo ready: log in as “{DEMO_USERNAME}” (admin) or “{VIEWER_USERNAME}” "
            f"(viewer) with password {password}"
        )
