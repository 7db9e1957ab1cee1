"""Fixtures shared by the preset / triggering / run page tests (star-imported by them)."""

import socket

import pytest

from runs import champ, lifecycle
from runs import organisations as org_actions
from runs.models import EventSource, RunStatus, WorkflowPreset
from runs.simulator import DEMO_TOKEN, WORKFLOW_ECHO
from tests.champ_fixtures import TEST_TIMEOUT

__all__ = [
    "champ_org",
    "closed_port_url",
    "demo_token",
    "fast_champ",
    "kicks",
    "make_run",
    "preset_a",
    "preset_b",
]


@pytest.fixture(autouse=True)
def fast_champ(monkeypatch):
    """Trigger with the simulator fixtures' short timeouts, and no pause before the retry."""
    real = champ.make_client
    monkeypatch.setattr(
        champ, "make_client", lambda **kwargs: real(**{"timeout": TEST_TIMEOUT, **kwargs})
    )
    monkeypatch.setattr(champ, "TRIGGER_RETRY_DELAY", 0.0)


@pytest.fixture(autouse=True)
def kicks(monkeypatch):
    """Every poller kick (no cluster needed): a list that grows by one per kick."""
    calls = []
    monkeypatch.setattr("runs.triggering.kick_poller", lambda: calls.append(1))
    return calls


@pytest.fixture
def demo_token(org_a, alice):
    """The simulator's accepted token, stored for org A."""
    return org_actions.token_add(organisation=org_a, label="Demo", secret=DEMO_TOKEN, user=alice)


@pytest.fixture
def champ_org(org_a, champ_server, demo_token):
    """Org A pointed at the loopback simulator, with its accepted token."""
    org_a.api_base_url = champ_server.base_url
    org_a.save(update_fields=["api_base_url"])
    return org_a


@pytest.fixture
def closed_port_url():
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def preset_a(org_a, olivia):
    return WorkflowPreset.objects.create(
        organisation=org_a,
        name="Echo hello",
        workflow_id=WORKFLOW_ECHO,
        input={"message": "hello"},
        created_by=olivia,
    )


@pytest.fixture
def preset_b(org_b, bob):
    return WorkflowPreset.objects.create(
        organisation=org_b, name="Preset of B", workflow_id=WORKFLOW_ECHO, input={}, created_by=bob
    )


@pytest.fixture
def make_run():
    """A run recorded through the lifecycle (no Champ involved): ``make_run(org, status=…)``."""

    def make(organisation, *, status=RunStatus.PENDING, output=None, **fields):
        fields.setdefault("workflow_id", WORKFLOW_ECHO)
        run = lifecycle.open_run(organisation=organisation, **fields)
        if status != RunStatus.UNKNOWN:
            lifecycle.record_status(
                run,
                seen=RunStatus.UNKNOWN,
                new=status,
                source=EventSource.TRIGGER,
                output=output,
                extra_fields={"champ_run_id": 50000 + run.pk},
            )
        return run

    return make
