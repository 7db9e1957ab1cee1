"""The demo seed behind `make run`: complete, and safe to run again."""

from django.contrib.auth import get_user_model
from django.core.management import call_command

from runs import organisations as org_actions
from runs import simulator
from runs.models import ApiToken, Membership, Organisation, WorkflowPreset


def test_seed_demo_creates_a_usable_demo_and_is_idempotent(db, settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("seed_demo")
    call_command("seed_demo")
    out = capsys.readouterr().out
    password = (tmp_path / "demo_password").read_text().strip()
    assert password in out
    assert out.count(password) == 2  # the same password both times
    demo = get_user_model().objects.get(username="demo")
    assert demo.check_password(password) and demo.is_superuser
    organisation = Organisation.objects.get(slug="demo")
    assert organisation.role_of(demo) == "admin"
    assert organisation.role_of(get_user_model().objects.get(username="viewer")) == "viewer"
    assert Organisation.objects.count() == 1
    assert Membership.objects.count() == 2
    token = ApiToken.objects.get()
    assert token.reveal() == simulator.DEMO_TOKEN
    presets = WorkflowPreset.objects.filter(organisation=organisation)
    assert {p.workflow_id for p in presets} == set(simulator.CATALOGUE)
    secret = (tmp_path / "demo_webhook_secret").read_text().strip()
    assert org_actions.webhook_secret_matches(organisation, secret)
    assert (tmp_path / "demo_webhook_secret").stat().st_mode & 0o777 == 0o600
