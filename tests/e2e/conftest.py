"""
Fixtures of the real-browser suite: Chromium (Debian's, driven by Playwright),
the live server, the Champ simulator and a real `manage.py qcluster`.

* ``e2e``        opens pages in fresh browser contexts (``e2e.page()``), logs
                 in through the login form, records what the console says
                 (CSP violations, JavaScript errors) and, when a test fails,
                 saves a screenshot and the HTML of every page under ``var/e2e/``.
* ``champ``      the simulator on a loopback port (``champ.base_url``), with a
                 workflow that is held in progress until ``champ.release()``.
* ``cluster``    a real django-q2 cluster polling the runs on the test database.

Chromium is ``/usr/bin/chromium`` (``make test`` installs it with apt-get;
``CHAMP_E2E_CHROMIUM`` points elsewhere). Without it the suite is skipped,
except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runs import simulator
from runs.simulator_server import SimulatorServer
from tests.cluster import ROOT, Cluster
from tests.conftest import PASSWORD

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the `chromium` fixture skips (fails under CI)
    PlaywrightError = expect = sync_playwright = None

CHROMIUM = os.environ.get("CHAMP_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps calling home (updates, sync, field trials):
    # slow and noisy on a machine without internet.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "var" / "e2e"

#: How long a single expectation (an element, a text) may take to come true.
EXPECT_TIMEOUT_MS = 15_000
#: How long a run may take to reach a final status on its page (poller + htmx every 2 s).
RUN_FINAL_TIMEOUT_MS = 45_000

#: A workflow that stays in progress until the test releases it, so a run page
#: is certainly shown open first and then seen to change without a reload.
HELD_WORKFLOW = 4242
HELD_SECONDS = 600  # scripted seconds (times TIME_SCALE in real time) unless released
TIME_SCALE = 0.3


# --- Reports and artefacts ------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (``item.rep_setup``/``rep_call``) for fixtures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(node) -> bool:
    return any(
        getattr(getattr(node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


def _artefact_stem(node) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node.nodeid.split("::", 1)[-1])[:120]


def _unavailable(reason: str):
    """Skip, or fail under CI, where the browser suite is required."""
    if os.environ.get("CI"):
        pytest.fail(f"CI: the browser suite cannot run: {reason}", pytrace=False)
    pytest.skip(f"browser suite skipped: {reason}")


# --- Browser --------------------------------------------------------------------


@pytest.fixture(scope="package")
def _sync_playwright_allows_orm() -> Iterator[None]:
    # Playwright's sync API runs an asyncio loop under the hood, which Django
    # sees as "async context" and answers every ORM call of the test (and of
    # the flush between tests) with SynchronousOnlyOperation. The calls are
    # plain synchronous ones in the test's own thread, so the check is lifted
    # exactly while Playwright is running (this package), as Playwright's
    # documentation recommends for Django. The cluster does not inherit it.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="package")
def chromium(_sync_playwright_allows_orm):
    """One headless Chromium for the package (each test gets fresh contexts)."""
    if sync_playwright is None:
        _unavailable("the `playwright` package is not installed (pip install -e '.[test]').")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing: `apt-get install chromium` (make test does it).")
    with sync_playwright() as playwright:
        try:
            # launch() gives the browser a fresh temporary profile (user data
            # dir) of its own, deleted on close.
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
            )
        except PlaywrightError as exc:
            _unavailable(f"{CHROMIUM} does not start: {exc.message.splitlines()[0]}")
        try:
            expect.set_options(timeout=EXPECT_TIMEOUT_MS)
            yield browser
        finally:
            browser.close()


@dataclass
class ConsoleRecord:
    page: str  # whose page: the name given to E2E.page()
    url: str
    kind: str
    text: str

    def __str__(self) -> str:
        return f"[{self.page}] {self.url} {self.kind}: {self.text}"


@dataclass
class E2E:
    """Pages for one test, against the live server; see the module docstring."""

    browser: object
    base_url: str
    console: list[ConsoleRecord] = field(default_factory=list)
    pages: dict = field(default_factory=dict)
    contexts: list = field(default_factory=list)

    def page(self, name: str):
        """A page in a new browser context (its own cookies): one per user."""
        context = self.browser.new_context(base_url=self.base_url, accept_downloads=True)
        context.set_default_timeout(EXPECT_TIMEOUT_MS)
        context.set_default_navigation_timeout(30_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on(
            "console",
            lambda message: self.console.append(
                ConsoleRecord(name, page.url, message.type, message.text)
            ),
        )
        page.on(
            "pageerror",
            lambda error: self.console.append(
                ConsoleRecord(name, page.url, "pageerror", str(error))
            ),
        )
        self.pages[name] = page
        return page

    def login(self, page, username: str, password: str = PASSWORD, *, start: str = "/"):
        """Log in through the login form, the way a person does."""
        page.goto(start)
        expect(page).to_have_url(re.compile(r"/accounts/login/"))
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        return page

    def csp_violations(self) -> list[ConsoleRecord]:
        return [
            record
            for record in self.console
            if "content security policy" in record.text.lower()
            or "content-security-policy" in record.text.lower()
        ]

    def script_errors(self) -> list[ConsoleRecord]:
        return [record for record in self.console if record.kind == "pageerror"]

    def assert_clean_console(self) -> None:
        problems = self.csp_violations() + self.script_errors()
        assert not problems, "the browser console reported:\n" + "\n".join(
            f"  {record}" for record in problems
        )

    def save_artefacts(self, stem: str) -> list[Path]:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, page in self.pages.items():
            if page.is_closed():
                continue
            base = ARTIFACTS / f"{stem}-{name}"
            try:
                page.screenshot(path=f"{base}.png", full_page=True, timeout=10_000)
                saved.append(Path(f"{base}.png"))
                Path(f"{base}.html").write_text(
                    f"<!-- {page.url} -->\n{page.content()}", encoding="utf-8"
                )
            except Exception as exc:  # the page may be why the test failed
                Path(f"{base}.error.txt").write_text(repr(exc), encoding="utf-8")
        if self.console:
            (ARTIFACTS / f"{stem}-console.txt").write_text(
                "\n".join(str(record) for record in self.console),
                encoding="utf-8",
            )
        return saved


@pytest.fixture(autouse=True)
def _cookies_over_plain_http(settings):
    # Production settings mark the session and CSRF cookies Secure, and the
    # live server speaks plain http://. A browser neither stores nor sends a
    # Secure cookie over http: the login would silently not stick and every
    # form would fail CSRF. Chromium makes an exception for http://localhost
    # (a "potentially trustworthy" origin), but not for a live server on
    # another host (`--liveserver`, DJANGO_LIVE_TEST_SERVER_ADDRESS), so the
    # suite does not rely on it: the flags are off here, for the browser suite
    # only (test_security_headers_and_login.py asserts the production values;
    # the HTTPS redirect is handled by `live_server` below).
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False


@pytest.fixture(scope="package")
def live_server(request):
    """pytest-django's live server, started with the redirect to HTTPS off.

    Django's SecurityMiddleware reads SECURE_SSL_REDIRECT once, when the
    server thread loads its middleware, so the per-test ``settings`` override
    of tests/conftest.py comes too late for a server started at the first
    test: the browser would be sent to https:// on a plain-http port. Same
    name as pytest-django's fixture, so its helper still gives every test
    using it transactional database access (and ALLOWED_HOSTS).
    """
    from django.test.utils import override_settings
    from pytest_django.live_server_helper import LiveServer

    addr = (
        request.config.getvalue("liveserver")
        or os.getenv("DJANGO_LIVE_TEST_SERVER_ADDRESS")
        or "localhost"
    )
    with override_settings(SECURE_SSL_REDIRECT=False):
        server = LiveServer(addr)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def e2e(request, chromium, live_server) -> Iterator[E2E]:
    session = E2E(browser=chromium, base_url=live_server.url)
    yield session
    try:
        if _failed(request.node):
            saved = session.save_artefacts(_artefact_stem(request.node))
            if saved:
                print("e2e: saved " + ", ".join(str(path.relative_to(ROOT)) for path in saved))
        else:
            session.assert_clean_console()
    finally:
        for context in session.contexts:
            context.close()


# --- Champ simulator and cluster ---------------------------------------------------


class SteerableClock:
    """Real monotonic time plus an offset the test can move forward."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


@dataclass
class Champ:
    sim: simulator.ChampSimulator
    server: SimulatorServer
    clock: SteerableClock

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def release(self) -> None:
        """Let every held run so far reach its end (``completed``)."""
        self.clock.advance(HELD_SECONDS * TIME_SCALE + 1)


@pytest.fixture
def champ() -> Iterator[Champ]:
    clock = SteerableClock()
    sim = simulator.ChampSimulator(clock=clock, time_scale=TIME_SCALE)
    sim.register_workflow(
        HELD_WORKFLOW,
        [("pending", 0.5), ("in_progress", HELD_SECONDS), ("completed", 0)],
        output=lambda run_input: {"echo": run_input},
    )
    with SimulatorServer(sim) as server:
        yield Champ(sim, server, clock)


@pytest.fixture
def cluster(request, transactional_db, tmp_path) -> Iterator[Cluster]:
    """A real `manage.py qcluster` on the test database, killed before the tables are flushed."""
    from django_q.brokers import get_broker

    get_broker().purge_queue()  # nothing left over from another test
    log = tmp_path / "qcluster.log"
    # Not waited for: it boots while the browser works (a kick waits in the
    # broker until the cluster is up).
    started = Cluster(log, DJANGO_ALLOW_ASYNC_UNSAFE="")
    yield started
    started.kill()
    if _failed(request.node):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, ARTIFACTS / f"{_artefact_stem(request.node)}-qcluster.log")
