"""
RELIABILITY.md 16, 18, 19, 20: fault injection with the simulator.

Latency, 5xx and 429 storms, malformed bodies, dropped connections and a
hanging POST; redirects and off-origin URLs. What must hold every time:
nothing lost (every run reaches its final status), nothing duplicated (one
run at Champ per click, one event per change), and a clear message on the
page. Polls run one round at a time against the in-process simulator (fake
clock, no sleeping); triggers and hangs go over real loopback HTTP.

(A SIGKILLed cluster: tests/test_cluster.py.)
"""

import html
import socket
import time
from datetime import timedelta

import httpx
import pytest
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from runs import champ, tasks
from runs import organisations as org_actions
from runs.models import ApiToken, Run, RunStatus
from runs.polling import MAX_BACKOFF_SECONDS, Poller, next_poll_delay
from runs.simulator import (
    CATALOGUE,
    DEMO_TOKEN,
    WORKFLOW_ECHO,
    WORKFLOW_FAILS,
    WORKFLOW_SKIPPED,
    WORKFLOW_SUSPEND_RESUME,
    WORKFLOW_TICKETING,
    WORKFLOW_UNPUBLISHED,
)
from runs.triggering import run_trigger
from tests.champ_fixtures import TEST_TIMEOUT
from tests.run_fixtures import *  # noqa: F403

#: Before tests.run_fixtures.fast_champ shortens its timeouts for the tests.
REAL_MAKE_CLIENT = champ.make_client

SCRIPTED = {
    WORKFLOW_ECHO: ["unknown", "pending", "in_progress", "completed"],
    WORKFLOW_FAILS: ["unknown", "pending", "in_progress", "failed"],
    WORKFLOW_SUSPEND_RESUME: [
        "unknown",
        "pending",
        "in_progress",
        "suspended",
        "in_progress",
        "completed",
    ],
    WORKFLOW_SKIPPED: ["unknown", "pending", "skipped"],
}


def page(response) -> str:
    return html.unescape(response.content.decode())


def path_of(run) -> list[str]:
    return list(run.events.order_by("seq").values_list("to_status", flat=True))


@pytest.fixture
def sim_org(org_a, champ_sim, demo_token, monkeypatch):
    """Org A on the in-process simulator: triggers and polls reach it without a port."""
    real = champ.make_client
    monkeypatch.setattr(
        champ,
        "make_client",
        lambda **kwargs: real(
            **{"timeout": TEST_TIMEOUT, "transport": champ_sim.router, **kwargs}
        ),
    )
    org_a.api_base_url = champ_sim.base_url
    org_a.save(update_fields=["api_base_url"])
    return org_a


def start(organisation, user, workflow_id=WORKFLOW_ECHO, run_input=None) -> Run:
    return run_trigger(
        organisation=organisation, workflow_id=workflow_id, input=run_input or {}, user=user
    ).run


def poll_round(backend, runs=None, *, owner="fault-round"):
    """One round of polling now: the given open runs (default: all) due, claimed, polled."""
    due = Run.objects.open() if runs is None else Run.objects.open().filter(pk__in=runs)
    due.update(next_poll_at=timezone.now(), lease_owner="", lease_until=None)
    ids = tasks.claim_due_runs(owner, limit=500)
    with Poller(owner=owner, transport=backend.router) as poller:
        return poller.poll(ids)


def sample_times(workflow_ids) -> list[float]:
    """Clock offsets in the middle of every scripted step of these workflows."""
    times = set()
    for workflow_id in workflow_ids:
        elapsed = 0.0
        for _status, seconds in CATALOGUE[workflow_id].path[:-1]:
            times.add(round(elapsed + seconds / 2, 3))
            elapsed += seconds
        times.add(round(elapsed + 1, 3))
    return sorted(times)


# --- Storms: nothing lost, nothing duplicated -----------------------------------------------


@pytest.mark.parametrize(
    "storm",
    [
        {"fail_rate": 0.6},  # 500 / 503 + Retry-After
        {"rate_limit_rate": 0.6},  # 429 + Retry-After (seconds and HTTP-date)
        {"malformed_rate": 0.6},  # HTML, wrong types, unknown status, truncated, []
        {"drop_rate": 0.6},  # the connection closes without an answer
        {"timeout_rate": 0.6},  # the answer never comes (read timeout)
        {"latency_ms": 20_000, "fail_rate": 0.3},  # slower than the read timeout, and errors
        {
            "fail_rate": 0.2,
            "rate_limit_rate": 0.2,
            "malformed_rate": 0.2,
            "drop_rate": 0.2,
            "timeout_rate": 0.2,
        },
    ],
    ids=["5xx", "429", "malformed", "dropped", "hanging", "latency", "everything"],
)
def test_fault_storms_lose_nothing_and_duplicate_nothing(sim_org, olivia, champ_sim, storm):
    runs = {wf: start(sim_org, olivia, wf, {"wf": wf}) for wf in SCRIPTED}
    champ_sim.sim.configure(seed=8, **storm)
    elapsed = 0.0
    for at in sample_times(SCRIPTED):
        champ_sim.advance(at - elapsed)
        elapsed = at
        # Poll until every open run got one good answer at this point of its script.
        waiting = set(Run.objects.open().values_list("pk", flat=True))
        for _ in range(60):
            if not waiting:
                break
            if storm.get("latency_ms") and _ % 2:
                champ_sim.sim.configure(latency_ms=0)  # the latency comes and goes
            elif storm.get("latency_ms"):
                champ_sim.sim.configure(latency_ms=storm["latency_ms"])
            poll_round(champ_sim, waiting)
            answered = Run.objects.filter(pk__in=waiting).filter(last_poll_error="")
            waiting -= set(answered.values_list("pk", flat=True))
        assert not waiting, "a run never got an answer through the storm"
    assert sum(champ_sim.sim.fault_counts.values()) > 10  # the storm happened
    for workflow_id, run in runs.items():
        run.refresh_from_db()
        assert path_of(run) == SCRIPTED[workflow_id], workflow_id  # every change, once
        assert run.is_final and run.next_poll_at is None and run.last_poll_error == ""
    assert champ_sim.sim.stats()["runs_created"] == len(SCRIPTED)  # no run started twice
    echo = runs[WORKFLOW_ECHO]
    assert echo.output == {"echo": {"wf": WORKFLOW_ECHO}}


@pytest.mark.parametrize(
    "knobs, words",
    [
        ({"fail_rate": 1.0}, "Internal server error"),
        ({"rate_limit_rate": 1.0}, "Rate limit exceeded"),
        ({"malformed_rate": 1.0}, "not a workflow run"),
        ({"drop_rate": 1.0}, "no answer from Champ"),
        ({"timeout_rate": 1.0}, "no answer from Champ"),
    ],
    ids=["5xx", "429", "malformed", "dropped", "hanging"],
)
def test_a_failing_poll_is_explained_on_the_run_page_and_the_run_stays_open(
    client_for, sim_org, olivia, champ_sim, knobs, words
):
    run = start(sim_org, olivia)
    champ_sim.sim.configure(**knobs)
    poll_round(champ_sim)
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING and run.is_open
    assert run.poll_failures == 1 and run.next_poll_at > timezone.now()
    text = page(client_for(olivia).get(reverse("run_live", args=[run.pk])))
    assert "Last poll failed:" in text
    assert words in text
    assert "retrying with back-off" in text
    assert path_of(run) == ["unknown", "pending"]  # a failed poll records no change


def test_back_off_grows_while_a_storm_lasts_and_resets_after(sim_org, olivia, champ_sim):
    run = start(sim_org, olivia)
    champ_sim.sim.configure(fail_rate=1.0)
    delays = []
    for _ in range(8):
        Run.objects.filter(pk=run.pk).update(next_poll_at=timezone.now())
        ids = tasks.claim_due_runs("storm", limit=5)
        with Poller(owner="storm", transport=champ_sim.router) as poller:
            poller.poll(ids)
        run.refresh_from_db()
        delays.append((run.next_poll_at - run.last_polled_at).total_seconds())
    ceilings = [min(MAX_BACKOFF_SECONDS, 2.0**n) for n in range(8)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        # Jittered in [ceiling/2, ceiling]; a 503's Retry-After (1 s, or an HTTP-date
        # rounded up to the next second) may only make it longer.
        assert ceiling / 2 - 0.01 <= delay <= max(ceiling, 2.0) + 0.01, delays
    assert delays[-1] > 8 * delays[0]  # it grows
    assert run.poll_failures == 8
    champ_sim.sim.configure(fail_rate=0.0)
    poll_round(champ_sim)
    run.refresh_from_db()
    assert (run.poll_failures, run.last_poll_error) == (0, "")


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_in_seconds_or_as_an_http_date_is_honoured(
    sim_org, olivia, champ_sim, settings, form
):
    settings.CHAMP_POLL_INTERVAL_SECONDS = 0.01
    run = start(sim_org, olivia)
    champ_sim.sim.configure(rate_limit_rate=1.0, retry_after=40, retry_after_form=form)
    poll_round(champ_sim)
    run.refresh_from_db()
    waited = (run.next_poll_at - run.last_polled_at).total_seconds()
    assert waited >= 39  # HTTP-dates have whole seconds
    assert "Rate limit exceeded" in run.last_poll_error


@given(
    failures=st.integers(0, 40),
    retry_after=st.none() | st.floats(0, 3600),
    interval=st.floats(0.05, 5),
    age=st.floats(0, 10**6),
    since_change=st.floats(0, 10**6),
    status=st.sampled_from(["pending", "in_progress", "suspended"]),
)
@settings(max_examples=200, deadline=None, database=None)
def test_back_off_is_capped_exponential_with_jitter_and_never_sooner_than_retry_after(
    failures, retry_after, interval, age, since_change, status
):
    delay = next_poll_delay(
        age=age,
        since_change=since_change,
        status=status,
        failures=failures,
        retry_after=retry_after,
        interval=interval,
    )
    if retry_after is not None:
        assert delay >= retry_after
    if failures:
        ceiling = min(MAX_BACKOFF_SECONDS, interval * 2.0 ** min(failures - 1, 16))
        assert delay <= max(ceiling, retry_after or 0) + 1e-9
        assert delay >= ceiling / 2 - 1e-9
    else:
        assert delay <= max(interval * 15 * 1.1, retry_after or 0) + 1e-9


# --- 4xx: never retried, except 429 ---------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 409, 410, 422])
def test_a_poll_answered_with_a_client_error_is_not_retried(
    client_for, sim_org, olivia, champ_sim, status
):
    run = start(sim_org, olivia)
    answered = []

    def champ_says_no(request: httpx.Request) -> httpx.Response:
        answered.append(request.method)
        return httpx.Response(status, json={"error": "Not for you"})

    champ_sim.router.routes[champ_sim.base_url.split("//")[1]] = httpx.MockTransport(champ_says_no)
    poll_round(champ_sim)
    for _ in range(3):  # later rounds, as the sweep would run them
        ids = tasks.claim_due_runs("later", limit=10, now=timezone.now() + timedelta(hours=1))
        with Poller(owner="later", transport=champ_sim.router) as poller:
            poller.poll(ids)
    assert answered == ["GET"]  # asked once, never again by itself
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING  # nothing Champ did not say
    assert run.next_poll_at is None
    assert f"HTTP {status}" in run.last_poll_error or "Not for you" in run.last_poll_error
    assert "not retried automatically" in run.last_poll_error
    text = page(client_for(olivia).get(run.get_absolute_url()))
    assert "not retried automatically" in text


def test_a_parked_run_is_polled_again_when_an_admin_fixes_the_organisation(
    sim_org, olivia, alice, champ_sim
):
    run = start(sim_org, olivia)
    original = champ_sim.router.routes[champ_sim.base_url.split("//")[1]]
    champ_sim.router.routes[champ_sim.base_url.split("//")[1]] = httpx.MockTransport(
        lambda request: httpx.Response(403, json={"error": "Forbidden"})
    )
    poll_round(champ_sim)
    run.refresh_from_db()
    assert run.next_poll_at is None
    champ_sim.router.routes[champ_sim.base_url.split("//")[1]] = original
    org_actions.token_add(organisation=sim_org, label="new", secret=DEMO_TOKEN, user=alice)
    run.refresh_from_db()
    assert run.next_poll_at is not None  # due again
    champ_sim.advance(5)
    ids = tasks.claim_due_runs("again", limit=10)
    with Poller(owner="again", transport=champ_sim.router) as poller:
        poller.poll(ids)
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED


# --- The trigger POST: never sent twice -----------------------------------------------------


def test_a_hanging_post_is_sent_once_and_leaves_an_unknown_run_explained_on_its_page(
    client_for, olivia, champ_org, champ_server
):
    """RELIABILITY.md 20 (also tests/test_triggering.py): the read timeout fires after sending."""
    champ_server.sim.configure(hang_post=True)
    client = client_for(olivia)
    response = client.post(
        reverse("run_create"),
        {"organisation": champ_org.pk, "workflow_id": WORKFLOW_ECHO, "input": "{}"},
        follow=True,
    )
    run = Run.objects.get()
    stats = champ_server.sim.stats()
    assert (stats["requests"], stats["posts"], stats["runs_created"]) == (1, 1, 1)
    assert run.status == RunStatus.UNKNOWN and run.champ_run_id is None
    assert "Champ may or may not have started workflow 101" in page(response)
    assert "will not be retried automatically" in page(response)
    run_page = page(client.get(run.get_absolute_url()))
    assert "may or may not have created this run" in run_page
    assert "https://dash.champ.ai/app/workflows/101" in run_page
    # The poller leaves it alone: it has no Champ run id to ask about.
    assert tasks.claim_due_runs("after", limit=10) == []
    assert champ_server.sim.stats()["requests"] == 1


def test_a_dropped_connection_after_the_post_is_sent_once_and_leaves_an_unknown_run(
    client_for, olivia, champ_org, champ_server
):
    champ_server.sim.configure(drop_post=True)
    response = client_for(olivia).post(
        reverse("run_create"),
        {"organisation": champ_org.pk, "workflow_id": WORKFLOW_ECHO, "input": "{}"},
        follow=True,
    )
    run = Run.objects.get()
    assert champ_server.sim.stats()["posts"] == 1
    assert run.status == RunStatus.UNKNOWN
    assert "Champ may or may not have started workflow 101" in page(response)


def test_a_malformed_answer_to_the_post_is_unknown_not_retried(
    client_for, olivia, champ_org, champ_server
):
    champ_server.sim.configure(malformed_rate=1.0, fault_methods={"POST"})
    response = client_for(olivia).post(
        reverse("run_create"),
        {"organisation": champ_org.pk, "workflow_id": WORKFLOW_ECHO, "input": "{}"},
        follow=True,
    )
    assert champ_server.sim.stats()["posts"] == 1
    assert Run.objects.get().status == RunStatus.UNKNOWN
    assert "may or may not have started" in page(response)


@pytest.mark.parametrize(
    "case, status, shown",
    [
        ("401", RunStatus.REJECTED, "Champ rejected the token “Demo” (api_…0001) — re-enter it"),
        ("404", RunStatus.REJECTED, "workflow 106 not found or not published at Champ"),
        ("422", RunStatus.REJECTED, "workflow 107 cannot be started through the API"),
    ],
)
def test_trigger_refusals_give_clear_messages_and_start_nothing(
    client_for, olivia, champ_org, champ_server, demo_token, case, status, shown
):
    workflow = {"401": WORKFLOW_ECHO, "404": WORKFLOW_UNPUBLISHED, "422": WORKFLOW_TICKETING}
    if case == "401":
        champ_server.sim.tokens.clear()  # Champ no longer accepts the token
    response = client_for(olivia).post(
        reverse("run_create"),
        {"organisation": champ_org.pk, "workflow_id": workflow[case], "input": "{}"},
        follow=True,
    )
    run = Run.objects.get()
    assert run.status == status
    assert shown in page(response)
    assert shown in page(client_for(olivia).get(run.get_absolute_url())) or run.error
    stats = champ_server.sim.stats()
    assert (stats["requests"], stats["runs_created"]) == (1, 0)
    if case == "401":
        assert ApiToken.objects.get(pk=demo_token.pk).rejected_at is not None


# --- Explicit timeouts (18) and no SSRF (16) ------------------------------------------------


def test_every_champ_call_has_explicit_timeouts():
    for timeout in (champ.TIMEOUT, champ.POLL_TIMEOUT):
        assert None not in (timeout.connect, timeout.read, timeout.write, timeout.pool)
    assert REAL_MAKE_CLIENT().timeout == champ.TIMEOUT
    assert champ.AsyncChamp()._timeout == champ.POLL_TIMEOUT
    assert 0 < champ.POLL_DEADLINE <= 60  # the poller's whole-request cap (aiohttp)


def test_a_silent_champ_costs_a_trigger_its_read_timeout_not_more():
    """A listening socket that never answers: the trigger gives up after the read timeout."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        base = f"http://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(champ.ChampOutcomeUnknown):
            champ.trigger(base_url=base, token=DEMO_TOKEN, workflow_id=101, input={})
        assert time.monotonic() - started < TEST_TIMEOUT.read + 2


def test_redirects_and_off_origin_urls_are_never_followed_by_the_poller(
    sim_org, olivia, champ_sim, make_champ_backend
):
    """RELIABILITY.md 16 (also tests/test_poller.py, tests/test_champ_client.py)."""
    elsewhere = make_champ_backend("inprocess")
    run = start(sim_org, olivia)
    # Champ's run url points at another host: the poller asks the organisation's origin.
    off_origin = f"{elsewhere.base_url}/api/external/v1/workflows/101/runs/{run.champ_run_id}"
    Run.objects.filter(pk=run.pk).update(champ_url=off_origin)
    poll_round(champ_sim)
    assert champ_sim.router.attempts[elsewhere.base_url.split("//")[1]] == 0
    # Champ answers with a redirect there: not followed, the run stays open and says why.
    champ_sim.sim.configure(redirect_to=off_origin)
    poll_round(champ_sim)
    assert champ_sim.router.attempts[elsewhere.base_url.split("//")[1]] == 0
    run.refresh_from_db()
    assert run.is_open and "redirect" in run.last_poll_error
