"""The built-in Champ simulator: the contract it serves, its knobs, stats, webhooks and CLI."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from runs import simulator_server
from runs.simulator import (
    API_PREFIX,
    CATALOGUE,
    DEMO_TOKEN,
    STATUSES,
    WORKFLOW_ECHO,
    WORKFLOW_FAILS,
    WORKFLOW_SKIPPED,
    WORKFLOW_SLOW,
    WORKFLOW_SUSPEND_RESUME,
    WORKFLOW_TICKETING,
    WORKFLOW_UNPUBLISHED,
    ChampSimulator,
    FakeClock,
    FaultConfig,
    WebhookConfig,
)

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": f"Bearer {DEMO_TOKEN}"}


def runs_path(workflow_id, run_id=None):
    return f"{API_PREFIX}{workflow_id}/runs" + (f"/{run_id}" if run_id else "")


@pytest.fixture
def http(champ_backend):
    """A raw httpx client on the backend (no runs.champ interpretation)."""
    client = httpx.Client(base_url=champ_backend.base_url, transport=champ_backend.router)
    yield client
    client.close()


def test_catalogue_scripts_the_documented_workflows():
    assert set(CATALOGUE) == {
        WORKFLOW_ECHO,
        WORKFLOW_SLOW,
        WORKFLOW_FAILS,
        WORKFLOW_SUSPEND_RESUME,
        WORKFLOW_SKIPPED,
        WORKFLOW_UNPUBLISHED,
        WORKFLOW_TICKETING,
    }
    final = {w.id: w.path[-1][0] for w in CATALOGUE.values() if w.path}
    assert final[WORKFLOW_ECHO] == final[WORKFLOW_SLOW] == "completed"
    assert (final[WORKFLOW_FAILS], final[WORKFLOW_SKIPPED]) == ("failed", "skipped")
    path = [s for s, _ in CATALOGUE[WORKFLOW_SUSPEND_RESUME].path]
    assert path == ["pending", "in_progress", "suspended", "in_progress", "completed"]
    assert sum(s for _, s in CATALOGUE[WORKFLOW_ECHO].path) <= 2.0
    assert dict(CATALOGUE[WORKFLOW_SLOW].path)["in_progress"] >= 30
    assert (
        not CATALOGUE[WORKFLOW_UNPUBLISHED].published and CATALOGUE[WORKFLOW_TICKETING].ticketing
    )


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing Authorization header"),
        ({"Authorization": "Bearer api_nope"}, "Invalid API token"),
        ({"Authorization": f"Basic {DEMO_TOKEN}"}, "Invalid API token"),
        ({"Authorization": DEMO_TOKEN}, "Invalid API token"),
    ],
)
def test_missing_or_invalid_authorization_answers_401_with_an_error_body(http, headers, message):
    for method, path in (("POST", runs_path(WORKFLOW_ECHO)), ("GET", runs_path(WORKFLOW_ECHO, 1))):
        response = http.request(method, path, headers=headers, json={})
        assert (response.status_code, response.json()) == (401, {"error": message})


def test_bearer_scheme_is_case_insensitive(http):
    response = http.post(
        runs_path(WORKFLOW_ECHO), headers={"Authorization": f"bearer {DEMO_TOKEN}"}
    )
    assert response.status_code == 201


def test_unknown_paths_answer_404_and_wrong_methods_405(http):
    for path in ("/", "/api/external/v1/workflows/abc/runs", runs_path(WORKFLOW_ECHO) + "/"):
        assert http.post(path, headers=AUTH).status_code == 404
    assert http.get(runs_path(WORKFLOW_ECHO), headers=AUTH).status_code == 405
    response = http.post(runs_path(WORKFLOW_ECHO, 10001), headers=AUTH)
    assert (response.status_code, response.headers["allow"]) == (405, "GET")


def test_triggering_answers_the_new_pending_run_with_an_absolute_url(http, champ_backend):
    response = http.post(runs_path(WORKFLOW_ECHO), headers=AUTH, json={"input": {"a": 1}})
    body = response.json()
    assert response.status_code == 201 and response.headers["content-type"] == "application/json"
    assert body == {
        "id": body["id"],
        "status": "pending",
        "input": {"a": 1},
        "output": None,
        "url": f"{champ_backend.base_url}{runs_path(WORKFLOW_ECHO, body['id'])}",
    }
    assert http.get(body["url"], headers=AUTH).json() == body


def test_run_ids_are_integers_unique_across_workflows(http, champ_backend):
    ids = [
        http.post(runs_path(w), headers=AUTH).json()["id"]
        for w in (WORKFLOW_ECHO, WORKFLOW_FAILS, WORKFLOW_ECHO, WORKFLOW_SKIPPED)
    ]
    assert len(set(ids)) == 4 and all(isinstance(i, int) for i in ids)
    assert http.get(runs_path(WORKFLOW_FAILS, ids[0]), headers=AUTH).status_code == 404


def test_unpublished_workflow_answers_404_and_ticketing_422(http):
    for path in (runs_path(WORKFLOW_UNPUBLISHED), runs_path(999)):
        response = http.post(path, headers=AUTH)
        assert (response.status_code, response.json()) == (404, {"error": "Workflow not found"})
    response = http.post(runs_path(WORKFLOW_TICKETING), headers=AUTH)
    assert response.status_code == 422 and "ticket" in response.json()["error"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{not json", "Request body must be JSON"),
        (b"[1]", "Request body must be a JSON object"),
        (b'{"input": [1]}', "input must be a JSON object"),
        (b'{"input": "x"}', "input must be a JSON object"),
    ],
)
def test_bad_trigger_bodies_answer_400_and_create_nothing(http, champ_backend, content, error):
    response = http.post(runs_path(WORKFLOW_ECHO), headers=AUTH, content=content)
    assert (response.status_code, response.json()) == (400, {"error": error})
    assert champ_backend.sim.runs == {}


@pytest.mark.parametrize("content", [b"", b"{}", b'{"input": null}', b'{"input": {}}'])
def test_an_omitted_body_or_input_starts_a_run_with_empty_input(http, content):
    response = http.post(runs_path(WORKFLOW_ECHO), headers=AUTH, content=content)
    assert response.status_code == 201 and response.json()["input"] == {}


def test_runs_are_visible_only_to_tokens_of_their_organisation():
    sim = ChampSimulator(tokens={"api_a1": "a", "api_a2": "a", "api_b": "b"}, clock=FakeClock())
    run = sim.handle("POST", runs_path(WORKFLOW_ECHO), {"Authorization": "Bearer api_a1"})
    run_id = json.loads(run[2])["id"]
    status = {
        token: sim.handle(
            "GET", runs_path(WORKFLOW_ECHO, run_id), {"authorization": f"Bearer {token}"}
        )[0]
        for token in ("api_a1", "api_a2", "api_b")
    }
    assert status == {"api_a1": 200, "api_a2": 200, "api_b": 404}


def test_the_run_url_is_built_from_the_request_host():
    sim = ChampSimulator(clock=FakeClock())
    _, _, body = sim.handle("POST", runs_path(WORKFLOW_ECHO), {**AUTH, "Host": "sim.local:9"})
    assert json.loads(body)["url"].startswith("http://sim.local:9/api/external/v1/")


def test_time_scale_shortens_every_step_and_is_fixed_when_the_run_starts():
    clock = FakeClock()
    sim = ChampSimulator(clock=clock, time_scale=0.1)
    run_id = json.loads(sim.handle("POST", runs_path(WORKFLOW_SLOW), AUTH)[2])["id"]
    sim.time_scale = 100  # later changes do not rewrite a run's history
    clock.advance(3.0)  # 0.05 pending + 3.0 in progress at scale 0.1
    assert sim.runs[run_id].status_at(clock())[0] == "in_progress"
    clock.advance(0.1)
    assert sim.runs[run_id].status_at(clock())[0] == "completed"


def test_a_custom_workflow_path_can_be_registered():
    clock = FakeClock()
    sim = ChampSimulator(clock=clock)
    sim.register_workflow(500, [("in_progress", 2), ("suspended", 0)], output={"x": 1})
    run_id = json.loads(sim.handle("POST", runs_path(500), AUTH)[2])["id"]
    clock.advance(10)
    body = json.loads(sim.handle("GET", runs_path(500, run_id), AUTH)[2])
    assert (body["status"], body["output"]) == ("suspended", None)
    with pytest.raises(ValueError):
        sim.register_workflow(501, [("exploded", 1)])
    assert set(STATUSES) >= {s for w in CATALOGUE.values() for s, _ in w.path}


def fault_sequence(seed):
    sim = ChampSimulator(clock=FakeClock(), faults=FaultConfig(fail_rate=0.5, seed=seed))
    run_id = json.loads(sim.handle("POST", runs_path(WORKFLOW_ECHO), AUTH)[2])["id"]
    return [sim.handle("GET", runs_path(WORKFLOW_ECHO, run_id), AUTH)[0] for _ in range(40)]


def test_faults_are_deterministic_for_a_seed():
    first = fault_sequence(7)
    assert first == fault_sequence(7) and {200, 500, 503} <= set(first)
    assert first != fault_sequence(8)


def test_retry_after_alternates_between_seconds_and_http_date():
    sim = ChampSimulator(clock=FakeClock(), faults=FaultConfig(rate_limit_rate=1, retry_after=3))
    values = [
        sim.handle("GET", runs_path(WORKFLOW_ECHO, 1), AUTH)[1]["Retry-After"] for _ in range(4)
    ]
    assert values[0] == values[2] == "3"
    assert values[1].endswith(" GMT") and values[3].endswith(" GMT")


def test_random_faults_spare_triggers_unless_asked(champ_backend, http):
    champ_backend.sim.configure(fail_rate=1.0)
    assert http.post(runs_path(WORKFLOW_ECHO), headers=AUTH).status_code == 201
    champ_backend.sim.configure(fault_methods={"GET", "POST"})
    assert http.post(runs_path(WORKFLOW_ECHO), headers=AUTH).status_code in (500, 503)


def test_stats_and_reset_endpoints(http, champ_backend):
    run = http.post(runs_path(WORKFLOW_ECHO), headers=AUTH).json()
    champ_backend.advance(0.25)
    http.get(run["url"], headers=AUTH)
    champ_backend.advance(0.5)
    http.get(run["url"], headers=AUTH)
    stats = http.get("/_sim/stats?times=1").json()
    assert (stats["posts"], stats["gets"], stats["runs_created"]) == (1, 2, 1)
    times = stats["runs"][str(run["id"])]["get_times"]
    assert times[1] - times[0] == pytest.approx(0.5)
    assert champ_backend.sim.run_gets(run["id"]) == 2
    assert http.post("/_sim/reset").json() == {"reset": True}
    assert http.get("/_sim/stats").json()["runs"] == {}
    assert http.get(run["url"], headers=AUTH).status_code == 404
    assert http.post(runs_path(WORKFLOW_ECHO), headers=AUTH).json()["id"] > run["id"]


def test_faults_endpoint_changes_knobs_and_rejects_bad_values(http, champ_backend):
    response = http.post("/_sim/faults", json={"fail_rate": 0.25, "time_scale": 0.5})
    assert response.json()["fail_rate"] == 0.25 and champ_backend.sim.time_scale == 0.5
    assert champ_backend.sim.faults.fail_rate == 0.25
    assert http.post("/_sim/faults", json={"fail_rate": 2}).status_code == 400
    assert http.post("/_sim/faults", json={"no_such_knob": 1}).status_code == 400
    assert champ_backend.sim.faults.fail_rate == 0.25


def test_overlapping_gets_of_one_run_are_counted(champ_server):
    sim = champ_server.sim
    lone, shared = (champ_server.trigger(WORKFLOW_ECHO) for _ in range(2))
    sim.configure(latency_ms=150)
    with httpx.Client(headers=AUTH) as client:
        client.get(lone.url)
        client.get(lone.url)
        threads = [threading.Thread(target=client.get, args=(shared.url,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert (sim.max_inflight(lone.id), sim.max_inflight(shared.id), sim.max_inflight()) == (
        1,
        3,
        3,
    )
    assert sim.stats()["max_inflight_per_run"] == 3


def test_in_process_latency_beyond_the_read_timeout_times_out(champ_sim):
    champ_sim.sim.configure(latency_ms=5000)
    with pytest.raises(httpx.ReadTimeout):
        champ_sim.client().post(f"{champ_sim.base_url}{runs_path(WORKFLOW_ECHO)}", headers=AUTH)


def test_a_hanging_request_does_not_hold_up_the_server_or_its_shutdown(make_champ_backend):
    backend = make_champ_backend("loopback", faults=FaultConfig(timeout_rate=1, hang_seconds=60))
    run = backend.trigger(WORKFLOW_ECHO)
    with pytest.raises(httpx.ReadTimeout):
        backend.client().get(run.url, headers=AUTH)
    backend.sim.configure(timeout_rate=0)
    assert backend.client().get(run.url, headers=AUTH).status_code == 200
    started = time.monotonic()
    backend.server.stop()
    assert time.monotonic() - started < 3


# ----------------------------------------------------------------- webhooks


def test_webhook_payload_matches_the_contract_and_is_due_once():
    clock = FakeClock()
    sim = ChampSimulator(clock=clock, webhook=WebhookConfig("http://hook.test/", "whsec"))
    echo = json.loads(
        sim.handle("POST", runs_path(WORKFLOW_ECHO), AUTH, b'{"input": {"q": 1}}')[2]
    )
    sim.handle("POST", runs_path(WORKFLOW_FAILS), AUTH)
    sim.handle("POST", runs_path(WORKFLOW_SKIPPED), AUTH)
    assert sim.pop_due_webhooks() == []
    clock.advance(10)
    payloads = sim.pop_due_webhooks()
    assert sorted(p["event"] for p in payloads) == [
        "workflow_run.completed",
        "workflow_run.failed",
    ]
    completed = next(p for p in payloads if p["event"] == "workflow_run.completed")
    run = completed["data"]["workflow_run"]
    assert set(completed) == {"event", "timestamp", "data"}
    assert run == {
        "id": echo["id"],
        "workflow_id": WORKFLOW_ECHO,
        "status": "completed",
        "input": {"q": 1},
        "output": {"echo": {"q": 1}},
        "created_at": run["created_at"],
        "updated_at": run["updated_at"],
    }
    assert run["created_at"].endswith("Z") and run["created_at"] <= run["updated_at"]
    assert sim.pop_due_webhooks() == []


class _Receiver(BaseHTTPRequestHandler):
    received: list  # set per test

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.headers["Authorization"], body))
        self.send_response(500 if len(self.received) == 1 else 204)  # first attempt fails
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_server_delivers_webhooks_with_the_bearer_credential_and_retries():
    _Receiver.received = received = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = WebhookConfig(
        f"http://127.0.0.1:{receiver.server_port}/hooks/", "whsec_1", backoff=0.05
    )
    sim = ChampSimulator(webhook=hook, time_scale=0.01)
    try:
        with sim.running() as server, httpx.Client(headers=AUTH) as client:
            client.post(f"{server.base_url}{runs_path(WORKFLOW_ECHO)}", json={"input": {"n": 1}})
            deadline = time.monotonic() + 5
            while not sim.webhook_log and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert [auth for auth, _ in received] == ["Bearer whsec_1"] * 2
    assert received[1][1]["data"]["workflow_run"]["output"] == {"echo": {"n": 1}}
    assert sim.webhook_log[0]["attempts"] == 2 and sim.webhook_log[0]["outcome"] == 204


# ----------------------------------------------------------------- command


def parse(argv, environ):
    parser = argparse.ArgumentParser()
    simulator_server.add_arguments(parser, environ)
    return vars(parser.parse_args(argv))


def test_command_options_default_to_champ_sim_environment_variables():
    environ = {
        "CHAMP_SIM_PORT": "9999",
        "CHAMP_SIM_TOKENS": "api_a, api_b",
        "CHAMP_SIM_FAIL_RATE": "0.2",
        "CHAMP_SIM_LATENCY_MS": "15",
        "CHAMP_SIM_HANG_POST": "true",
        "CHAMP_SIM_TIME_SCALE": "0.5",
        "CHAMP_SIM_WEBHOOK_URL": "http://127.0.0.1:8000/hooks/champ/demo/",
        "CHAMP_SIM_WEBHOOK_TOKEN": "whsec",
    }
    options = parse(["--fail-rate", "0.3"], environ)
    sim = simulator_server.simulator_from_options(options)
    assert options["port"] == 9999 and options["host"] == "127.0.0.1"
    assert set(sim.tokens) == {"api_a", "api_b"}
    assert (sim.faults.fail_rate, sim.faults.latency_ms, sim.faults.hang_post) == (0.3, 15, True)
    assert sim.time_scale == 0.5 and sim.webhook.token == "whsec"
    defaults = simulator_server.simulator_from_options(parse([], {}))
    assert set(defaults.tokens) == {DEMO_TOKEN} and defaults.faults == FaultConfig()


@pytest.mark.parametrize(
    "argv", [["--fail-rate", "2"], ["--time-scale", "0"], ["--retry-after-form", "x"]]
)
def test_command_rejects_bad_option_values(argv):
    with pytest.raises(ValueError):
        simulator_server.simulator_from_options(parse(argv, {}))


def test_simulator_and_client_import_neither_django_nor_the_portal():
    code = (
        "import sys, runs.champ, runs.simulator, runs.simulator_server\n"
        "bad = [m for m in sys.modules if m.startswith('django') or m in "
        "('runs.models', 'runs.lifecycle')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=_env())


def test_only_the_client_imports_httpx_at_module_level():
    importers = {
        path.name
        for path in (ROOT / "runs").rglob("*.py")
        if any(
            line.startswith(("import httpx", "from httpx"))
            for line in path.read_text().splitlines()
        )
    }
    assert importers == {"champ.py"}


def _env():
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@pytest.mark.slow
def test_manage_py_champ_simulator_serves_the_catalogue_and_stops_on_sigterm(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "CHAMP_SIM_TOKENS": "api_cmd_token",
        "CHAMP_PORTAL_VAR_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "champ_simulator", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}{runs_path(WORKFLOW_ECHO)}"
        deadline, response = time.monotonic() + 20, None
        while response is None and time.monotonic() < deadline:
            try:
                response = httpx.post(url, headers={"Authorization": "Bearer api_cmd_token"})
            except httpx.ConnectError:
                time.sleep(0.1)
        assert response is not None and response.status_code == 201
        assert httpx.post(url, headers=AUTH).status_code == 401  # only the configured token
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=10)[0].decode()
    assert process.returncode == 0, output
    assert f"Champ simulator on http://127.0.0.1:{port}" in output


def test_a_restarted_simulator_does_not_reuse_run_ids():
    from runs.simulator_server import add_arguments, simulator_from_options

    def started():
        parser = argparse.ArgumentParser()
        add_arguments(parser, {})
        sim = simulator_from_options(vars(parser.parse_args([])))
        status, _, body = sim.handle("POST", runs_path(WORKFLOW_ECHO), AUTH, b'{"input": {}}')
        assert status in (200, 201)
        return json.loads(body)["id"]

    first = started()
    time.sleep(0.01)
    assert started() > first
