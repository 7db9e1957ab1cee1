"""
RELIABILITY.md 17: the webhook's per-organisation secret (256 bits, stored
hashed, compared in constant time), and deliveries whose content no database
column can hold. The rest of 17 (401, 413, 400, replays, out-of-order) is in
tests/test_webhook.py and the stateful test in tests/test_reliability_lifecycle.py.
"""

import base64
import hashlib
import json

from django.urls import reverse

from runs import organisations as org_actions
from runs.models import Organisation, Run
from tests.hardening import *  # noqa: F403


def deliver(client, organisation, secret, workflow_run, event="workflow_run.completed"):
    return client.post(
        reverse("champ_webhook", args=[organisation.slug]),
        json.dumps({"event": event, "data": {"workflow_run": workflow_run}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )


def test_webhook_secrets_have_256_random_bits_and_are_stored_hashed(world):
    secrets = {
        org_actions.webhook_secret_create(organisation=world.org_a, user=world.alice)
        for _ in range(20)
    }
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whk_")
        raw = base64.urlsafe_b64decode(secret[4:] + "=" * (-len(secret[4:]) % 4))
        assert len(raw) * 8 >= 256
    last = Organisation.objects.get(pk=world.org_a.pk).webhook_secret_hash
    assert last in {hashlib.sha256(secret.encode()).hexdigest() for secret in secrets}
    assert not any(secret in last for secret in secrets)


def test_webhook_secret_is_compared_in_constant_time(world, monkeypatch, client):
    import hmac

    calls, real = [], hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr("runs.organisations.hmac.compare_digest", spy)
    response = deliver(client, world.org_a, "whk_wrong", {"id": 1, "status": "completed"})
    assert response.status_code == 401
    # Digests of equal length are compared, whatever the length of what was presented.
    assert calls == [(64, 64)]


def test_a_new_webhook_secret_replaces_the_old_one(client, world):
    old = world.secret_a
    new = org_actions.webhook_secret_create(organisation=world.org_a, user=world.alice)
    body = {"id": world.run_a.champ_run_id, "status": "in_progress"}
    assert deliver(client, world.org_a, old, body).status_code == 401
    assert deliver(client, world.org_a, new, body).status_code == 200


def test_a_delivery_with_nul_characters_and_lone_surrogates_is_stored_not_a_500(client, world):
    """Valid JSON that PostgreSQL's jsonb and UTF-8 refuse: stored with U+FFFD instead."""
    run_id = world.run_a.champ_run_id
    raw = (
        '{"event": "workflow_run.completed\\u0000", "data": {"workflow_run": '
        f'{{"id": {run_id}, "workflow_id": 101, "status": "completed", "input": {{}}, '
        '"output": {"text\\u0000": "a\\u0000b", "half": "\\ud800", "smile": "\\ud83d\\ude00"}}}}'
    )
    response = client.post(
        reverse("champ_webhook", args=[world.org_a.slug]),
        raw,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world.secret_a}",
    )
    assert response.status_code == 200, response.content
    run = Run.objects.get(pk=world.run_a.pk)
    assert run.status == "completed"
    assert run.output == {"text\ufffd": "a\ufffdb", "half": "\ufffd", "smile": "\U0001f600"}
    event = run.events.order_by("seq").last()
    assert event.message == "Webhook workflow_run.completed\ufffd"
    # And the run page shows it.
    from django.test import Client

    viewer = Client()
    viewer.force_login(world.victor)
    assert viewer.get(run.get_absolute_url()).status_code == 200


def test_an_unknown_run_with_odd_characters_is_audited_not_a_500(client, world):
    response = deliver(
        client,
        world.org_a,
        world.secret_a,
        {"id": 123456789, "status": "failed"},
        event="workflow_run.failed\x00\ud800",
    )
    assert response.status_code == 202
