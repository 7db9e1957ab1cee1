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


def _demo_password() -> str:
    path = Path(settings.VAR_DIR) / "demo_password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(12) + "\n")
        path.chmod(0o600)
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
        for spec in simulator.demo_presets():
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
