"""
RELIABILITY.md 11, 13, 14: CSRF and cookies, login throttling, security headers.
"""

import pytest
from django.test import Client
from django.urls import reverse

from runs.models import AuditAction, AuditEntry
from tests.conftest import PASSWORD


def attempt(client, username, password):
    return client.post(reverse("login"), {"username": username, "password": password})


@pytest.fixture
def fresh_axes(db):
    from axes.utils import reset

    reset()
    yield
    reset()


def test_repeated_failures_lock_out_even_the_right_password(client, alice, fresh_axes, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "alice", "wrong-password")
    response = attempt(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEntry.objects.filter(
        action=AuditAction.LOGIN_LOCKED_OUT, actor_label="alice"
    ).exists()


def test_a_few_failures_then_the_right_password_logs_in(client, alice, fresh_axes, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, "alice", "wrong-password")
    response = attempt(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_the_lockout_is_per_username_and_address(client, alice, bob, fresh_axes, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "alice", "wrong-password")
    assert attempt(client, "bob", PASSWORD).status_code == 302


HEADER_PAGES = ["/accounts/login/", "/", "/orgs/"]


@pytest.mark.parametrize("url", HEADER_PAGES)
def test_security_headers_on_every_page(client_for, alice, url):
    response = client_for(alice).get(url)
    csp = response["Content-Security-Policy"]
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_script_or_style(client_for, alice, org_a):
    import re

    for url in ["/accounts/login/", "/", "/orgs/", org_a.get_absolute_url()]:
        html = client_for(alice).get(url).content.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag, (url, tag)  # external scripts only
        assert "<style" not in html, url
        assert " style=" not in html, url
        assert " onclick=" not in html and " onload=" not in html, url


def test_htmx_is_told_not_to_inject_inline_styles(client_for, alice):
    html = client_for(alice).get("/").content.decode()
    assert "includeIndicatorStyles" in html


def test_production_cookies_are_secure_httponly_and_samesite(settings):
    # The production defaults (debug off): see test_settings for check --deploy.
    assert settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE
    assert settings.SESSION_COOKIE_HTTPONLY
    assert settings.SESSION_COOKIE_SAMESITE == "Lax"


def test_login_form_is_csrf_protected(alice, fresh_axes):
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403


def test_lockout_uses_the_audit_logs_client_address_rules(client, alice, fresh_axes, settings):
    settings.CHAMP_PORTAL_TRUSTED_PROXIES = ["10.0.0.5"]
    via_proxy = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "alice", "password": "x"}, **via_proxy)
    locked = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD}, **via_proxy
    )
    assert locked.status_code == 429
    # Another client behind the same proxy is not locked out with it.
    other = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "198.51.100.9"}
    ok = client.post(reverse("login"), {"username": "alice", "password": PASSWORD}, **other)
    assert ok.status_code == 302
    # A peer that is not a trusted proxy cannot pick its address by header.
    spoofed = {"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": "198.51.100.9"}
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "alice", "password": "x"}, **spoofed)
    after = client.post(
        reverse("login"),
        {"username": "alice", "password": PASSWORD},
        **{"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": "203.0.113.99"},
    )
    assert after.status_code == 429
