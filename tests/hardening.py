"""
Shared fixtures and helpers of the security and reliability suites
(``tests/test_security_*.py``, ``tests/test_reliability_*.py``; RELIABILITY.md).

* ``world``: two organisations with every kind of object (members of each
  role, tokens, presets, runs with events, webhook secrets) built in code.
* ``ID_ROUTES``: every URL pattern of the portal that carries an object id,
  with the role it needs and a request that would change something; the
  scoping tests fail when a pattern is added without an entry here.
* ``db_snapshot()``: every row a request could change, to prove that a
  refused request changed nothing.

Star-imported by the test modules (``__all__``), like ``tests/run_fixtures.py``.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from runs import lifecycle
from runs import organisations as org_actions
from runs.models import (
    ApiToken,
    AuditEntry,
    EventSource,
    Membership,
    NotificationSettings,
    Organisation,
    PresetVersion,
    Role,
    Run,
    RunEvent,
    RunNotification,
    RunStatus,
    SweepSlot,
    WorkflowPreset,
)
from tests.conftest import KNOWN_TOKEN

__all__ = [
    "ID_ROUTES",
    "NO_ID_ROUTES",
    "PortalPattern",
    "Route",
    "World",
    "db_snapshot",
    "portal_patterns",
    "record_run",
    "world",
]


# --- The world ------------------------------------------------------------------------------


@dataclass
class World:
    """Everything the crawl and the scoping tests need, for org A (the victim) and org B."""

    alice: object  # admin of A
    olivia: object  # operator of A
    victor: object  # viewer of A
    bob: object  # admin of B (the outsider)
    root: object  # superuser, admin of A (the audit console)
    org_a: Organisation
    org_b: Organisation
    token_a: ApiToken  # KNOWN_TOKEN, the newest active token of A
    token_a_revoked: ApiToken
    token_b: ApiToken
    preset_a: WorkflowPreset
    preset_a_archived: WorkflowPreset
    preset_b: WorkflowPreset
    run_a: Run  # pending, from preset_a, with the token
    run_a_done: Run  # completed, a re-run of run_a
    run_a_unknown: Run
    run_b: Run
    secret_a: str
    secret_b: str
    memberships: dict = field(default_factory=dict)  # username -> Membership


def record_run(organisation, *, status=RunStatus.PENDING, output=None, champ_run_id=None, **kw):
    """A run stored the only way runs are: opened, then moved through the lifecycle."""
    kw.setdefault("workflow_id", 101)
    kw.setdefault("input", {"message": "hello"})
    run = lifecycle.open_run(organisation=organisation, **kw)
    if status != RunStatus.UNKNOWN:
        lifecycle.record_status(
            run,
            seen=RunStatus.UNKNOWN,
            new=status,
            source=EventSource.TRIGGER,
            output=output,
            snapshot={"id": champ_run_id or 50_000 + run.pk, "status": status},
            extra_fields={
                "champ_run_id": champ_run_id or 50_000 + run.pk,
                **({"next_poll_at": timezone.now()} if status == RunStatus.PENDING else {}),
            },
        )
    run.refresh_from_db()
    return run


@pytest.fixture
def world(org_a, org_b, alice, olivia, victor, bob, make_user) -> World:
    root = make_user("root", is_staff=True, is_superuser=True)
    Membership.objects.create(user=root, organisation=org_a, role=Role.ADMIN)
    revoked = org_actions.token_add(
        organisation=org_a, label="Old", secret="api_oldoldoldoldold_0000", user=alice
    )
    org_actions.token_revoke(token=revoked, user=alice)
    # Added last, so it is the newest active token: the one a run of A is sent with.
    token_a = org_actions.token_add(
        organisation=org_a, label="Main", secret=KNOWN_TOKEN, user=alice
    )
    token_b = org_actions.token_add(
        organisation=org_b, label="B main", secret="api_bbbbbbbbbbbbbbbb_bob", user=bob
    )
    preset_a = WorkflowPreset.objects.create(
        organisation=org_a, name="Echo hello", workflow_id=101, input={"message": "hello"}
    )
    archived = WorkflowPreset.objects.create(
        organisation=org_a, name="Old preset", workflow_id=101, input={}, archived=True
    )
    preset_b = WorkflowPreset.objects.create(
        organisation=org_b, name="Preset of B", workflow_id=101, input={"b": 1}
    )
    run_a = record_run(
        org_a, preset=preset_a, preset_input=preset_a.input, token=token_a, triggered_by=olivia
    )
    run_a_done = record_run(
        org_a,
        status=RunStatus.COMPLETED,
        output={"echo": {"message": "hello"}},
        token=token_a,
        triggered_by=olivia,
        rerun_of=run_a,
        triggered_at=timezone.now() - timedelta(minutes=5),
    )
    run_a_unknown = record_run(org_a, status=RunStatus.UNKNOWN, token=token_a, triggered_by=alice)
    run_b = record_run(org_b, preset=preset_b, token=token_b, triggered_by=bob)
    secret_a = org_actions.webhook_secret_create(organisation=org_a, user=alice)
    secret_b = org_actions.webhook_secret_create(organisation=org_b, user=bob)
    for organisation in (org_a, org_b):
        organisation.refresh_from_db()
    memberships = {m.user.username: m for m in Membership.objects.select_related("user")}
    return World(
        alice=alice,
        olivia=olivia,
        victor=victor,
        bob=bob,
        root=root,
        org_a=org_a,
        org_b=org_b,
        token_a=token_a,
        token_a_revoked=revoked,
        token_b=token_b,
        preset_a=preset_a,
        preset_a_archived=archived,
        preset_b=preset_b,
        run_a=run_a,
        run_a_done=run_a_done,
        run_a_unknown=run_a_unknown,
        run_b=run_b,
        secret_a=secret_a,
        secret_b=secret_b,
        memberships=memberships,
    )


# --- Snapshots ------------------------------------------------------------------------------

#: Every table a portal request could write to.
SNAPSHOT_MODELS = (
    Organisation,
    Membership,
    ApiToken,
    WorkflowPreset,
    PresetVersion,
    Run,
    RunEvent,
    AuditEntry,
    NotificationSettings,
    RunNotification,
    SweepSlot,
)


def db_snapshot() -> dict:
    """Every row of every model a request could change, in a comparable form."""
    return {
        model._meta.label: list(model.objects.order_by("pk").values()) for model in SNAPSHOT_MODELS
    }


# --- The portal's URL patterns --------------------------------------------------------------


@dataclass(frozen=True)
class PortalPattern:
    name: str
    route: str
    params: tuple[str, ...]


def portal_patterns() -> list[PortalPattern]:
    """Every URL pattern of the project outside the admin (which is staff-only)."""
    found: list[PortalPattern] = []

    def walk(patterns, prefix: str, params: tuple[str, ...]) -> None:
        for pattern in patterns:
            converters = tuple(getattr(pattern.pattern, "converters", {}))
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue
                walk(pattern.url_patterns, prefix + str(pattern.pattern), params + converters)
            elif isinstance(pattern, URLPattern):
                found.append(
                    PortalPattern(pattern.name, prefix + str(pattern.pattern), params + converters)
                )

    walk(get_resolver().url_patterns, "", ())
    return found


VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN


@dataclass(frozen=True)
class Route:
    """
    One id-bearing URL pattern: the victim's objects (org A) to fill it, the
    role its GET and POST need (None: the method is not offered), and a POST
    body that would change something if it were let through.
    """

    kwargs: Callable[[World], dict]
    get: str | None = None
    post: str | None = None
    data: Callable[[World], dict] = lambda w: {}
    #: The sub-object ids of org A, for the "org B's slug with org A's id" case.
    cross: Callable[[World], dict] | None = None


def _slug(w: World) -> dict:
    return {"slug": w.org_a.slug}


ID_ROUTES: dict[str, Route] = {
    "organisation_detail": Route(_slug, get=VIEWER),
    "organisation_edit": Route(
        _slug,
        get=ADMIN,
        post=ADMIN,
        data=lambda w: {
            "name": "Hacked",
            "slug": w.org_a.slug,
            "api_base_url": "https://evil.example",
        },
    ),
    "token_add": Route(
        _slug, post=ADMIN, data=lambda w: {"label": "evil", "secret": "api_evilevilevilevil"}
    ),
    "token_revoke": Route(
        lambda w: {"slug": w.org_a.slug, "token_id": w.token_a.pk},
        post=ADMIN,
        cross=lambda w: {"token_id": w.token_a.pk},
    ),
    "token_delete": Route(
        lambda w: {"slug": w.org_a.slug, "token_id": w.token_a.pk},
        post=ADMIN,
        cross=lambda w: {"token_id": w.token_a.pk},
    ),
    "member_add": Route(
        _slug, post=ADMIN, data=lambda w: {"username": w.bob.username, "role": "admin"}
    ),
    "member_role": Route(
        lambda w: {"slug": w.org_a.slug, "membership_id": w.memberships["victor"].pk},
        post=ADMIN,
        data=lambda w: {"role": "admin"},
        cross=lambda w: {"membership_id": w.memberships["victor"].pk},
    ),
    "member_remove": Route(
        lambda w: {"slug": w.org_a.slug, "membership_id": w.memberships["alice"].pk},
        post=ADMIN,
        cross=lambda w: {"membership_id": w.memberships["alice"].pk},
    ),
    "webhook_secret_create": Route(_slug, post=ADMIN),
    "preset_detail": Route(lambda w: {"pk": w.preset_a.pk}, get=VIEWER),
    "preset_edit": Route(
        lambda w: {"pk": w.preset_a.pk},
        get=OPERATOR,
        post=OPERATOR,
        data=lambda w: {
            "name": "Hacked",
            "workflow_id": "1",
            "input": '{"hacked": true}',
            "description": "",
        },
    ),
    "preset_archive": Route(lambda w: {"pk": w.preset_a.pk}, post=OPERATOR),
    "preset_unarchive": Route(lambda w: {"pk": w.preset_a_archived.pk}, post=OPERATOR),
    "preset_run": Route(lambda w: {"pk": w.preset_a.pk}, post=OPERATOR),
    "preset_versions": Route(lambda w: {"pk": w.preset_a.pk}, get=VIEWER),
    "run_detail": Route(lambda w: {"pk": w.run_a.pk}, get=VIEWER),
    "run_live": Route(lambda w: {"pk": w.run_a.pk}, get=VIEWER),
    "run_again": Route(
        lambda w: {"pk": w.run_a.pk},
        get=OPERATOR,
        post=OPERATOR,
        data=lambda w: {"organisation": w.org_a.pk, "workflow_id": "101", "input": "{}"},
    ),
    "run_save_preset": Route(
        lambda w: {"pk": w.run_a.pk},
        get=OPERATOR,
        post=OPERATOR,
        data=lambda w: {"mode": "new", "name": "Lifted", "input": "{}", "description": ""},
    ),
    # Not a member's page: authenticated by the organisation's webhook secret
    # (tests/test_security_scoping.py has its own test for it).
    "champ_webhook": Route(_slug),
}

#: Patterns without an object id (their scoping is by the user's memberships).
NO_ID_ROUTES = {
    "login",
    "logout",
    "dashboard",
    "organisation_list",
    "organisation_create",
    "preset_list",
    "preset_create",
    "run_list",
    "run_export_csv",
    "run_export_json",
    "run_create",
    "active_runs",
    "run_compare",  # its ids are in the query string: tests/test_security_scoping.py
    "notification_settings",  # my own settings only
}
