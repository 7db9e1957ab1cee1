"""Organisations, members and tokens: pages, roles, scoping, CSRF, write-only tokens."""

import pytest
from django.test import Client
from django.urls import reverse

from runs.models import ApiToken, AuditAction, AuditEntry, Membership, Organisation, Role
from tests.conftest import KNOWN_TOKEN


def test_every_page_requires_login(client, org_a):
    for url in ["/", "/orgs/", f"/orgs/{org_a.slug}/", "/orgs/new/"]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_login_page_renders_and_logs_in(client, alice):
    assert client.get(reverse("login")).status_code == 200
    response = client.post(
        reverse("login"), {"username": "alice", "password": "a-long-test-password-1"}
    )
    assert response.status_code == 302
    assert AuditEntry.objects.filter(action=AuditAction.LOGIN, actor=alice).exists()


def test_failed_login_is_audited_without_the_password(client, alice):
    client.post(reverse("login"), {"username": "alice", "password": "wrong-password-x"})
    entry = AuditEntry.objects.get(action=AuditAction.LOGIN_FAILED)
    assert entry.actor_label == "alice"
    assert "wrong-password-x" not in str(entry.changes)


def test_user_sees_only_their_organisations(client_for, alice, org_a, org_b):
    html = client_for(alice).get(reverse("organisation_list")).content.decode()
    assert "Org-A" in html
    assert "Org-B" not in html


def test_creating_an_organisation_makes_me_its_admin(client_for, alice):
    response = client_for(alice).post(
        reverse("organisation_create"),
        {"name": "Acme Ops", "slug": "", "api_base_url": "https://api.champ.ai"},
    )
    organisation = Organisation.objects.get(slug="acme-ops")
    assert response.status_code == 302
    assert organisation.role_of(alice) == Role.ADMIN
    assert AuditEntry.objects.filter(action=AuditAction.ORGANISATION_CREATED).exists()


def test_admin_adds_lists_masked_and_revokes_a_token(client_for, alice, org_a):
    client = client_for(alice)
    response = client.post(
        reverse("token_add", args=[org_a.slug]),
        {"label": "CI", "secret": KNOWN_TOKEN},
        follow=True,
    )
    html = response.content.decode()
    token = ApiToken.objects.get(organisation=org_a)
    assert token.reveal() == KNOWN_TOKEN
    assert KNOWN_TOKEN not in html
    assert "api_…" + KNOWN_TOKEN[-4:] in html
    client.post(reverse("token_revoke", args=[org_a.slug, token.pk]))
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert token.state == "revoked"
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {AuditAction.TOKEN_ADDED, AuditAction.TOKEN_REVOKED} <= actions


@pytest.mark.parametrize(
    "secret, message",
    [
        ("sk_live_abcdefghijkl", "start with"),
        ("api_short", "malformed"),
        ("api_has spaces inside", "malformed"),
    ],
)
def test_a_value_that_is_not_a_champ_token_is_refused(client_for, alice, org_a, secret, message):
    response = client_for(alice).post(
        reverse("token_add", args=[org_a.slug]), {"label": "x", "secret": secret}, follow=True
    )
    assert not ApiToken.objects.exists()
    assert message in response.content.decode()
    assert secret not in response.content.decode()


def test_admin_deletes_a_token(client_for, alice, org_a, token_a):
    client_for(alice).post(reverse("token_delete", args=[org_a.slug, token_a.pk]))
    assert not ApiToken.objects.filter(pk=token_a.pk).exists()
    assert AuditEntry.objects.filter(action=AuditAction.TOKEN_DELETED).exists()


def test_admin_manages_members_and_roles(client_for, alice, org_a, make_user):
    carol = make_user("carol")
    client = client_for(alice)
    client.post(reverse("member_add", args=[org_a.slug]), {"username": "carol", "role": "viewer"})
    membership = Membership.objects.get(user=carol, organisation=org_a)
    assert membership.role == Role.VIEWER
    client.post(reverse("member_role", args=[org_a.slug, membership.pk]), {"role": "operator"})
    membership.refresh_from_db()
    assert membership.role == Role.OPERATOR
    client.post(reverse("member_remove", args=[org_a.slug, membership.pk]))
    assert not Membership.objects.filter(pk=membership.pk).exists()
    actions = list(AuditEntry.objects.values_list("action", flat=True))
    for action in (
        AuditAction.MEMBER_ADDED,
        AuditAction.MEMBER_ROLE_CHANGED,
        AuditAction.MEMBER_REMOVED,
    ):
        assert action in actions


def test_the_last_admin_cannot_be_demoted_or_removed(client_for, alice, org_a):
    membership = Membership.objects.get(user=alice, organisation=org_a)
    client = client_for(alice)
    client.post(reverse("member_role", args=[org_a.slug, membership.pk]), {"role": "viewer"})
    client.post(reverse("member_remove", args=[org_a.slug, membership.pk]))
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN


# --- Scoping: a member of org A gets 404 on every org-B page --------------------------


def org_b_urls(org_b, token_b):
    membership = Membership.objects.filter(organisation=org_b).first()
    return [
        ("get", reverse("organisation_detail", args=[org_b.slug]), {}),
        ("get", reverse("organisation_edit", args=[org_b.slug]), {}),
        (
            "post",
            reverse("organisation_edit", args=[org_b.slug]),
            {"name": "Hacked", "slug": org_b.slug, "api_base_url": "https://evil.example"},
        ),
        (
            "post",
            reverse("token_add", args=[org_b.slug]),
            {"label": "evil", "secret": "api_evilevilevilevil"},
        ),
        ("post", reverse("token_revoke", args=[org_b.slug, token_b.pk]), {}),
        ("post", reverse("token_delete", args=[org_b.slug, token_b.pk]), {}),
        ("post", reverse("member_add", args=[org_b.slug]), {"username": "alice", "role": "admin"}),
        ("post", reverse("member_role", args=[org_b.slug, membership.pk]), {"role": "viewer"}),
        ("post", reverse("member_remove", args=[org_b.slug, membership.pk]), {}),
        ("post", reverse("webhook_secret_create", args=[org_b.slug]), {}),
    ]


def snapshot_org(org):
    org.refresh_from_db()
    return (
        org.name,
        org.api_base_url,
        org.webhook_secret_hash,
        list(org.memberships.values_list("user_id", "role")),
        list(org.tokens.values_list("pk", "revoked_at", "ciphertext")),
    )


def test_member_of_org_a_gets_404_on_every_org_b_url_and_changes_nothing(
    client_for, alice, org_a, org_b, token_b
):
    client = client_for(alice)
    before = snapshot_org(org_b)
    for method, url, data in org_b_urls(org_b, token_b):
        response = getattr(client, method)(url, data)
        assert response.status_code == 404, (method, url)
    assert snapshot_org(org_b) == before


def test_a_token_id_of_org_b_under_org_a_slug_is_404(client_for, alice, org_a, token_b):
    response = client_for(alice).post(reverse("token_revoke", args=[org_a.slug, token_b.pk]))
    assert response.status_code == 404
    token_b.refresh_from_db()
    assert token_b.revoked_at is None


@pytest.mark.parametrize("user_fixture", ["olivia", "victor"])
def test_operators_and_viewers_cannot_manage_tokens_or_members(
    request, client_for, org_a, token_a, user_fixture
):
    client = client_for(request.getfixturevalue(user_fixture))
    before = snapshot_org(org_a)
    for method, url, data in org_b_urls(org_a, token_a):
        response = getattr(client, method)(url, data)
        expected = 200 if url == reverse("organisation_detail", args=[org_a.slug]) else 403
        assert response.status_code == expected, (method, url)
    assert snapshot_org(org_a) == before


def test_viewer_page_has_no_management_forms(client_for, victor, org_a, token_a):
    html = client_for(victor).get(org_a.get_absolute_url()).content.decode()
    assert reverse("token_add", args=[org_a.slug]) not in html
    assert reverse("member_add", args=[org_a.slug]) not in html


# --- Write-only tokens and CSRF ----------------------------------------------------------


def test_plaintext_token_never_appears_in_any_page_or_admin(client, make_user, org_a, token_a):
    superuser = make_user("root", is_staff=True, is_superuser=True)
    Membership.objects.create(user=superuser, organisation=org_a, role=Role.ADMIN)
    client.force_login(superuser)
    urls = [
        "/",
        "/orgs/",
        org_a.get_absolute_url(),
        f"/orgs/{org_a.slug}/edit/",
        "/admin/",
        "/admin/runs/apitoken/",
        f"/admin/runs/apitoken/{token_a.pk}/change/",
        "/admin/runs/organisation/",
        f"/admin/runs/organisation/{org_a.pk}/change/",
        "/admin/runs/auditentry/",
        "/admin/runs/apitoken/?q=api_",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert KNOWN_TOKEN not in html, url
        assert token_a.ciphertext not in html, url
    for entry in AuditEntry.objects.all():
        assert KNOWN_TOKEN not in str(entry.changes)


def test_csrf_is_enforced_on_token_and_membership_forms(alice, org_a, token_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    membership = Membership.objects.get(user=alice, organisation=org_a)
    posts = [
        (reverse("token_add", args=[org_a.slug]), {"label": "x", "secret": "api_abcdefghijkl"}),
        (reverse("token_revoke", args=[org_a.slug, token_a.pk]), {}),
        (reverse("token_delete", args=[org_a.slug, token_a.pk]), {}),
        (reverse("member_add", args=[org_a.slug]), {"username": "bob", "role": "admin"}),
        (reverse("member_role", args=[org_a.slug, membership.pk]), {"role": "viewer"}),
        (reverse("webhook_secret_create", args=[org_a.slug]), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert ApiToken.objects.count() == 1
    token_a.refresh_from_db()
    assert token_a.revoked_at is None


def test_webhook_secret_is_shown_once_and_stored_hashed(client_for, alice, org_a):
    client = client_for(alice)
    response = client.post(reverse("webhook_secret_create", args=[org_a.slug]))
    secret = response.context["secret"]
    assert secret in response.content.decode()
    org_a.refresh_from_db()
    assert secret not in org_a.webhook_secret_hash
    assert len(secret) >= 43  # ≥ 256 bits of randomness
    assert secret not in client.get(org_a.get_absolute_url()).content.decode()
