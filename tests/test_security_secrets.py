"""
RELIABILITY.md 1-5: token keys, authenticated encryption bound to the row,
rotation, typed decryption failures, and write-only tokens.

The centrepiece is the crawl (requirement 5): with a known token stored and
used (a run triggered and polled over real HTTP), every page of the portal and
every admin page is fetched, the poller's task goes through the broker and a
worker, and then the plaintext is looked for in every response, every log
record (DEBUG, httpx and httpcore included, SQL statements too), every error
report, every broker message, every task row and every table of the database.
"""

import logging
import time

import pytest
from cryptography.fernet import Fernet
from django.contrib import admin
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django.utils.log import AdminEmailHandler

from runs import lifecycle, polling, tasks
from runs.checks import check_token_keys
from runs.models import ApiToken, Run, RunStatus
from runs.simulator import DEMO_TOKEN
from tests.conftest import KNOWN_TOKEN
from tests.hardening import *  # noqa: F403
from tests.hardening import ID_ROUTES, db_snapshot, portal_patterns, record_run
from tests.test_poller import queued_payloads
from tests.test_settings import run_manage

#: Loggers that must be captured at DEBUG (some are WARNING in settings.LOGGING).
LOGGERS = ("", "httpx", "httpcore", "django", "django.db.backends", "runs", "django_q", "aiohttp")


def key_material(settings) -> list[str]:
    return [key.strip() for key in settings.CHAMP_PORTAL_TOKEN_KEYS.split(",") if key.strip()]


def assert_no_secret(text: str | bytes, where: str, *, secrets: list[str]) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in secrets:
        assert secret not in text, f"a secret appears in {where}"


@pytest.fixture
def champ(make_champ_backend, world):
    """A loopback simulator that accepts the known token, fast enough to finish runs in a sweep."""
    backend = make_champ_backend(
        "loopback", tokens=[KNOWN_TOKEN, DEMO_TOKEN], clock=time.monotonic, time_scale=0.01
    )
    world.org_a.api_base_url = backend.base_url
    world.org_a.save(update_fields=["api_base_url"])
    return backend


@pytest.fixture
def debug_logs(caplog):
    """Every logger at DEBUG, and every SQL statement with its parameters."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    connection.force_debug_cursor = True
    yield caplog
    connection.force_debug_cursor = False


def log_texts(caplog) -> list[str]:
    texts = [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_text:
            texts.append(record.exc_text)
    return texts


# --- Requirement 1: keys outside the database, separate from SECRET_KEY ---------------------


@pytest.mark.parametrize(
    "case",
    ["file missing", "file garbled", "generated file garbled"],
)
def test_token_keys_missing_or_malformed_fail_the_system_check_loudly(tmp_path, case):
    garbled = "this-is-not-a-fernet-key"
    env = {}
    if case == "file missing":
        env["CHAMP_PORTAL_TOKEN_KEYS_FILE"] = str(tmp_path / "nowhere" / "token_keys")
    elif case == "file garbled":
        (tmp_path / "keys").write_text(garbled)
        env["CHAMP_PORTAL_TOKEN_KEYS_FILE"] = str(tmp_path / "keys")
    else:
        (tmp_path / "var").mkdir()
        (tmp_path / "var" / "token_keys").write_text(garbled + "\n")
    result = run_manage("check", env_overrides=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "CHAMP_PORTAL_TOKEN_KEYS" in result.stderr
    assert garbled not in result.stderr + result.stdout  # key material is never echoed


def test_token_keys_from_a_private_file_are_used(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(Fernet.generate_key().decode() + "\n")
    key_file.chmod(0o600)
    result = run_manage(
        "check", env_overrides={"CHAMP_PORTAL_TOKEN_KEYS_FILE": str(key_file)}, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    # Nothing was generated next to it: the file was the key.
    assert not (tmp_path / "var" / "token_keys").exists()


def test_token_keys_are_separate_from_secret_key(settings, world):
    assert settings.SECRET_KEY not in key_material(settings)
    settings.SECRET_KEY = "a-new-secret-key-after-a-session-key-rotation-0123456789"
    assert ApiToken.objects.get(pk=world.token_a.pk).reveal() == KNOWN_TOKEN
    settings.CHAMP_PORTAL_TOKEN_KEYS = settings.SECRET_KEY = Fernet.generate_key().decode()
    assert [error.id for error in check_token_keys()] == ["runs.E002"]


# --- Requirement 4: a wrong key never breaks a page -----------------------------------------


def test_wrong_key_every_page_still_renders_and_shows_needs_reentry(client_for, settings, world):
    tokens_before = db_snapshot()["runs.ApiToken"]
    settings.CHAMP_PORTAL_TOKEN_KEYS = Fernet.generate_key().decode()
    responses = crawl_portal(client_for(world.alice), world) + crawl_admin(
        client_for(world.root), per_model=1
    )
    for url, response in responses:
        assert response.status_code < 500, url
    detail = dict(responses)[world.org_a.get_absolute_url()]
    assert "needs re-entry" in detail.content.decode()
    assert db_snapshot()["runs.ApiToken"] == tokens_before  # the bytes are untouched


# --- Requirement 5: the crawl ---------------------------------------------------------------


def crawl_portal(client, world) -> list:
    """GET every page of the portal: every URL pattern, every object of org A."""
    urls = []
    for pattern in portal_patterns():
        route = ID_ROUTES.get(pattern.name)
        if route is None:
            urls.append(reverse(pattern.name))
        elif route.get:
            urls.append(reverse(pattern.name, kwargs=route.kwargs(world)))
    for run in Run.objects.filter(organisation=world.org_a):
        urls += [
            reverse(name, args=[run.pk])
            for name in ("run_detail", "run_live", "run_again", "run_save_preset")
        ]
    for preset in world.org_a.presets.all():
        urls += [
            reverse(name, args=[preset.pk])
            for name in ("preset_detail", "preset_edit", "preset_versions")
        ]
    urls += [
        reverse("run_create") + f"?preset={world.preset_a.pk}",
        reverse("run_list") + "?q=hello",
        reverse("run_list") + f"?organisation={world.org_a.slug}&status=completed",
        reverse("run_export_csv") + f"?organisation={world.org_a.slug}",
        reverse("run_export_json"),
        reverse("preset_list") + "?archived=1",
        reverse("run_compare") + f"?run={world.run_a.pk}&run={world.run_a_done.pk}",
        reverse("run_compare") + f"?a=run-{world.run_a.pk}&b=preset-{world.preset_a.pk}",
        reverse("run_create") + f"?preset={world.preset_a.pk}&input.message=shared",
    ]
    responses = [(url, client.get(url)) for url in dict.fromkeys(urls)]
    responses.append(("htmx:run_list", client.get(reverse("run_list"), HTTP_HX_REQUEST="true")))
    return responses


def crawl_admin(client, *, per_model: int = 3) -> list:
    """GET every admin page: index, app lists, and for every registered model its
    changelist (plain and searched), add page, and the change, history and delete
    pages of its objects."""
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        info = f"admin:{opts.app_label}_{opts.model_name}"
        urls.append(reverse("admin:app_list", args=[opts.app_label]))
        urls.append(reverse(f"{info}_changelist"))
        if model_admin.search_fields:
            urls.append(reverse(f"{info}_changelist") + "?q=api_")
        urls.append(reverse(f"{info}_add"))
        for obj in model._default_manager.order_by("-pk")[:per_model]:
            for view in ("change", "history", "delete"):
                urls.append(reverse(f"{info}_{view}", args=[obj.pk]))
            if opts.model_name == "user":
                urls.append(reverse("admin:auth_user_password_change", args=[obj.pk]))
    return [(url, client.get(url)) for url in dict.fromkeys(urls)]


def body_of(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def use_the_token_everywhere(client, world) -> list:
    """Store the token through the page, use it for runs, fail to store it once."""
    responses = []
    add = reverse("token_add", args=[world.org_a.slug])
    responses.append(
        ("token_add", client.post(add, {"label": "Again", "secret": KNOWN_TOKEN}, follow=True))
    )
    responses.append(
        (
            "token_add (invalid)",
            client.post(add, {"label": "", "secret": KNOWN_TOKEN}, follow=True),
        )
    )
    # confirm_duplicate: the same input again within minutes asks "run anyway?" first.
    start = {
        "organisation": world.org_a.pk,
        "workflow_id": "101",
        "input": '{"n": 1}',
        "confirm_duplicate": "1",
    }
    responses.append(("run_create", client.post(reverse("run_create"), start, follow=True)))
    responses.append(
        (
            "preset_run",
            client.post(
                reverse("preset_run", args=[world.preset_a.pk]),
                {"confirm_duplicate": "1"},
                follow=True,
            ),
        )
    )
    responses.append(
        (
            "run_again",
            client.post(reverse("run_again", args=[world.run_a_done.pk]), start, follow=True),
        )
    )
    responses.append(
        (
            "webhook_secret_create",
            client.post(reverse("webhook_secret_create", args=[world.org_a.slug])),
        )
    )
    return responses


def scan_every_table(secrets: list[str]) -> int:
    """Look for the secrets in every cell of every table; return the rows read."""
    rows = 0
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                rows += 1
                for cell in row:
                    if isinstance(cell, memoryview):
                        cell = cell.tobytes()
                    text = cell if isinstance(cell, bytes) else str(cell).encode()
                    assert_no_secret(text, f"table {table}", secrets=secrets)
    return rows


def test_write_only_tokens_crawl_pages_admin_logs_broker_and_database(
    client_for, settings, monkeypatch, world, champ, debug_logs
):
    """RELIABILITY.md 5: the plaintext token (and the keys) appear on no surface."""
    secrets = [KNOWN_TOKEN, *key_material(settings)]
    alice = client_for(world.alice)

    responses = use_the_token_everywhere(alice, world)
    triggered = Run.objects.filter(organisation=world.org_a, champ_run_id__isnull=False).exclude(
        pk__in=[world.run_a.pk, world.run_a_done.pk]
    )
    assert triggered.count() == 3, [r.error for r in Run.objects.all()]  # the token was used
    assert champ.sim.stats()["posts"] == 3
    responses += crawl_portal(alice, world)
    responses += crawl_admin(client_for(world.root))
    for url, response in responses:
        assert response.status_code < 500, url
        assert_no_secret(body_of(response), url, secrets=secrets)
        for ciphertext in ApiToken.objects.values_list("ciphertext", flat=True):
            assert ciphertext not in body_of(response).decode(), url
        if response.get("Content-Type", "").startswith("text/html"):
            assert "unsafe-inline" not in response["Content-Security-Policy"], url
            assert response["X-Content-Type-Options"] == "nosniff", url
            assert response["X-Frame-Options"] == "DENY", url
    assert len(responses) > 100

    # The broker: a kick enqueues a sweep; a worker runs it (polling with the token).
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.models import Task
    from django_q.signing import SignedPackage
    from django_q.tasks import _sync, async_task

    lifecycle.observe_status(world.run_b, new=RunStatus.COMPLETED, source="webhook")
    Run.objects.open().update(next_poll_at=timezone.now())
    broker = get_broker()
    broker.purge_queue()
    assert tasks.kick_poller()
    payloads = queued_payloads(broker)
    assert payloads
    for payload in payloads:
        assert_no_secret(payload, "a broker message", secrets=secrets)
        assert_no_secret(repr(SignedPackage.loads(payload)), "a broker message", secrets=secrets)
    broker.purge_queue()
    monkeypatch.setattr(tasks, "kick_poller", lambda: False)  # no hand-over: one sweep each
    settings.CHAMP_POLL_SWEEP_SECONDS = 0.5
    settings.CHAMP_POLL_INTERVAL_SECONDS = 0.02

    def worker_runs(payload):
        """What a qcluster worker does with a message, here (connections kept: sync)."""
        with monkeypatch.context() as patch:
            patch.setattr(Conf, "SYNC", True)
            _sync(payload)

    gets_before = champ.sim.stats()["gets"]
    for payload in payloads:
        worker_runs(payload)
    assert champ.sim.stats()["gets"] > gets_before  # the sweep polled with the token
    # A sweep that fails mid-poll leaves a traceback in the task table.
    record_run(world.org_a, triggered_by=world.olivia)

    def explode(self, run_ids):
        raise RuntimeError("poll exploded")

    monkeypatch.setattr(polling.Poller, "start", explode)
    async_task(tasks.SWEEP_TASK)
    (failing,) = queued_payloads(broker)
    broker.purge_queue()
    worker_runs(failing)
    results = list(Task.objects.all())
    assert {task.success for task in results} == {True, False}
    for task in results:
        decoded = repr((task.func, task.args, task.kwargs, task.result, task.name, task.group))
        assert_no_secret(decoded, f"task {task.name}", secrets=secrets)

    # The logs, at DEBUG, of everything above (SQL statements included).
    names = {record.name for record in debug_logs.records}
    assert {"httpx", "django.db.backends", "runs.lifecycle"} <= names, names
    assert any(name.startswith("httpcore") for name in names), names
    for text in log_texts(debug_logs):
        assert_no_secret(text, "the logs", secrets=secrets)

    # And nowhere in the database: not in any table, cell by cell.
    assert scan_every_table(secrets) > 50


# --- Requirement 5: error reports -----------------------------------------------------------


@pytest.fixture
def error_reports(settings):
    """mail_admins as production sends it (DEBUG off), plus the HTML version of the report."""
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.DEBUG = False
    handler = AdminEmailHandler(include_html=True)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield mail.outbox
    logger.removeHandler(handler)


def report_texts(outbox) -> list[str]:
    texts = []
    for message in outbox:
        texts += [message.subject, message.body]
        texts += [content for content, _mimetype in getattr(message, "alternatives", [])]
    return texts


def test_error_reports_of_a_crash_while_storing_a_token_do_not_contain_it(
    client_for, settings, monkeypatch, world, error_reports
):
    def crash(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("runs.organisations.token_add", crash)
    client = client_for(world.alice)
    client.raise_request_exception = False
    response = client.post(
        reverse("token_add", args=[world.org_a.slug]), {"label": "x", "secret": KNOWN_TOKEN}
    )
    assert response.status_code == 500
    assert_no_secret(response.content, "the 500 page", secrets=[KNOWN_TOKEN])
    assert len(error_reports) == 2  # the text report and the HTML one
    for text in report_texts(error_reports):
        assert "the database went away" in text or text == error_reports[0].subject
        assert_no_secret(text, "an error report", secrets=[KNOWN_TOKEN, *key_material(settings)])


def test_error_reports_of_a_crash_after_the_token_was_decrypted_do_not_contain_it(
    client_for, settings, monkeypatch, world, champ, error_reports
):
    def crash(*args, **kwargs):
        raise RuntimeError("bookkeeping failed")

    monkeypatch.setattr("runs.triggering._mark_used", crash)
    client = client_for(world.olivia)
    client.raise_request_exception = False
    response = client.post(
        reverse("run_create"),
        {"organisation": world.org_a.pk, "workflow_id": "101", "input": "{}"},
    )
    assert response.status_code == 500
    assert champ.sim.stats()["posts"] == 1  # the token was decrypted and sent
    assert_no_secret(response.content, "the 500 page", secrets=[KNOWN_TOKEN])
    assert len(error_reports) == 2
    (html,) = [content for m in error_reports for content, _type in m.alternatives]
    assert "bookkeeping failed" in html
    assert "Local Vars" in html  # the report shows frame variables: hidden ones are starred
    for text in report_texts(error_reports):
        assert_no_secret(text, "an error report", secrets=[KNOWN_TOKEN, *key_material(settings)])
