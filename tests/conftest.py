"""Shared fixtures: users, organisations and memberships built in code."""

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from runs import organisations as org_actions
from runs.models import Membership, Organisation

# TEMP until the simulator fixtures land.
pytest_plugins = (
    ["tests.champ_fixtures"] if (Path(__file__).parent / "champ_fixtures.py").exists() else []
)

PASSWORD = "a-long-test-password-1"
#: A token value tests can search for in every page, log and table.
KNOWN_TOKEN = "api_KNOWNsecretTOKENvalue_9f3a7c"


@pytest.fixture(autouse=True)
def _plain_http_in_tests(settings):
    # Production settings stay on (secure cookies, HSTS); only the redirect to
    # HTTPS is off, since the test client and live servers speak plain HTTP.
    settings.SECURE_SSL_REDIRECT = False
    # Password hashing is deliberately slow; tests do not need that.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The local-memory cache outlives a test (e.g. the poller's kick de-dupe).
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def make_user(db):
    def make(username: str, **extra):
        return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)

    return make


@pytest.fixture
def make_org(db):
    def make(slug: str, *, api_base_url: str = "http://champ.test", **members):
        """Create an organisation; ``members`` maps a role to users (admin=[alice])."""
        organisation = Organisation.objects.create(
            name=slug.title(), slug=slug, api_base_url=api_base_url
        )
        for role, users in members.items():
            for user in users:
                Membership.objects.create(user=user, organisation=organisation, role=role)
        return organisation

    return make


@pytest.fixture
def alice(make_user):
    """Admin of org A."""
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    """Admin of org B."""
    return make_user("bob")


@pytest.fixture
def olivia(make_user):
    """Operator of org A."""
    return make_user("olivia")


@pytest.fixture
def victor(make_user):
    """Viewer of org A."""
    return make_user("victor")


@pytest.fixture
def org_a(make_org, alice, olivia, victor):
    return make_org("org-a", admin=[alice], operator=[olivia], viewer=[victor])


@pytest.fixture
def org_b(make_org, bob):
    return make_org("org-b", admin=[bob])


@pytest.fixture
def token_a(org_a, alice):
    return org_actions.token_add(organisation=org_a, label="Main", secret=KNOWN_TOKEN, user=alice)


@pytest.fixture
def token_b(org_b, bob):
    return org_actions.token_add(
        organisation=org_b, label="B main", secret="api_bbbbbbbbbbbbbbbb_bob", user=bob
    )


def login(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def client_for(client):
    """``client_for(user)``: the test client logged in as ``user``."""

    def make(user):
        return login(client, user)

    return make
