"""The audit trail: one entry per audited action, and a hash chain verify_audit checks."""

from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from runs import organisations as org_actions
from runs import presets as preset_actions
from runs.audit import verify_audit_chain
from runs.forms import PresetForm
from runs.models import AuditAction, AuditEntry, Membership, Role, WorkflowPreset
from runs.triggering import run_trigger
from tests.conftest import PASSWORD
from tests.run_fixtures import *  # noqa: F403

TABLE = AuditEntry._meta.db_table


@contextmanager
def writes_one(action: str):
    """Assert the block appends exactly one audit entry, with ``action``."""
    before = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    yield
    new = list(AuditEntry.objects.filter(id__gt=before).order_by("id"))
    assert [entry.action for entry in new] == [action]


# --- Every action writes one entry ---------------------------------------------------------


def test_login_logout_and_failed_login_write_one_entry_each(client, alice):
    with writes_one(AuditAction.LOGIN_FAILED):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    with writes_one(AuditAction.LOGIN):
        client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    with writes_one(AuditAction.LOGOUT):
        client.post(reverse("logout"))
    entry = AuditEntry.objects.filter(action=AuditAction.LOGIN).get()
    assert entry.actor == alice
    assert entry.ip == "127.0.0.1"


def test_token_added_revoked_deleted_and_keys_rotated_write_one_entry_each(org_a, alice):
    with writes_one(AuditAction.TOKEN_ADDED):
        token = org_actions.token_add(
            organisation=org_a, label="x", secret="api_abcdefghijklmnop_1", user=alice
        )
    with writes_one(AuditAction.TOKEN_REVOKED):
        org_actions.token_revoke(token=token, user=alice)
    with writes_one(AuditAction.TOKEN_DELETED):
        org_actions.token_delete(token=token, user=alice)
    with writes_one(AuditAction.TOKENS_ROTATED):
        call_command("rotate_token_keys", stdout=None)


def test_membership_changes_write_one_entry_each(org_a, alice, make_user):
    carol = make_user("carol")
    with writes_one(AuditAction.MEMBER_ADDED):
        membership = org_actions.member_add(
            organisation=org_a, member=carol, role=Role.VIEWER, user=alice
        )
    with writes_one(AuditAction.MEMBER_ROLE_CHANGED):
        org_actions.member_change_role(membership=membership, role=Role.OPERATOR, user=alice)
    with writes_one(AuditAction.MEMBER_REMOVED):
        org_actions.member_remove(membership=membership, user=alice)
    assert not Membership.objects.filter(user=carol).exists()


def test_webhook_secret_created_and_rejected_calls_write_one_entry_each(client, org_a, alice):
    with writes_one(AuditAction.WEBHOOK_SECRET_CREATED):
        org_actions.webhook_secret_create(organisation=org_a, user=alice)
    with writes_one(AuditAction.WEBHOOK_REJECTED):
        response = client.post(
            reverse("champ_webhook", args=[org_a.slug]),
            data="{}",
            content_type="application/json",
            HTTP_AUTHORIZATION="Bearer wrong",
        )
    assert response.status_code == 401


def test_preset_created_changed_and_archived_write_one_entry_each(org_a, olivia):
    with writes_one(AuditAction.PRESET_CREATED):
        preset = preset_actions.preset_create(
            organisation=org_a, name="P", workflow_id=3, input={}, user=olivia
        )
    form = PresetForm(
        {"name": "P2", "workflow_id": "3", "input": "{}", "description": ""},
        instance=WorkflowPreset.objects.get(pk=preset.pk),
        user=olivia,
    )
    assert form.is_valid(), form.errors
    with writes_one(AuditAction.PRESET_CHANGED):
        preset_actions.preset_update(form=form, user=olivia)
    with writes_one(AuditAction.PRESET_ARCHIVED):
        preset_actions.preset_archive(preset=preset, user=olivia)


def test_run_triggered_and_run_again_write_one_entry_each(org_a, olivia, token_a, closed_port_url):
    org_a.api_base_url = closed_port_url  # nothing listens: the run is rejected, still audited
    org_a.save()
    with writes_one(AuditAction.RUN_TRIGGERED):
        first = run_trigger(organisation=org_a, workflow_id=5, input={}, user=olivia).run
    with writes_one(AuditAction.RUN_AGAIN):
        run_trigger(organisation=org_a, workflow_id=5, input={}, user=olivia, rerun_of=first)


def test_entries_record_actor_organisation_ip_and_what_changed(org_a, alice):
    membership = Membership.objects.get(user__username="victor")
    org_actions.member_change_role(
        membership=membership, role=Role.OPERATOR, user=alice, ip="::ffff:10.1.2.3"
    )
    entry = AuditEntry.objects.get(action=AuditAction.MEMBER_ROLE_CHANGED)
    assert entry.actor == alice
    assert entry.organisation == org_a
    assert entry.changes == {"user": "victor", "role": ["viewer", "operator"]}
    assert entry.ip is not None


# --- The hash chain ------------------------------------------------------------------------


@pytest.fixture
def chain(org_a, alice):
    """Five entries, of every shape: with and without actor, organisation, IPv4 and IPv6."""
    record = AuditEntry.objects.record
    entries = [
        record(action=AuditAction.LOGIN, actor=alice, ip="192.0.2.1"),
        record(action=AuditAction.LOGIN_FAILED, actor_label="mallory", ip="2001:db8::1"),
        # IPv4-mapped IPv6: the database spells it differently from ipaddress.
        record(
            action=AuditAction.TOKEN_REVOKED,
            actor=alice,
            organisation=org_a,
            changes={"hint": "api_…wxyz", "n": 1.5, "ü": [1, None]},
            ip="::ffff:1.2.3.4",
        ),
        record(action=AuditAction.WEBHOOK_REJECTED, actor_label="webhook", organisation=org_a),
        record(action=AuditAction.LOGOUT, actor=alice, ip="127.0.0.1"),
    ]
    return [entry.pk for entry in entries]


def verify() -> str:
    from io import StringIO

    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def test_verify_audit_passes_on_an_untouched_chain(chain):
    output = verify()
    assert f"{len(chain)} entries verified" in output
    assert f"Last entry: #{chain[-1]}" in output


def test_verify_audit_passes_on_an_empty_log(db):
    assert "0 entries verified" in verify()


def test_verify_audit_finds_an_edited_entry(chain):
    target = chain[2]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET actor_label = %s WHERE id = %s", ["bob", target])
    with pytest.raises(CommandError, match=rf"entry #{target}: .*edited"):
        verify()


def test_verify_audit_finds_an_edited_change_or_time(chain):
    target = chain[1]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET created_at = created_at - INTERVAL '1 second' WHERE id = %s"
            if connection.vendor == "postgresql"
            else f"UPDATE {TABLE} SET created_at = '2001-01-01 00:00:00' WHERE id = %s",
            [target],
        )
    report = verify_audit_chain()
    assert (report.broken_id, report.verified) == (target, 1)


def test_verify_audit_finds_a_deleted_entry(chain):
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [chain[2]])
    with pytest.raises(CommandError, match=rf"entry #{chain[3]}: .*#{chain[1]}.*deleted"):
        verify()


def test_verify_audit_finds_a_deleted_first_entry(chain):
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [chain[0]])
    with pytest.raises(CommandError, match=rf"entry #{chain[1]}: it is the first entry"):
        verify()


def test_verify_audit_finds_swapped_entries(chain):
    a, b = chain[1], chain[3]
    with connection.cursor() as cursor:
        # Swap the two rows' places in the id order (their content moves with them).
        cursor.execute(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [-a, a])
        cursor.execute(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [a, b])
        cursor.execute(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [b, -a])
    report = verify_audit_chain()
    assert report.broken_id == a
    assert "reordered" in report.problem
    with pytest.raises(CommandError):
        verify()


def test_verify_audit_streams_large_logs_in_chunks(chain):
    report = verify_audit_chain(chunk_size=2)
    assert report.ok and report.verified == len(chain)
