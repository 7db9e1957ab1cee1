"""
RELIABILITY.md 11 and 12: organisation scoping (IDOR), roles, CSRF and login on
every URL pattern of the portal.

The URL patterns are enumerated from the resolver: a new pattern with an
object id fails ``test_every_id_bearing_url_pattern_is_in_the_scoping_table``
until it is added to ``tests.hardening.ID_ROUTES`` (and so to every test here).
"""

import json

import pytest
from django.test import Client
from django.urls import reverse

from runs.models import Run, WorkflowPreset
from tests.hardening import *  # noqa: F403
from tests.hardening import ID_ROUTES, NO_ID_ROUTES, db_snapshot, portal_patterns

METHODS = [
    (name, method)
    for name, route in ID_ROUTES.items()
    for method in ("get", "post")
    if getattr(route, method) is not None
]


@pytest.fixture(autouse=True)
def nothing_reaches_champ(world, closed_port_url):
    """Org A and B point where nothing listens: a request let through would show as a run."""
    for organisation in (world.org_a, world.org_b):
        organisation.api_base_url = closed_port_url
        organisation.save(update_fields=["api_base_url"])


@pytest.fixture
def closed_port_url():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def call(client, world, name, method, *, kwargs=None, data=None):
    route = ID_ROUTES[name]
    url = reverse(name, kwargs=kwargs or route.kwargs(world))
    body = route.data(world) if data is None else data
    return getattr(client, method)(url, body) if method == "post" else client.get(url)


# --- The tables are complete


def test_every_id_bearing_url_pattern_is_in_the_scoping_table():
    patterns = portal_patterns()
    with_ids = {p.name for p in patterns if p.params}
    without_ids = {p.name for p in patterns if not p.params}
    assert with_ids == set(ID_ROUTES), (
        "A URL pattern with an object id must be added to tests.hardening.ID_ROUTES "
        "(and so to the IDOR, role and CSRF tests)"
    )
    assert without_ids == NO_ID_ROUTES


# --- Another organisation's member: 404, nothing changed


@pytest.mark.parametrize("name, method", METHODS)
def test_organisation_scoping_member_of_another_organisation_gets_404_and_nothing_changes(
    client_for, world, name, method
):
    """RELIABILITY.md 12: bob (admin of B) on every id of A, both methods."""
    client = client_for(world.bob)
    before = db_snapshot()
    response = call(client, world, name, method)
    assert response.status_code == 404, (name, method, response.status_code)
    assert db_snapshot() == before


@pytest.mark.parametrize("name", [n for n, r in ID_ROUTES.items() if r.cross])
def test_organisation_scoping_my_slug_with_another_organisations_sub_id_is_404(
    client_for, world, name
):
    """Bob's own slug (where he is admin) with a token or membership id of A."""
    route = ID_ROUTES[name]
    client = client_for(world.bob)
    before = db_snapshot()
    kwargs = {"slug": world.org_b.slug, **route.cross(world)}
    response = call(client, world, name, "post", kwargs=kwargs)
    assert response.status_code == 404
    assert db_snapshot() == before


@pytest.mark.parametrize("name", [n for n, r in ID_ROUTES.items() if r.get or r.post])
def test_organisation_scoping_a_foreign_id_looks_exactly_like_a_missing_one(
    client_for, world, name
):
    """No existence oracle: another organisation's id and an id that does not exist."""
    route = ID_ROUTES[name]
    method = "get" if route.get else "post"
    client = client_for(world.bob)
    foreign = call(client, world, name, method)
    missing_kwargs = {
        key: ("no-such-org" if key == "slug" else 10**9) for key in route.kwargs(world)
    }
    missing = call(client, world, name, method, kwargs=missing_kwargs)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content


def test_organisation_scoping_the_webhook_takes_only_its_own_organisations_secret(client, world):
    """Org B's secret at org A's webhook URL: 401, the run of A untouched."""
    before = Run.objects.get(pk=world.run_a.pk).status
    body = {
        "event": "workflow_run.completed",
        "data": {"workflow_run": {"id": world.run_a.champ_run_id, "status": "completed"}},
    }
    response = client.post(
        reverse("champ_webhook", args=[world.org_a.slug]),
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world.secret_b}",
    )
    assert response.status_code == 401
    assert Run.objects.get(pk=world.run_a.pk).status == before
    # Org A's own secret at org B's URL finds no run of A either.
    response = client.post(
        reverse("champ_webhook", args=[world.org_b.slug]),
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world.secret_a}",
    )
    assert response.status_code == 401
    assert Run.objects.get(pk=world.run_a.pk).status == before


# --- Roles: viewers read, operators run, admins manage


@pytest.mark.parametrize("name, method", METHODS)
def test_organisation_scoping_viewers_cannot_run_or_manage(client_for, world, name, method):
    """RELIABILITY.md 12: victor (viewer of A) reads (200); every write is 403, changes nothing."""
    needed = getattr(ID_ROUTES[name], method)
    client = client_for(world.victor)
    before = db_snapshot()
    response = call(client, world, name, method)
    if needed == "viewer":
        assert response.status_code == 200, (name, method)
    else:
        assert response.status_code == 403, (name, method, response.status_code)
        assert db_snapshot() == before


@pytest.mark.parametrize(
    "name, method", [(n, m) for n, m in METHODS if getattr(ID_ROUTES[n], m) == "admin"]
)
def test_organisation_scoping_operators_cannot_manage_tokens_or_members(
    client_for, world, name, method
):
    client = client_for(world.olivia)
    before = db_snapshot()
    response = call(client, world, name, method)
    assert response.status_code == 403, (name, method, response.status_code)
    assert db_snapshot() == before


# --- Forms with a foreign id


def test_organisation_scoping_run_form_refuses_another_organisations_organisation(
    client_for, world
):
    client = client_for(world.olivia)  # logging in is audited: before the snapshot
    before = db_snapshot()
    response = client.post(
        reverse("run_create"),
        {"organisation": world.org_b.pk, "workflow_id": "101", "input": "{}"},
    )
    assert response.status_code == 200
    assert "organisation" in response.context["form"].errors
    assert db_snapshot() == before


def test_organisation_scoping_run_form_refuses_another_organisations_token(client_for, world):
    client = client_for(world.olivia)  # logging in is audited: before the snapshot
    before = db_snapshot()
    response = client.post(
        reverse("run_create"),
        {
            "organisation": world.org_a.pk,
            "token": world.token_b.pk,
            "workflow_id": "101",
            "input": "{}",
        },
    )
    assert response.status_code == 200
    assert "token" in response.context["form"].errors
    assert world.token_b.hint not in response.content.decode()
    assert db_snapshot() == before


def test_organisation_scoping_run_form_refuses_a_revoked_token(client_for, world):
    client = client_for(world.olivia)  # logging in is audited: before the snapshot
    before = db_snapshot()
    response = client.post(
        reverse("run_create"),
        {
            "organisation": world.org_a.pk,
            "token": world.token_a_revoked.pk,
            "workflow_id": "101",
            "input": "{}",
        },
    )
    assert "token" in response.context["form"].errors
    assert db_snapshot() == before


def test_organisation_scoping_run_again_refuses_another_organisation(client_for, world):
    client = client_for(world.olivia)  # logging in is audited: before the snapshot
    before = db_snapshot()
    response = client.post(
        reverse("run_again", args=[world.run_a.pk]),
        {"organisation": world.org_b.pk, "workflow_id": "101", "input": "{}"},
    )
    assert response.status_code == 200
    assert "organisation" in response.context["form"].errors
    assert db_snapshot() == before


def test_organisation_scoping_new_run_from_another_organisations_preset_is_404(client_for, world):
    client = client_for(world.olivia)
    url = reverse("run_create") + f"?preset={world.preset_b.pk}"
    before = db_snapshot()
    assert client.get(url).status_code == 404
    post = {"organisation": world.org_a.pk, "workflow_id": "101", "input": "{}"}
    assert client.post(url, post).status_code == 404
    assert db_snapshot() == before


def test_organisation_scoping_preset_form_refuses_another_organisation(client_for, world):
    client = client_for(world.olivia)  # logging in is audited: before the snapshot
    before = db_snapshot()
    response = client.post(
        reverse("preset_create"),
        {
            "organisation": world.org_b.pk,
            "name": "Planted",
            "workflow_id": "1",
            "input": "{}",
            "description": "",
        },
    )
    assert response.status_code == 200
    assert "organisation" in response.context["form"].errors
    assert db_snapshot() == before


def test_organisation_scoping_preset_edit_cannot_move_a_preset_to_another_organisation(
    client_for, world
):
    response = client_for(world.olivia).post(
        reverse("preset_edit", args=[world.preset_a.pk]),
        {
            "organisation": world.org_b.pk,
            "name": world.preset_a.name,
            "workflow_id": "101",
            "input": '{"message": "hello"}',
            "description": "",
        },
    )
    assert response.status_code == 302
    assert WorkflowPreset.objects.get(pk=world.preset_a.pk).organisation_id == world.org_a.pk


def test_organisation_scoping_preset_create_does_not_prefill_another_organisation(
    client_for, world
):
    response = client_for(world.olivia).get(
        reverse("preset_create") + f"?organisation={world.org_b.slug}"
    )
    assert response.status_code == 200
    assert world.org_b.name not in response.content.decode()
    assert response.context["form"].initial.get("organisation") != world.org_b.pk


def test_organisation_scoping_preset_list_of_another_organisation_is_empty(client_for, world):
    response = client_for(world.olivia).get(
        reverse("preset_list") + f"?organisation={world.org_b.slug}"
    )
    assert response.status_code == 200
    assert list(response.context["presets"]) == []
    assert world.preset_b.name not in response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        lambda w: {"run": [w.run_b.pk, w.run_a.pk]},
        lambda w: {"run": [w.run_a.pk, w.run_b.pk]},
        lambda w: {"a": f"run-{w.run_a.pk}", "b": f"run-{w.run_b.pk}"},
        lambda w: {"a": f"preset-{w.preset_b.pk}", "b": f"run-{w.run_a.pk}"},
        lambda w: {"a": f"run-{w.run_a.pk}", "b": f"preset-{w.preset_b.pk}-v1"},
    ],
    ids=["runs-left", "runs-right", "a-b", "preset-left", "preset-version-right"],
)
def test_organisation_scoping_compare_refuses_another_organisations_side(client_for, world, query):
    client = client_for(world.olivia)
    response = client.get(reverse("run_compare"), query(world))
    assert response.status_code == 404
    assert world.preset_b.name not in response.content.decode()
    # The same comparison within org A is fine, for a viewer too.
    mine = {"a": f"run-{world.run_a.pk}", "b": f"preset-{world.preset_a.pk}"}
    assert client_for(world.victor).get(reverse("run_compare"), mine).status_code == 200


def test_organisation_scoping_share_link_does_not_prefill_another_organisation(client_for, world):
    response = client_for(world.olivia).get(
        reverse("run_create"),
        {"organisation": world.org_b.slug, "workflow": "101", "input": '{"x": 1}'},
    )
    assert response.status_code == 200
    assert response.context["form"].initial.get("organisation") != world.org_b.pk
    assert world.org_b.name not in response.content.decode()


@pytest.mark.parametrize(
    "param, value",
    [
        ("organisation", lambda w: w.org_b.slug),
        ("preset", lambda w: w.preset_b.pk),
        ("triggered_by", lambda w: w.bob.pk),
    ],
)
@pytest.mark.parametrize("name", ["run_list", "run_export_csv", "run_export_json"])
def test_organisation_scoping_history_filters_refuse_another_organisations_ids(
    client_for, world, param, value, name
):
    response = client_for(world.olivia).get(reverse(name), {param: value(world)})
    if name == "run_list":
        assert response.status_code == 200
        assert param in response.context["form"].errors
        assert response.context["page"].rows == []
    else:
        assert response.status_code == 400  # nothing exported, rather than everything
    text = b"".join(getattr(response, "streaming_content", [response.content])).decode()
    assert world.preset_b.name not in text


# --- CSRF and login on every pattern


def _kwargs_for(world, pattern):
    if pattern.name in ID_ROUTES:
        return ID_ROUTES[pattern.name].kwargs(world)
    return {}


def test_csrf_every_post_is_refused_without_a_token_except_the_webhook(world):
    """RELIABILITY.md 11: every view of the portal, whether it writes or not."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.alice)
    before = db_snapshot()
    for pattern in portal_patterns():
        if pattern.name == "champ_webhook":
            continue
        url = reverse(pattern.name, kwargs=_kwargs_for(world, pattern))
        route = ID_ROUTES.get(pattern.name)
        response = client.post(url, route.data(world) if route else {})
        assert response.status_code == 403, (url, response.status_code)
        assert b"CSRF" in response.content, url
    assert db_snapshot() == before
    # The webhook is exempt from CSRF (Champ has no session), not from its secret.
    webhook = reverse("champ_webhook", args=[world.org_a.slug])
    assert client.post(webhook, "{}", content_type="application/json").status_code == 401


def test_login_is_required_on_every_page_except_login_and_the_webhook(world):
    client = Client()
    login_url = reverse("login")
    for pattern in portal_patterns():
        url = reverse(pattern.name, kwargs=_kwargs_for(world, pattern))
        route = ID_ROUTES.get(pattern.name)
        method = "post" if route is not None and route.get is None else "get"
        response = getattr(client, method)(url)
        if pattern.name == "login":
            assert response.status_code == 200
        elif pattern.name == "champ_webhook":
            assert response.status_code == 401
        else:
            assert response.status_code == 302, (url, response.status_code)
            assert response["Location"].startswith(login_url), url


def test_admin_views_refuse_every_non_staff_member(client_for, world):
    """The audit console is for staff only: an organisation admin is sent to the admin login."""
    from django.contrib import admin

    client = client_for(world.alice)
    urls = [reverse("admin:index")]
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[first.pk]))
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url
