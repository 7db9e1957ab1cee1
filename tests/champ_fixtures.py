"""Champ simulator fixtures (registered from conftest.py: ``pytest_plugins``).

Every fixture yields a :class:`ChampBackend`: the simulator (knobs, stats),
its fake clock, the base URL an organisation would use, and factories for the
clients of ``runs.champ`` wired to it. Both kinds use a :class:`FakeClock`, so
a test moves runs along with ``backend.advance(seconds)`` instead of sleeping.

* ``champ_sim``      in-process: an httpx transport, no port.
* ``champ_server``   real HTTP on a free loopback port (aiohttp, background thread).
* ``champ_backend``  parametrised over both, for contract tests.
* ``make_champ_backend(kind, **simulator_kwargs)`` more of them (e.g. a
  second origin, or a real clock with ``clock=time.monotonic``).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from runs import champ
from runs.simulator import DEMO_TOKEN, ChampSimulator, FakeClock, FaultConfig

#: Short timeouts keep fault tests fast (a hang costs READ seconds).
TEST_TIMEOUT = httpx.Timeout(connect=1.0, read=0.3, write=1.0, pool=1.0)
KINDS = ("inprocess", "loopback")


class HostRouter(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Routes in-process requests by host to simulators; an unknown host refuses to connect.

    ``attempts`` counts requests per host, including refused ones.
    """

    def __init__(self) -> None:
        self.routes: dict[str, httpx.MockTransport] = {}
        self.attempts: Counter[str] = Counter()

    def _route(self, request: httpx.Request) -> httpx.MockTransport:
        host = request.url.netloc.decode()
        self.attempts[host] += 1
        try:
            return self.routes[host]
        except KeyError:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request) from None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._route(request).handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._route(request).handle_async_request(request)


@dataclass
class ChampBackend:
    """One simulated Champ origin and how to reach it."""

    kind: str
    sim: ChampSimulator
    base_url: str
    router: HostRouter | None = None  # in-process only
    server: Any = None  # loopback only: runs.simulator_server.SimulatorServer
    token: str = DEMO_TOKEN
    timeout: httpx.Timeout = field(default_factory=lambda: TEST_TIMEOUT)
    _clients: list = field(default_factory=list)

    @property
    def clock(self) -> FakeClock:
        return self.sim.clock  # type: ignore[return-value]

    def advance(self, seconds: float) -> None:
        """Move the simulator's fake clock."""
        self.clock.advance(seconds)

    def transport(self) -> HostRouter | None:
        """The transport a client needs to reach this backend (None: the network)."""
        return self.router

    def client(self, *, timeout: httpx.Timeout | None = None) -> httpx.Client:
        """A sync client as ``runs.champ`` builds it, with short test timeouts."""
        client = champ.make_client(timeout=timeout or self.timeout, transport=self.router)
        self._clients.append(client)
        return client

    def async_champ(self, **kwargs: Any) -> champ.AsyncChamp:
        """An ``AsyncChamp`` reaching this backend (use it with ``async with``)."""
        kwargs.setdefault("timeout", self.timeout)
        if self.router is not None:
            kwargs.setdefault("transport", self.router)
        return champ.AsyncChamp(**kwargs)

    def trigger(self, workflow_id: int, input: dict | None = None, **kwargs: Any):
        """``champ.trigger`` against this backend with its token."""
        kwargs.setdefault("token", self.token)
        kwargs.setdefault("client", self.client())
        return champ.trigger(
            base_url=self.base_url, workflow_id=workflow_id, input=input, **kwargs
        )

    def fetch(self, workflow_id: int, run_id: int, **kwargs: Any):
        """``champ.fetch_run`` against this backend with its token."""
        kwargs.setdefault("token", self.token)
        kwargs.setdefault("client", self.client())
        return champ.fetch_run(
            base_url=self.base_url, workflow_id=workflow_id, run_id=run_id, **kwargs
        )

    def close(self) -> None:
        for client in self._clients:
            client.close()
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def make_champ_backend():
    """Factory: ``make_champ_backend("inprocess" | "loopback", **ChampSimulator kwargs)``.

    Defaults: a :class:`FakeClock` and ``hang_seconds=5`` (a hang outlives any
    test timeout, and a stopping server cuts it). In-process backends of one
    test share a :class:`HostRouter` and get hosts ``champ-1.test``, ``champ-2.test``…
    """
    router = HostRouter()
    numbers = itertools.count(1)
    backends: list[ChampBackend] = []

    def make(kind: str = "inprocess", **sim_kwargs: Any) -> ChampBackend:
        sim_kwargs.setdefault("clock", FakeClock())
        sim_kwargs.setdefault("faults", FaultConfig(hang_seconds=5))
        sim = ChampSimulator(**sim_kwargs)
        if kind == "inprocess":
            host = f"champ-{next(numbers)}.test"
            router.routes[host] = sim.transport()
            backend = ChampBackend(kind, sim, f"http://{host}", router=router)
        elif kind == "loopback":
            server = sim.running()
            server.start()
            backend = ChampBackend(kind, sim, server.base_url, server=server)
        else:
            raise ValueError(kind)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()


@pytest.fixture
def champ_sim(make_champ_backend) -> ChampBackend:
    """The simulator in-process (httpx transport, fake clock) at ``http://champ-1.test``."""
    return make_champ_backend("inprocess")


@pytest.fixture
def champ_server(make_champ_backend) -> ChampBackend:
    """The simulator on a free loopback port (fake clock); ``.base_url``, ``.sim``."""
    return make_champ_backend("loopback")


@pytest.fixture(params=KINDS)
def champ_backend(request, make_champ_backend) -> ChampBackend:
    """The same test against the in-process simulator and a real loopback server."""
    return make_champ_backend(request.param)
