"""A faithful, self-contained Champ simulator (``CHAMP_API.md``); no imports from the portal.

One core, :class:`ChampSimulator`, with a pure request handler
(:meth:`ChampSimulator.handle`) served two ways:

* in-process: :meth:`ChampSimulator.transport` is an ``httpx.MockTransport``
  for sync and async clients (no port, fake clock friendly);
* over real HTTP: :meth:`ChampSimulator.running` (background thread, tests) and
  :meth:`ChampSimulator.serve` (blocking, ``manage.py champ_simulator``), both in
  ``runs/simulator_server.py`` (aiohttp).

A run's status is derived from the clock: each workflow of :data:`CATALOGUE`
scripts a path of ``(status, seconds)``, every duration multiplied by
``time_scale`` (0.01 makes a 2 s workflow take 20 ms).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEMO_TOKEN = "api_demo_simulator_token_0001"
API_PREFIX = "/api/external/v1/workflows/"
STATUSES = ("pending", "in_progress", "completed", "failed", "suspended", "skipped")
TERMINAL = frozenset({"completed", "failed", "skipped"})
FIRST_RUN_ID = 10001  # far from workflow ids, so the two are never confused


def time_based_first_run_id() -> int:
    """A first run id that a restarted simulator does not reuse (milliseconds since 1970).

    Real Champ never reuses a run id; a simulator that restarted at 10001 would
    hand the portal ids it already stored for earlier runs.
    """
    return int(time.time() * 1000)


WORKFLOW_ECHO = 101
WORKFLOW_SLOW = 102
WORKFLOW_FAILS = 103
WORKFLOW_SUSPEND_RESUME = 104
WORKFLOW_SKIPPED = 105
WORKFLOW_UNPUBLISHED = 106
WORKFLOW_TICKETING = 107


@dataclass(frozen=True)
class Workflow:
    """A scripted workflow: ``path`` is ``(status, seconds in it)``; the last status stays."""

    id: int
    name: str
    path: tuple[tuple[str, float], ...] = ()
    output: Any = None  # final output; a callable receives the run's input
    published: bool = True
    ticketing: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.published and not self.ticketing and not self.path:
            raise ValueError("a runnable workflow needs a status path")
        for status, seconds in self.path:
            if status not in STATUSES or seconds < 0:
                raise ValueError(f"bad path step {(status, seconds)!r}")

    def final_output(self, run_input: dict) -> Any:
        return self.output(run_input) if callable(self.output) else self.output


CATALOGUE: dict[int, Workflow] = {
    w.id: w
    for w in (
        Workflow(
            WORKFLOW_ECHO,
            "echo",
            (("pending", 0.5), ("in_progress", 1.5), ("completed", 0)),
            output=lambda run_input: {"echo": run_input},
            description="Completes in about 2 s; its output echoes the input.",
        ),
        Workflow(
            WORKFLOW_SLOW,
            "slow",
            (("pending", 0.5), ("in_progress", 30.0), ("completed", 0)),
            output={"result": "done", "took_seconds": 30},
            description="Stays in progress for 30 s, then completes.",
        ),
        Workflow(
            WORKFLOW_FAILS,
            "fails",
            (("pending", 0.5), ("in_progress", 1.5), ("failed", 0)),
            output={"error": "Step 'Validate' failed: simulated failure"},
            description="Fails after about 2 s with an error output.",
        ),
        Workflow(
            WORKFLOW_SUSPEND_RESUME,
            "suspend-resume",
            (
                ("pending", 0.5),
                ("in_progress", 1.5),
                ("suspended", 3.0),
                ("in_progress", 1.5),
                ("completed", 0),
            ),
            output={"approved": True},
            description="Suspended for 3 s (waiting for approval), then resumes and completes.",
        ),
        Workflow(
            WORKFLOW_SKIPPED,
            "skipped",
            (("pending", 0.5), ("skipped", 0)),
            description="Skipped after 0.5 s; no output.",
        ),
        Workflow(
            WORKFLOW_UNPUBLISHED,
            "unpublished",
            published=False,
            description="Not published: every request answers 404.",
        ),
        Workflow(
            WORKFLOW_TICKETING,
            "ticketing",
            ticketing=True,
            description="A ticketing workflow: triggering it answers 422.",
        ),
    )
}


class Hang(Exception):
    """Raised by :meth:`ChampSimulator.handle`: answer nothing (until the client times out)."""


class Drop(Exception):
    """Raised by :meth:`ChampSimulator.handle`: close the connection without an answer."""


@dataclass
class FaultConfig:
    """Injected faults. Rates are probabilities in [0, 1], drawn from a seeded RNG.

    Random faults (rate limit, fail, timeout, drop, malformed) hit only the
    methods in ``fault_methods`` and are decided before the request is
    processed (nothing is created), except ``malformed`` on a POST, which
    creates the run and then answers garbage. ``hang_post`` / ``drop_post``
    create the run, then hang / drop: the client cannot know the outcome.
    ``redirect_to`` answers every API request with a 302 there.
    """

    latency_ms: float = 0
    fail_rate: float = 0.0  # 500 and 503, alternately
    rate_limit_rate: float = 0.0  # 429 + Retry-After
    retry_after: float = 1.0
    retry_after_form: str = "alternate"  # "seconds" | "date" | "alternate"
    timeout_rate: float = 0.0  # hang for hang_seconds
    hang_seconds: float = 60.0
    malformed_rate: float = 0.0
    drop_rate: float = 0.0
    hang_post: bool = False
    drop_post: bool = False
    fault_methods: frozenset[str] = frozenset({"GET"})
    redirect_to: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "fail_rate",
            "rate_limit_rate",
            "timeout_rate",
            "malformed_rate",
            "drop_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.latency_ms < 0 or self.retry_after < 0 or self.hang_seconds < 0:
            raise ValueError("latency_ms, retry_after and hang_seconds must be >= 0")
        if self.retry_after_form not in ("seconds", "date", "alternate"):
            raise ValueError("retry_after_form must be seconds, date or alternate")
        self.fault_methods = frozenset(m.upper() for m in self.fault_methods)


@dataclass(frozen=True)
class WebhookConfig:
    """Where to POST ``workflow_run.completed`` / ``.failed`` events, with which bearer token."""

    url: str
    token: str = ""
    attempts: int = 5  # Champ retries up to 10 times; a few is enough locally
    backoff: float = 0.5  # seconds, doubled after each failed attempt
    timeout: float = 5.0


class FakeClock:
    """A monotonic clock for tests: call it for the time, ``advance()`` to move it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class SimRun:
    id: int
    workflow: Workflow
    org: str
    input: dict
    created: float  # clock time
    scale: float  # time_scale when created, so later knob changes do not rewrite history
    get_times: list[float] = field(default_factory=list)
    max_inflight: int = 0

    def status_at(self, now: float) -> tuple[str, float]:
        """The status at clock time ``now`` and the clock time it was entered."""
        entered = self.created
        for status, seconds in self.workflow.path[:-1]:
            ends = entered + seconds * self.scale
            if now < ends:
                return status, entered
            entered = ends
        return self.workflow.path[-1][0], entered


def _json(status: int, data: Any, extra: Mapping[str, str] | None = None) -> tuple:
    headers = {"Content-Type": "application/json"}
    headers.update(extra or {})
    return status, headers, json.dumps(data).encode()


def _error(status: int, message: str) -> tuple:
    return _json(status, {"error": message})


_MALFORMED = (
    (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    (b'{"id": "10001", "status": "completed", "input": {}, "output": null}', "application/json"),
    (b'{"id": 10001, "status": "exploded", "input": {}, "output": null}', "application/json"),
    (b'{"workflow_run": {"id": 10001}', "application/json"),
    (b"[]", "application/json"),
)


class ChampSimulator:
    """The simulated Champ: catalogue, runs, tokens, faults, stats and webhooks."""

    def __init__(
        self,
        *,
        tokens: Iterable[str] | Mapping[str, str] = (DEMO_TOKEN,),
        clock: Callable[[], float] = time.monotonic,
        faults: FaultConfig | None = None,
        webhook: WebhookConfig | None = None,
        time_scale: float = 1.0,
        workflows: Iterable[Workflow] = (),
        first_run_id: int = FIRST_RUN_ID,
    ) -> None:
        # A mapping token -> organisation scopes runs to an organisation; a
        # plain list puts every token in one organisation ("demo").
        self.tokens = (
            dict(tokens) if isinstance(tokens, Mapping) else dict.fromkeys(tokens, "demo")
        )
        self.clock = clock
        self.faults = faults or FaultConfig()
        self.webhook = webhook
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale
        self.workflows = dict(CATALOGUE)
        self.workflows.update((w.id, w) for w in workflows)
        self._wall_offset = time.time() - clock()
        self._ids = itertools.count(first_run_id)
        self._lock = threading.Lock()
        self.reset()

    # ------------------------------------------------------------ knobs

    def reset(self) -> None:
        """Forget every run and statistic (run ids keep increasing); re-seed the fault RNG."""
        with self._lock:
            self.runs: dict[int, SimRun] = {}
            self.post_count = 0
            self.get_count = 0
            self.request_count = 0
            self.fault_counts: Counter[str] = Counter()
            self.webhook_log: list[dict] = []
            self._inflight: Counter[int] = Counter()
            self._webhook_due: list[tuple[float, int]] = []
            self._rng = random.Random(self.faults.seed)
            self._turn = 0

    def configure(self, **knobs: Any) -> FaultConfig:
        """Change fault knobs at runtime (validated), e.g. ``configure(fail_rate=0.2)``."""
        time_scale = float(knobs.pop("time_scale", self.time_scale))
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.faults = dataclasses.replace(self.faults, **knobs)
        self.time_scale = time_scale
        if "seed" in knobs:
            self._rng = random.Random(self.faults.seed)
        return self.faults

    def register_workflow(
        self, workflow_id: int, path: Iterable[tuple[str, float]], *, output: Any = None
    ) -> Workflow:
        """Add (or replace) a scripted workflow: ``[("in_progress", 5), ("completed", 0)]``."""
        workflow = Workflow(workflow_id, f"custom-{workflow_id}", tuple(path), output=output)
        self.workflows[workflow_id] = workflow
        return workflow

    # ------------------------------------------------------------ stats

    def run_gets(self, run_id: int) -> int:
        """How many GETs this run received."""
        run = self.runs.get(run_id)
        return len(run.get_times) if run else 0

    def run_get_times(self, run_id: int) -> list[float]:
        """Clock times of this run's GETs."""
        run = self.runs.get(run_id)
        return list(run.get_times) if run else []

    def max_inflight(self, run_id: int | None = None) -> int:
        """Most GETs of one run ever in flight at once (of any run when ``run_id`` is None)."""
        with self._lock:
            if run_id is not None:
                run = self.runs.get(run_id)
                return run.max_inflight if run else 0
            return max((r.max_inflight for r in self.runs.values()), default=0)

    def stats(self, *, times: bool = False) -> dict:
        """Counters as JSON-able data (also served at ``GET /_sim/stats[?times=1]``)."""
        with self._lock:
            runs = {
                str(r.id): {
                    "workflow_id": r.workflow.id,
                    "gets": len(r.get_times),
                    "max_inflight": r.max_inflight,
                    **({"get_times": list(r.get_times)} if times else {}),
                }
                for r in self.runs.values()
            }
            return {
                "requests": self.request_count,
                "posts": self.post_count,
                "gets": self.get_count,
                "runs_created": len(self.runs),
                "max_inflight_per_run": max(
                    (r.max_inflight for r in self.runs.values()), default=0
                ),
                "faults": dict(self.fault_counts),
                "webhooks": list(self.webhook_log),
                "runs": runs,
            }

    def begin(self, method: str, path: str) -> int | None:
        """Mark a run's GET as in flight (the server calls this before any latency)."""
        if method != "GET" or not path.startswith(API_PREFIX):
            return None
        parts = urlsplit(path).path[len(API_PREFIX) :].split("/")
        if len(parts) != 3 or not parts[2].isdecimal():
            return None
        run_id = int(parts[2])
        with self._lock:
            self._inflight[run_id] += 1
            run = self.runs.get(run_id)
            if run is not None:
                run.max_inflight = max(run.max_inflight, self._inflight[run_id])
        return run_id

    def end(self, key: int | None) -> None:
        """The request marked by :meth:`begin` is finished."""
        if key is not None:
            with self._lock:
                if self._inflight[key] > 1:
                    self._inflight[key] -= 1
                else:  # also after a reset() that raced with this request
                    self._inflight.pop(key, None)

    # ------------------------------------------------------------ requests

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        scheme: str = "http",
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: ``(status, headers, body)``. Raises :class:`Hang` / :class:`Drop`.

        Pure apart from the simulator's own state: no sleeping, no I/O.
        """
        split = urlsplit(path)
        if split.path.startswith("/_sim/"):
            return self._control(method, split.path, split.query, body)
        if isinstance(headers, dict):
            headers = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.request_count += 1
        if not split.path.startswith(API_PREFIX):
            return _error(404, "Not found")
        parts = split.path[len(API_PREFIX) :].split("/")
        if not (
            2 <= len(parts) <= 3 and parts[1] == "runs" and all(p.isdecimal() for p in parts[::2])
        ):
            return _error(404, "Not found")
        allowed = "POST" if len(parts) == 2 else "GET"
        if method != allowed:
            return _json(405, {"error": "Method not allowed"}, {"Allow": allowed})
        if self.faults.redirect_to:
            self.fault_counts["redirect"] += 1
            return _json(302, {"error": "Moved"}, {"Location": self.faults.redirect_to})
        malformed = False
        if method in self.faults.fault_methods:
            early = self._random_fault()
            if early is not None:
                return early
            malformed = self._draw(self.faults.malformed_rate, "malformed")
        org = self._authenticate(headers.get("authorization"))
        if isinstance(org, tuple):
            return org
        workflow = self.workflows.get(int(parts[0]))
        if workflow is None or not workflow.published:
            return _error(404, "Workflow not found")
        host = headers.get("host") or "localhost"
        if method == "POST":
            if workflow.ticketing:
                return _error(
                    422,
                    "This workflow is triggered by ticket events and cannot be run "
                    "through the external API",
                )
            answer = self._create(workflow, org, body, f"{scheme}://{host}")
            if answer[0] == 201:
                if self.faults.hang_post:
                    self.fault_counts["hang_post"] += 1
                    raise Hang
                if self.faults.drop_post:
                    self.fault_counts["drop_post"] += 1
                    raise Drop
        else:
            answer = self._get(workflow, org, int(parts[2]), f"{scheme}://{host}")
        if malformed and answer[0] < 300:
            content, content_type = _MALFORMED[self.fault_counts["malformed"] % len(_MALFORMED)]
            return 200, {"Content-Type": content_type}, content
        return answer

    def _draw(self, rate: float, name: str) -> bool:
        if rate and self._rng.random() < rate:
            self.fault_counts[name] += 1
            return True
        return False

    def _random_fault(self) -> tuple | None:
        f = self.faults
        if self._draw(f.rate_limit_rate, "rate_limit"):
            return _json(
                429, {"error": "Rate limit exceeded"}, {"Retry-After": self._retry_after()}
            )
        if self._draw(f.fail_rate, "fail"):
            self._turn += 1
            if self._turn % 2:
                return _error(500, "Internal server error")
            return _json(
                503, {"error": "Service unavailable"}, {"Retry-After": self._retry_after()}
            )
        if self._draw(f.timeout_rate, "timeout"):
            raise Hang
        if self._draw(f.drop_rate, "drop"):
            raise Drop
        return None

    def _retry_after(self) -> str:
        form = self.faults.retry_after_form
        if form == "alternate":
            form = "date" if self.fault_counts["retry_after"] % 2 else "seconds"
        self.fault_counts["retry_after"] += 1
        if form == "seconds":
            return str(round(self.faults.retry_after))
        # HTTP-date has 1 s resolution: round up so the client never waits less.
        return formatdate(time.time() + self.faults.retry_after + 1, usegmt=True)

    def _authenticate(self, header: str | None) -> str | tuple:
        if not header:
            return _error(401, "Missing Authorization header")
        scheme, _, token = header.partition(" ")
        org = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        return org if org is not None else _error(401, "Invalid API token")

    def _create(self, workflow: Workflow, org: str, body: bytes, origin: str) -> tuple:
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            return _error(400, "Request body must be JSON")
        if not isinstance(data, dict):
            return _error(400, "Request body must be a JSON object")
        run_input = data.get("input")
        if run_input is None:
            run_input = {}
        if not isinstance(run_input, dict):
            return _error(400, "input must be a JSON object")
        now = self.clock()
        with self._lock:
            run = SimRun(next(self._ids), workflow, org, run_input, now, self.time_scale)
            self.runs[run.id] = run
            self.post_count += 1
            if self.webhook and workflow.path[-1][0] in ("completed", "failed"):
                done = now + sum(s for _, s in workflow.path[:-1]) * run.scale
                heapq.heappush(self._webhook_due, (done, run.id))
        return _json(201, self._body(run, now, origin))

    def _get(self, workflow: Workflow, org: str, run_id: int, origin: str) -> tuple:
        now = self.clock()
        with self._lock:
            self.get_count += 1
            run = self.runs.get(run_id)
            if run is None or run.workflow.id != workflow.id or run.org != org:
                return _error(404, "Run not found")
            run.get_times.append(now)
        return _json(200, self._body(run, now, origin))

    def _body(self, run: SimRun, now: float, origin: str) -> dict:
        status, _ = run.status_at(now)
        output = (
            run.workflow.final_output(run.input) if status in ("completed", "failed") else None
        )
        return {
            "id": run.id,
            "status": status,
            "input": run.input,
            "output": output,
            "url": f"{origin}{API_PREFIX}{run.workflow.id}/runs/{run.id}",
        }

    def _control(self, method: str, path: str, query: str, body: bytes) -> tuple:
        if path == "/_sim/stats" and method == "GET":
            return _json(200, self.stats(times=parse_qs(query).get("times") == ["1"]))
        if path == "/_sim/reset" and method == "POST":
            self.reset()
            return _json(200, {"reset": True})
        if path == "/_sim/faults" and method == "POST":
            try:
                knobs = json.loads(body or b"{}")
                faults = self.configure(**knobs)
            except (ValueError, TypeError) as exc:
                return _error(400, str(exc))
            data = dataclasses.asdict(faults)
            data["fault_methods"] = sorted(data["fault_methods"])
            return _json(200, {**data, "time_scale": self.time_scale})
        return _error(404, "Not found")

    # ------------------------------------------------------------ webhooks

    def _iso(self, clock_time: float) -> str:
        moment = datetime.fromtimestamp(clock_time + self._wall_offset, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def webhook_payload(self, run_id: int) -> dict | None:
        """The CHAMP_API.md webhook body for a terminal (completed/failed) run, else None."""
        run = self.runs.get(run_id)
        now = self.clock()
        if run is None:
            return None
        status, entered = run.status_at(now)
        if status not in ("completed", "failed"):
            return None
        return {
            "event": f"workflow_run.{status}",
            "timestamp": self._iso(now),
            "data": {
                "workflow_run": {
                    "id": run.id,
                    "workflow_id": run.workflow.id,
                    "status": status,
                    "input": run.input,
                    "output": run.workflow.final_output(run.input),
                    "created_at": self._iso(run.created),
                    "updated_at": self._iso(entered),
                }
            },
        }

    def pop_due_webhooks(self) -> list[dict]:
        """Payloads of runs that became completed/failed since the last call (webhook set)."""
        now, due = self.clock(), []
        with self._lock:
            while self._webhook_due and self._webhook_due[0][0] <= now:
                due.append(heapq.heappop(self._webhook_due)[1])
        return [p for p in map(self.webhook_payload, due) if p is not None]

    # ------------------------------------------------------------ serving

    def transport(self) -> Any:
        """An ``httpx.MockTransport`` serving this simulator in-process (sync and async).

        A hang raises ``httpx.ReadTimeout``, a drop ``httpx.RemoteProtocolError``;
        ``latency_ms`` is not slept, but exceeding the request's read timeout
        raises ``httpx.ReadTimeout`` as a real server would.
        """
        import httpx  # lazily: only tests need it

        def handler(request: httpx.Request) -> httpx.Response:
            path = request.url.raw_path.decode("ascii")
            key = self.begin(request.method, path)
            try:
                read_timeout = (request.extensions.get("timeout") or {}).get("read")
                latency = self.faults.latency_ms / 1000
                if latency and read_timeout is not None and latency > read_timeout:
                    raise httpx.ReadTimeout("timed out (simulated latency)", request=request)
                try:
                    status, headers, body = self.handle(
                        request.method,
                        path,
                        request.headers,
                        request.content,
                        scheme=request.url.scheme,
                    )
                except Hang:
                    raise httpx.ReadTimeout("timed out (simulated)", request=request) from None
                except Drop:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    ) from None
                return httpx.Response(status, headers=headers, content=body)
            finally:
                self.end(key)

        return httpx.MockTransport(handler)

    def running(self, host: str = "127.0.0.1", port: int = 0) -> Any:
        """Context manager: serve over real HTTP in a background thread.

        ``with sim.running() as server: server.base_url`` (port 0: a free port).
        """
        from runs.simulator_server import SimulatorServer

        return SimulatorServer(self, host, port)

    def serve(
        self, host: str = "127.0.0.1", port: int = 8765, *, access_log: bool = False
    ) -> None:
        """Serve over real HTTP until interrupted (SIGINT/SIGTERM)."""
        from runs.simulator_server import serve_forever

        serve_forever(self, host, port, access_log=access_log)
