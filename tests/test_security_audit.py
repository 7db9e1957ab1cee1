"""
RELIABILITY.md 6, 8, 9: the audit trail is append-only, says who (user,
``system`` or ``webhook``), which organisation, when (UTC), from which IP
(``REMOTE_ADDR``; ``X-Forwarded-For`` only from configured proxies) and what
changed; its hash chain shows tampering (more in tests/test_audit.py).
"""

import json
from datetime import timedelta

import pytest
from django.test import RequestFactory
from django.urls import reverse

from runs import organisations as org_actions
from runs.audit import verify_audit_chain
from runs.models import AppendOnlyError, AuditAction, AuditEntry, RunEvent
from runs.request_info import client_ip
from tests.conftest import PASSWORD
from tests.hardening import *  # noqa: F403

CLIENT = "203.0.113.7"
PROXY = "10.0.0.1"


def newest(action) -> AuditEntry:
    return AuditEntry.objects.filter(action=action).latest("id")


# --- 6: append-only --------------------------------------------------------------------------


def test_audit_entries_and_run_events_are_append_only(world):
    entry = AuditEntry.objects.first()
    event = RunEvent.objects.first()
    for record, model in ((entry, AuditEntry), (event, RunEvent)):
        with pytest.raises(AppendOnlyError):
            record.save()
        with pytest.raises(AppendOnlyError):
            record.delete()
        with pytest.raises(AppendOnlyError):
            model.objects.filter(pk=record.pk).update(pk=record.pk)
        with pytest.raises(AppendOnlyError):
            model.objects.filter(pk=record.pk).delete()
    assert verify_audit_chain().ok


# --- 8: who, where, when, from where, what ---------------------------------------------------


def test_audit_entry_records_actor_organisation_utc_time_ip_and_changes(client_for, world):
    client = client_for(world.alice)
    client.post(
        reverse("token_revoke", args=[world.org_a.slug, world.token_a.pk]),
        REMOTE_ADDR=CLIENT,
        HTTP_X_FORWARDED_FOR="198.51.100.66",  # from an untrusted peer: ignored
    )
    entry = newest(AuditAction.TOKEN_REVOKED)
    assert entry.actor == world.alice and entry.actor_label == "alice"
    assert entry.organisation == world.org_a
    assert entry.ip == CLIENT
    assert entry.changes == {"hint": world.token_a.hint}
    assert (entry.target_type, entry.target_id) == ("runs.ApiToken", str(world.token_a.pk))
    assert entry.created_at.utcoffset() == timedelta(0)


def test_audit_time_is_utc_whatever_the_display_time_zone(settings, world):
    settings.TIME_ZONE = "Pacific/Chatham"  # +12:45 / +13:45
    entry = AuditEntry.objects.record(action=AuditAction.LOGIN, actor=world.alice, ip=CLIENT)
    entry.refresh_from_db()
    assert entry.created_at.utcoffset() == timedelta(0)
    assert verify_audit_chain().ok


def test_audit_actor_is_system_or_webhook_when_no_user_acted(client, world):
    org_actions.token_mark_rejected(world.token_a)
    assert newest(AuditAction.TOKEN_REJECTED).actor_label == "system"
    response = client.post(
        reverse("champ_webhook", args=[world.org_a.slug]),
        json.dumps({}),
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer not-the-secret",
        REMOTE_ADDR=CLIENT,
    )
    assert response.status_code == 401
    entry = newest(AuditAction.WEBHOOK_REJECTED)
    assert (entry.actor, entry.actor_label, entry.organisation) == (None, "webhook", world.org_a)
    assert entry.ip == CLIENT


@pytest.mark.parametrize(
    "remote, forwarded, trusted, expected",
    [
        # No proxy configured: X-Forwarded-For is whatever the client wrote. Ignored.
        (CLIENT, "198.51.100.9", [], CLIENT),
        # A peer that is not a configured proxy: ignored as well.
        (CLIENT, "198.51.100.9", [PROXY], CLIENT),
        # The configured proxy: its header names the client.
        (PROXY, "198.51.100.9", [PROXY], "198.51.100.9"),
        # A client's own (spoofed) entry comes first; the proxy appends the real one.
        (PROXY, "6.6.6.6, 198.51.100.9", [PROXY], "198.51.100.9"),
        # Through two configured proxies: the right-most address that is not a proxy.
        (PROXY, "6.6.6.6, 198.51.100.9, 10.0.0.2", [PROXY, "10.0.0.2"], "198.51.100.9"),
        # A proxy without the header: the proxy's own address.
        (PROXY, "", [PROXY], PROXY),
        # IPv6, in its canonical spelling.
        ("2001:DB8:0:0::1", "", [], "2001:db8::1"),
    ],
)
def test_forwarded_headers_are_believed_only_from_configured_proxies(
    settings, remote, forwarded, trusted, expected
):
    settings.CHAMP_PORTAL_TRUSTED_PROXIES = trusted
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_a_forwarded_address_reaches_the_audit_entry_only_through_a_trusted_proxy(
    client_for, settings, world
):
    client = client_for(world.alice)
    url = reverse("webhook_secret_create", args=[world.org_a.slug])
    client.post(url, REMOTE_ADDR=CLIENT, HTTP_X_FORWARDED_FOR="198.51.100.9")
    assert newest(AuditAction.WEBHOOK_SECRET_CREATED).ip == CLIENT
    settings.CHAMP_PORTAL_TRUSTED_PROXIES = [PROXY]
    client.post(url, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.9")
    assert newest(AuditAction.WEBHOOK_SECRET_CREATED).ip == "198.51.100.9"


def test_failed_logins_are_audited_with_the_peer_address_not_a_forged_one(client, world):
    from axes.utils import reset

    reset()
    client.post(
        reverse("login"),
        {"username": "alice", "password": "wrong"},
        REMOTE_ADDR=CLIENT,
        HTTP_X_FORWARDED_FOR="198.51.100.9",
    )
    entry = newest(AuditAction.LOGIN_FAILED)
    assert (entry.actor_label, entry.ip) == ("alice", CLIENT)
    assert "wrong" not in json.dumps(entry.changes)
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD}, REMOTE_ADDR=CLIENT)
    assert newest(AuditAction.LOGIN).ip == CLIENT
    reset()


# --- 9: the chain over a real day's work -------------------------------------------------------


def test_the_hash_chain_verifies_after_real_work_and_breaks_on_an_edit(client_for, world):
    client = client_for(world.alice)
    client.post(reverse("token_revoke", args=[world.org_a.slug, world.token_a.pk]))
    client.post(
        reverse("member_role", args=[world.org_a.slug, world.memberships["victor"].pk]),
        {"role": "operator"},
    )
    report = verify_audit_chain()
    assert report.ok and report.verified == AuditEntry.objects.count() >= 8
    # Someone with database access edits one entry (bypassing the model): found.
    from django.db import connection

    victim = AuditEntry.objects.order_by("id")[3]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {AuditEntry._meta.db_table} SET actor_label = %s WHERE id = %s",
            ["mallory", victim.pk],
        )
    report = verify_audit_chain()
    assert not report.ok and report.broken_id == victim.pk
