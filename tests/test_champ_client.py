"""runs.champ against the simulator: the same contract cases in-process and over real HTTP.

Every test also proves that no token reaches the logs (captured at DEBUG from
every logger, httpx/httpcore/aiohttp included) nor any error's text.
"""

import asyncio
import json
import logging
import pickle
import socket

import httpx
import pytest

from runs import champ
from runs.champ import (
    ChampAuthError,
    ChampError,
    ChampNotFound,
    ChampNotRunnable,
    ChampOutcomeUnknown,
    ChampUnavailable,
)
from runs.simulator import (
    CATALOGUE,
    DEMO_TOKEN,
    WORKFLOW_ECHO,
    WORKFLOW_FAILS,
    WORKFLOW_SLOW,
    WORKFLOW_TICKETING,
    WORKFLOW_UNPUBLISHED,
)

WRONG_TOKEN = "api_wrong_token_that_must_not_leak_1234"
SECRETS = (DEMO_TOKEN, WRONG_TOKEN)
RUNNABLE = [w.id for w in CATALOGUE.values() if w.published and not w.ticketing]


@pytest.fixture(autouse=True)
def tokens_never_logged(caplog):
    # Settings may quieten httpx/httpcore; the proof must hold at DEBUG regardless.
    for name in ("", "httpx", "httpcore", "aiohttp", "asyncio", "runs"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    formatter = logging.Formatter("%(name)s %(message)s")
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.records
    for record in records:
        text = formatter.format(record) + repr(record.args)
        for secret in SECRETS:
            assert secret not in text, f"token leaked in log record {record.name}"


def raises(error_type, call, *args, **kwargs):
    """Call, expect ``error_type``, check the token is in neither its text nor its cause."""
    with pytest.raises(error_type) as info:
        call(*args, **kwargs)
    error = info.value
    for secret in SECRETS:
        for text in (str(error), repr(error), str(error.__cause__), repr(error.__cause__)):
            assert secret not in text
    return error


def steps(workflow_id):
    """``(seconds after creation, expected status)`` in the middle of each scripted step."""
    path, elapsed, result = CATALOGUE[workflow_id].path, 0.0, []
    for status, seconds in path[:-1]:
        result.append((elapsed + seconds / 2, status))
        elapsed += seconds
    result.append((elapsed + 1, path[-1][0]))
    return result


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ statuses


def test_debug_logs_of_httpx_and_httpcore_are_captured_for_the_token_check(champ_server, caplog):
    champ_server.trigger(WORKFLOW_ECHO)
    names = {record.name for record in caplog.records}
    assert {"httpx", "httpcore.http11", "httpcore.connection"} <= names


@pytest.mark.parametrize("workflow_id", RUNNABLE)
def test_every_status_of_every_catalogue_workflow_is_reported(champ_backend, workflow_id):
    run_input = {"customer": "ACME", "n": 3}
    run = champ_backend.trigger(workflow_id, run_input)
    assert (run.status, run.input, run.output) == ("pending", run_input, None)
    clock_start, now = champ_backend.clock(), 0.0
    for offset, status in steps(workflow_id):
        champ_backend.advance(offset - now)
        now = offset
        fetched = champ_backend.fetch(workflow_id, run.id, url=run.url)
        assert fetched.status == status
        assert fetched.id == run.id and fetched.input == run_input
        if status in ("completed", "failed"):
            assert fetched.output == CATALOGUE[workflow_id].final_output(run_input)
        else:
            assert fetched.output is None
    assert fetched.is_terminal
    assert champ_backend.clock() - clock_start == pytest.approx(now)


def test_trigger_returns_the_run_with_an_absolute_url_on_the_api_origin(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO, {"a": 1})
    assert run.url == champ.run_url(champ_backend.base_url, WORKFLOW_ECHO, run.id)
    assert run.raw["id"] == run.id and champ_backend.sim.post_count == 1


def test_echo_output_echoes_the_input(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO, {"text": "héllo", "nested": {"list": [1, None]}})
    champ_backend.advance(5)
    assert champ_backend.fetch(WORKFLOW_ECHO, run.id).output == {"echo": run.input}


@pytest.mark.parametrize("run_input", [None, {}], ids=["omitted", "empty-object"])
def test_input_omitted_or_empty_object_starts_a_run_with_empty_input(champ_backend, run_input):
    run = champ_backend.trigger(WORKFLOW_ECHO, run_input)
    assert run.input == {} and champ_backend.sim.runs[run.id].input == {}


@pytest.mark.parametrize(
    "bad_input", [[1, 2], "text", 3, True, {"x": {1, 2}}, {"x": float("nan")}]
)
def test_input_that_is_not_a_json_object_is_rejected_before_sending(champ_backend, bad_input):
    with pytest.raises(ValueError, match="input"):
        champ_backend.trigger(WORKFLOW_ECHO, bad_input)
    assert champ_backend.sim.request_count == 0


# -------------------------------------------------------------- Champ errors


def test_invalid_token_raises_auth_error_with_champs_message(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO)
    for call, args in (
        (champ_backend.trigger, (WORKFLOW_ECHO,)),
        (champ_backend.fetch, (WORKFLOW_ECHO, run.id)),
    ):
        error = raises(ChampAuthError, call, *args, token=WRONG_TOKEN)
        assert (error.message, error.status_code, error.permanent) == (
            "Invalid API token",
            401,
            True,
        )


def test_unpublished_or_unknown_workflow_raises_not_found(champ_backend):
    for workflow_id in (WORKFLOW_UNPUBLISHED, 999):
        error = raises(ChampNotFound, champ_backend.trigger, workflow_id)
        assert (error.message, error.status_code, error.permanent) == (
            "Workflow not found",
            404,
            True,
        )
    assert champ_backend.sim.post_count == 0


def test_unknown_run_or_run_of_another_workflow_raises_not_found(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO)
    assert raises(ChampNotFound, champ_backend.fetch, WORKFLOW_ECHO, 424242).message == (
        "Run not found"
    )
    raises(ChampNotFound, champ_backend.fetch, WORKFLOW_FAILS, run.id)


def test_ticketing_workflow_raises_not_runnable_with_champs_message(champ_backend):
    error = raises(ChampNotRunnable, champ_backend.trigger, WORKFLOW_TICKETING)
    assert "ticket events" in error.message and error.status_code == 422 and error.permanent


def test_a_token_that_cannot_be_a_header_is_refused_before_sending(champ_backend):
    error = raises(ChampAuthError, champ_backend.trigger, WORKFLOW_ECHO, token=f"{DEMO_TOKEN}\n")
    assert error.status_code is None and champ_backend.sim.request_count == 0


# ---------------------------------------------------------- transient faults


def test_server_errors_on_poll_are_transient(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(fail_rate=1.0, retry_after=4, retry_after_form="seconds")
    first = raises(ChampUnavailable, champ_backend.fetch, WORKFLOW_ECHO, run.id)
    second = raises(ChampUnavailable, champ_backend.fetch, WORKFLOW_ECHO, run.id)
    assert (first.status_code, first.message, first.permanent) == (
        500,
        "Internal server error",
        False,
    )
    assert (second.status_code, second.retry_after) == (503, 4.0)


def test_rate_limit_retry_after_in_seconds_is_parsed(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(rate_limit_rate=1.0, retry_after=7, retry_after_form="seconds")
    error = raises(ChampUnavailable, champ_backend.fetch, WORKFLOW_ECHO, run.id)
    assert (error.status_code, error.retry_after, error.message) == (
        429,
        7.0,
        "Rate limit exceeded",
    )


def test_rate_limit_retry_after_as_http_date_is_parsed_to_seconds(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(rate_limit_rate=1.0, retry_after=7, retry_after_form="date")
    error = raises(ChampUnavailable, champ_backend.fetch, WORKFLOW_ECHO, run.id)
    assert error.status_code == 429 and 6.0 <= error.retry_after <= 8.0


def test_poll_timeout_is_transient(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(timeout_rate=1.0)
    error = raises(ChampUnavailable, champ_backend.fetch, WORKFLOW_ECHO, run.id)
    assert "ReadTimeout" in error.message and not error.permanent


def test_dropped_connection_on_poll_is_transient(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(drop_rate=1.0)
    raises(ChampUnavailable, champ_backend.fetch, WORKFLOW_ECHO, run.id)


def test_malformed_poll_bodies_are_transient(champ_backend):
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(malformed_rate=1.0)
    for _ in range(5):  # every malformed variant the simulator has
        error = raises(ChampUnavailable, champ_backend.fetch, WORKFLOW_ECHO, run.id)
        assert "not a workflow run" in error.message
    assert champ_backend.sim.fault_counts["malformed"] == 5


# ------------------------------------------------- the non-idempotent trigger


def test_trigger_that_hangs_after_sending_is_outcome_unknown_and_sent_once(champ_backend):
    champ_backend.sim.configure(hang_post=True)
    error = raises(ChampOutcomeUnknown, champ_backend.trigger, WORKFLOW_ECHO, {"a": 1})
    assert error.permanent and "may or may not have been created" in error.message
    assert champ_backend.sim.post_count == 1 and len(champ_backend.sim.runs) == 1


def test_trigger_whose_connection_drops_after_sending_is_outcome_unknown_and_sent_once(
    champ_backend,
):
    champ_backend.sim.configure(drop_post=True)
    raises(ChampOutcomeUnknown, champ_backend.trigger, WORKFLOW_ECHO)
    assert champ_backend.sim.post_count == 1


def test_trigger_answered_with_garbage_is_outcome_unknown(champ_backend):
    champ_backend.sim.configure(malformed_rate=1.0, fault_methods={"POST"})
    error = raises(ChampOutcomeUnknown, champ_backend.trigger, WORKFLOW_ECHO)
    assert error.status_code == 200 and champ_backend.sim.post_count == 1


def test_trigger_500_is_outcome_unknown_but_503_and_429_are_unavailable(champ_backend):
    champ_backend.sim.configure(fail_rate=1.0, fault_methods={"POST"})
    assert raises(ChampOutcomeUnknown, champ_backend.trigger, WORKFLOW_ECHO).status_code == 500
    assert raises(ChampUnavailable, champ_backend.trigger, WORKFLOW_ECHO).status_code == 503
    champ_backend.sim.configure(fail_rate=0.0, rate_limit_rate=1.0)
    assert raises(ChampUnavailable, champ_backend.trigger, WORKFLOW_ECHO).status_code == 429


def test_trigger_refused_before_sending_is_retried_once_then_unavailable(
    champ_backend, monkeypatch
):
    monkeypatch.setattr(champ, "TRIGGER_RETRY_DELAY", 0)
    if champ_backend.kind == "inprocess":
        base_url, client = "http://nowhere.test", champ_backend.client()
        attempts = lambda: champ_backend.router.attempts["nowhere.test"]  # noqa: E731
    else:

        class Counting(httpx.HTTPTransport):
            calls = 0

            def handle_request(self, request):
                Counting.calls += 1
                return super().handle_request(request)

        base_url = f"http://127.0.0.1:{free_port()}"
        client = champ.make_client(timeout=champ_backend.timeout, transport=Counting())
        attempts = lambda: Counting.calls  # noqa: E731
    error = raises(
        ChampUnavailable,
        champ.trigger,
        base_url=base_url,
        token=DEMO_TOKEN,
        workflow_id=WORKFLOW_ECHO,
        client=client,
    )
    client.close()
    assert "ConnectError" in error.message and error.not_sent and attempts() == 2


def test_trigger_connect_error_then_success_creates_one_run(champ_backend, monkeypatch):
    monkeypatch.setattr(champ, "TRIGGER_RETRY_DELAY", 0)
    real = champ_backend.client()
    failures = []

    class FlakyConnect(httpx.BaseTransport):
        def handle_request(self, request):
            if not failures:
                failures.append(1)
                raise httpx.ConnectTimeout("timed out connecting", request=request)
            return real._transport.handle_request(request)

    client = champ.make_client(transport=FlakyConnect())
    run = champ_backend.trigger(WORKFLOW_ECHO, client=client)
    assert run.status == "pending" and champ_backend.sim.post_count == 1


# ------------------------------------------------------- origin and redirects


def test_an_off_origin_run_url_is_never_requested(champ_backend, make_champ_backend):
    other = make_champ_backend(champ_backend.kind)
    run = champ_backend.trigger(WORKFLOW_ECHO)
    lure = other.trigger(WORKFLOW_ECHO)  # same run id, other origin
    assert lure.id == run.id
    before = other.sim.request_count
    fetched = champ_backend.fetch(WORKFLOW_ECHO, run.id, url=lure.url)
    assert fetched.id == run.id and champ_backend.sim.run_gets(run.id) == 1
    assert other.sim.request_count == before


def test_redirects_are_not_followed(champ_backend, make_champ_backend):
    other = make_champ_backend(champ_backend.kind)
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(redirect_to=champ.run_url(other.base_url, WORKFLOW_ECHO, run.id))
    for call, args in (
        (champ_backend.fetch, (WORKFLOW_ECHO, run.id)),
        (champ_backend.trigger, (WORKFLOW_ECHO,)),
    ):
        error = raises(ChampUnavailable, call, *args)
        assert error.status_code == 302 and "redirect" in error.message
    assert other.sim.request_count == 0


# ------------------------------------------------------------------- async


def afetch(backend, workflow_id, run_id, *, token=None, url=None, **champ_kwargs):
    async def go():
        async with backend.async_champ(**champ_kwargs) as client:
            return await client.fetch_run(
                base_url=backend.base_url,
                token=token or backend.token,
                workflow_id=workflow_id,
                run_id=run_id,
                url=url,
            )

    return asyncio.run(go())


ASYNC_TRANSPORTS = [
    pytest.param({"use_aiohttp": True}, id="aiohttp"),
    pytest.param({"use_aiohttp": False}, id="httpx"),
]


@pytest.mark.parametrize("champ_kwargs", ASYNC_TRANSPORTS)
def test_async_fetch_reports_statuses_and_output(champ_backend, champ_kwargs):
    run = champ_backend.trigger(WORKFLOW_ECHO, {"k": "v"})
    assert afetch(champ_backend, WORKFLOW_ECHO, run.id, url=run.url, **champ_kwargs).status == (
        "pending"
    )
    champ_backend.advance(5)
    done = afetch(champ_backend, WORKFLOW_ECHO, run.id, url=run.url, **champ_kwargs)
    assert (done.status, done.output) == ("completed", {"echo": {"k": "v"}})


ASYNC_ERRORS = {
    "401": ({}, {"token": WRONG_TOKEN}, ChampAuthError),
    "404": ({}, {"run_id": 999999}, ChampNotFound),
    "5xx": ({"fail_rate": 1.0}, {}, ChampUnavailable),
    "429": ({"rate_limit_rate": 1.0, "retry_after_form": "date"}, {}, ChampUnavailable),
    "timeout": ({"timeout_rate": 1.0}, {}, ChampUnavailable),
    "drop": ({"drop_rate": 1.0}, {}, ChampUnavailable),
    "malformed": ({"malformed_rate": 1.0}, {}, ChampUnavailable),
}


@pytest.mark.parametrize("champ_kwargs", ASYNC_TRANSPORTS)
@pytest.mark.parametrize("case", ASYNC_ERRORS)
def test_async_fetch_raises_typed_errors(champ_backend, case, champ_kwargs):
    knobs, call_kwargs, error_type = ASYNC_ERRORS[case]
    call_kwargs = dict(call_kwargs)
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(**knobs)
    run_id = call_kwargs.pop("run_id", run.id)
    error = raises(error_type, afetch, champ_backend, WORKFLOW_ECHO, run_id, **call_kwargs)
    if case == "429":
        assert error.retry_after is not None and error.retry_after >= 0


@pytest.mark.parametrize("champ_kwargs", ASYNC_TRANSPORTS)
def test_async_fetch_never_requests_an_off_origin_url(
    champ_backend, make_champ_backend, champ_kwargs
):
    other = make_champ_backend(champ_backend.kind)
    run, lure = champ_backend.trigger(WORKFLOW_ECHO), other.trigger(WORKFLOW_ECHO)
    afetch(champ_backend, WORKFLOW_ECHO, run.id, url=lure.url, **champ_kwargs)
    assert other.sim.request_count == 1 and champ_backend.sim.run_gets(run.id) == 1


def test_async_fetch_does_not_follow_redirects(champ_backend, make_champ_backend):
    other = make_champ_backend(champ_backend.kind)
    run = champ_backend.trigger(WORKFLOW_ECHO)
    champ_backend.sim.configure(redirect_to=champ.run_url(other.base_url, WORKFLOW_ECHO, run.id))
    assert (
        raises(ChampUnavailable, afetch, champ_backend, WORKFLOW_ECHO, run.id).status_code == 302
    )
    assert other.sim.request_count == 0


def test_async_fetch_gives_up_at_the_deadline(champ_server):
    run = champ_server.trigger(WORKFLOW_SLOW)
    champ_server.sim.configure(latency_ms=1000)
    slow_read = httpx.Timeout(connect=1, read=5, write=1, pool=1)
    error = raises(
        ChampUnavailable,
        afetch,
        champ_server,
        WORKFLOW_SLOW,
        run.id,
        timeout=slow_read,
        deadline=0.2,
    )
    assert "within 0.2 s" in error.message


def test_async_fetches_many_runs_concurrently_over_one_pool(champ_server):
    runs = [champ_server.trigger(WORKFLOW_ECHO, {"i": i}) for i in range(40)]
    champ_server.advance(5)

    async def go():
        async with champ_server.async_champ(max_connections=8) as client:
            return await asyncio.gather(
                *(
                    client.fetch_run(
                        base_url=champ_server.base_url,
                        token=DEMO_TOKEN,
                        workflow_id=WORKFLOW_ECHO,
                        run_id=run.id,
                        url=run.url,
                    )
                    for run in runs
                )
            )

    fetched = asyncio.run(go())
    assert [f.output for f in fetched] == [{"echo": {"i": i}} for i in range(40)]
    assert champ_server.sim.max_inflight() == 1


def test_async_champ_must_be_entered_before_use():
    async def go():
        await champ.AsyncChamp().fetch_run(
            base_url="http://x.test", token=DEMO_TOKEN, workflow_id=1, run_id=1
        )

    with pytest.raises(RuntimeError, match="async with"):
        asyncio.run(go())
    logging.getLogger("test").debug("nothing leaked")


# ------------------------------------------------- client-only edge cases


def scripted(status=200, body=b"", headers=None, seen=None):
    """A client whose every answer is fixed; ``seen`` collects the requests."""

    def handler(request):
        if seen is not None:
            seen.append(request)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, headers=headers or {}, content=content)

    return champ.make_client(transport=httpx.MockTransport(handler))


def good_run(**changes):
    run = {"id": 7, "status": "completed", "input": {}, "output": {"ok": True}, "url": None}
    run.update(changes)
    return {k: v for k, v in run.items() if v is not ...}


@pytest.mark.parametrize(
    "body",
    [
        good_run(id=True),
        good_run(id="7"),
        good_run(id=8),  # not the run asked for
        good_run(status="done"),
        good_run(input=[]),
        good_run(output=...),
        good_run(url=5),
        [good_run()],
        b"",
        b"\xff\xfe",
    ],
)
def test_a_poll_body_that_is_not_the_run_is_transient(body):
    with scripted(body=body) as client:
        raises(
            ChampUnavailable,
            champ.fetch_run,
            base_url="http://c.test",
            token=DEMO_TOKEN,
            workflow_id=1,
            run_id=7,
            client=client,
        )


def test_run_validation_accepts_any_json_output_and_absent_url():
    for output in (None, [1], "text", 3.5, {"a": {"b": None}}):
        with scripted(body=good_run(output=output, url=...)) as client:
            run = champ.fetch_run(
                base_url="http://c.test", token=DEMO_TOKEN, workflow_id=1, run_id=7, client=client
            )
        assert run.output == output and run.url is None


def test_champs_error_message_is_truncated_and_scrubbed_of_the_token():
    message = f"token {DEMO_TOKEN} is revoked " + "x" * 5000
    with scripted(401, {"error": message}) as client:
        error = raises(
            ChampAuthError,
            champ.trigger,
            base_url="http://c.test",
            token=DEMO_TOKEN,
            workflow_id=1,
            client=client,
        )
    assert len(error.message) <= champ.MAX_MESSAGE_LENGTH and error.message.startswith(
        "token api_…"
    )


def test_a_303_to_the_trigger_is_outcome_unknown_since_the_post_was_processed():
    with scripted(303, headers={"Location": "/elsewhere"}) as client:
        error = raises(
            ChampOutcomeUnknown,
            champ.trigger,
            base_url="http://c.test",
            token=DEMO_TOKEN,
            workflow_id=1,
            client=client,
        )
    assert error.status_code == 303


@pytest.mark.parametrize(
    "error",
    [
        ChampError("x", status_code=418, permanent=True),
        ChampAuthError("Invalid API token"),
        ChampUnavailable("slow down", status_code=429, retry_after=3.0),
        ChampOutcomeUnknown("lost", status_code=500),
    ],
)
def test_errors_survive_pickling_with_their_attributes(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and repr(copy) == repr(error) and str(copy) == str(error)


@pytest.mark.parametrize("status", [400, 403, 405, 409, 413])
def test_other_client_errors_are_permanent_plain_champ_errors(status):
    with scripted(status, {"error": "nope"}) as client:
        error = raises(
            ChampError,
            champ.trigger,
            base_url="http://c.test",
            token=DEMO_TOKEN,
            workflow_id=1,
            client=client,
        )
    assert type(error) is ChampError and error.permanent and error.message == "nope"


def test_a_body_larger_than_the_cap_is_transient(monkeypatch):
    monkeypatch.setattr(champ, "MAX_BODY_BYTES", 100)
    with scripted(body=good_run(output="x" * 500)) as client:
        error = raises(
            ChampUnavailable,
            champ.fetch_run,
            base_url="http://c.test",
            token=DEMO_TOKEN,
            workflow_id=1,
            run_id=7,
            client=client,
        )
    assert "larger than 100 bytes" in error.message


def test_requests_carry_bearer_token_user_agent_and_no_cookies():
    seen = []
    with scripted(body=good_run(), headers={"Set-Cookie": "sid=abc; Path=/"}, seen=seen) as c:
        for _ in range(2):
            champ.fetch_run(
                base_url="http://c.test", token=DEMO_TOKEN, workflow_id=1, run_id=7, client=c
            )
    assert seen[1].headers["authorization"] == f"Bearer {DEMO_TOKEN}"
    assert seen[1].headers["user-agent"] == "champ-portal/0.1"
    assert "cookie" not in seen[1].headers
    assert DEMO_TOKEN not in repr(seen[1].headers)  # httpx masks it in reprs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("1e9", champ.MAX_RETRY_AFTER),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_parsed_from_seconds_or_http_date(value, expected):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert champ.parse_retry_after(value, now=now) == expected


BASE = "https://api.champ.ai"


@pytest.mark.parametrize(
    ("base", "url", "followed"),
    [
        (BASE, f"{BASE}/api/external/v1/workflows/5/runs/9?view=full", True),
        (BASE, "https://API.champ.ai:443/api/external/v1/runs/9", True),
        (BASE, "https://api.champ.ai:8443/api/external/v1/workflows/5/runs/9", False),
        (BASE, "http://api.champ.ai/api/external/v1/workflows/5/runs/9", False),
        (BASE, "https://evil.test/api/external/v1/workflows/5/runs/9", False),
        (BASE, "https://api.champ.ai.evil.test/api/external/v1/workflows/5/runs/9", False),
        (BASE, "https://user:pw@api.champ.ai/api/external/v1/workflows/5/runs/9", False),
        (BASE, "/api/external/v1/workflows/5/runs/9", False),
        (BASE, "not a url at all", False),
        ("https://gw.test/champ/", "https://gw.test/champ/api/external/v1/x/9", True),
        ("https://gw.test/champ", "https://gw.test/other/api/external/v1/x/9", False),
        ("https://gw.test/champ", "https://gw.test/champ/../admin", False),
        ("https://gw.test/champ", "https://gw.test/champ/%2e%2e/admin", False),
    ],
)
def test_champs_url_is_followed_only_on_the_api_origin_and_base_path(base, url, followed):
    built = champ.run_url(base, 5, 9)
    assert (champ.poll_url(base, 5, 9, url) != built) is followed


def test_run_url_is_built_from_base_workflow_and_run():
    assert champ.run_url("https://gw.test/champ/", 5, 9) == (
        "https://gw.test/champ/api/external/v1/workflows/5/runs/9"
    )
    with pytest.raises(ValueError):
        champ.run_url(BASE, 0, 9)
    with pytest.raises(ValueError):
        champ.run_url(BASE, 5, True)
    for bad_base in ("ftp://x.test", "https://u:p@x.test", "https://x.test/?q=1", "nonsense"):
        assert raises(ChampError, champ.run_url, bad_base, 5, 9).permanent
