"""The Champ simulator over real HTTP: aiohttp's low-level server on its own event loop.

Fast enough not to be the bottleneck of the poller benchmark (thousands of
GET/s on one core), plus the webhook sender and the command-line options shared
by ``manage.py champ_simulator`` and ``python -m runs.simulator_server``.
No imports from the portal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from runs.simulator import (
    API_PREFIX,
    DEMO_TOKEN,
    ChampSimulator,
    Drop,
    FaultConfig,
    Hang,
    WebhookConfig,
    time_based_first_run_id,
)

logger = logging.getLogger("runs.simulator")
SHUTDOWN_TIMEOUT = 1.0
BACKLOG = 1024


def _drop(request: web.BaseRequest) -> web.StreamResponse:
    # abort() resets the socket: the client sees the connection end with no answer.
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)  # never delivered


def _make_handler(sim: ChampSimulator) -> Any:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path
        key = sim.begin(request.method, path)
        try:
            latency = sim.faults.latency_ms
            if latency and path.startswith(API_PREFIX):
                await asyncio.sleep(latency / 1000)
            body = await request.read() if request.body_exists else b""
            try:
                status, headers, payload = sim.handle(request.method, path, request.headers, body)
            except Hang:
                await asyncio.sleep(sim.faults.hang_seconds)
                return _drop(request)
            except Drop:
                return _drop(request)
            return web.Response(status=status, headers=headers, body=payload)
        finally:
            sim.end(key)

    return handler


async def _deliver(sim: ChampSimulator, session: aiohttp.ClientSession, payload: dict) -> None:
    hook = sim.webhook
    assert hook is not None
    headers = {"Content-Type": "application/json"}
    if hook.token:
        headers["Authorization"] = f"Bearer {hook.token}"
    body = json.dumps(payload).encode()
    outcome: int | str = "not sent"
    attempt = 0
    for attempt in range(1, hook.attempts + 1):
        try:
            async with session.post(
                hook.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                outcome = response.status
                if 200 <= response.status < 300:
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = type(exc).__name__
        if attempt < hook.attempts:
            await asyncio.sleep(hook.backoff * 2 ** (attempt - 1))
    run = payload["data"]["workflow_run"]
    sim.webhook_log.append(
        {"run_id": run["id"], "event": payload["event"], "attempts": attempt, "outcome": outcome}
    )
    logger.info("webhook %s for run %s: %s", payload["event"], run["id"], outcome)


async def _webhook_loop(sim: ChampSimulator) -> None:
    """Deliver each run's terminal event once (with retries) while the server runs."""
    assert sim.webhook is not None
    pending: set[asyncio.Task] = set()
    timeout = aiohttp.ClientTimeout(total=sim.webhook.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            for payload in sim.pop_due_webhooks():
                task = asyncio.create_task(_deliver(sim, session, payload))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(0.1)


async def _start(
    sim: ChampSimulator, sock: socket.socket, access_log: bool
) -> tuple[web.ServerRunner, list[asyncio.Task]]:
    server = web.Server(
        _make_handler(sim),
        handler_cancellation=True,  # a client that gives up frees its hanging handler
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
    )
    runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=BACKLOG).start()
    tasks = [asyncio.create_task(_webhook_loop(sim))] if sim.webhook else []
    return runner, tasks


async def _stop(runner: web.ServerRunner, tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class SimulatorServer:
    """The simulator on a loopback port, in a background thread with its own event loop.

    ``with SimulatorServer(sim) as server:`` (or ``sim.running()``) binds a
    free port when ``port`` is 0; ``server.base_url`` is what an organisation
    uses. ``start()`` (returns the base URL) / ``stop()`` do the same without ``with``.
    """

    def __init__(
        self, sim: ChampSimulator, host: str = "127.0.0.1", port: int = 0, *, access_log=False
    ) -> None:
        self.sim, self.host, self.port, self.access_log = sim, host, port, access_log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return _url(self.host, self.port)

    def start(self) -> str:
        """Bind, start serving in the background; return the base URL."""
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        ready, errors = threading.Event(), []
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready, errors), name="champ-simulator", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self.base_url

    def _run(self, sock: socket.socket, ready: threading.Event, errors: list) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main(sock, ready, errors))
        finally:
            self._loop.close()

    async def _main(self, sock: socket.socket, ready: threading.Event, errors: list) -> None:
        self._stopping = asyncio.Event()
        try:
            runner, tasks = await _start(self.sim, sock, self.access_log)
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            return
        ready.set()
        await self._stopping.wait()
        await _stop(runner, tasks)

    def stop(self) -> None:
        """Stop serving (hanging requests are cut) and join the thread."""
        if self._loop is not None and self._stopping is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(
    sim: ChampSimulator, host: str = "127.0.0.1", port: int = 8765, *, access_log: bool = False
) -> None:
    """Serve in the current thread until SIGINT or SIGTERM."""

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        sock = _bind(host, port)
        runner, tasks = await _start(sim, sock, access_log)
        logger.info("Champ simulator listening on %s", _url(host, sock.getsockname()[1]))
        await stopping.wait()
        await _stop(runner, tasks)

    asyncio.run(main())


# ------------------------------------------------------------------ options


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _bool(value: str | bool) -> bool:
    return (
        value if isinstance(value, bool) else value.strip().lower() in ("1", "true", "yes", "on")
    )


def add_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Add the simulator's options; each defaults to its ``CHAMP_SIM_*`` environment variable."""
    env = os.environ if environ is None else environ

    def option(flag: str, type_: Any, default: Any, help_: str) -> None:
        name = "CHAMP_SIM_" + flag[2:].upper().replace("-", "_")
        parser.add_argument(
            flag, type=type_, default=env.get(name, default), help=f"{help_} (env {name})"
        )

    def switch(flag: str, help_: str) -> None:
        name = "CHAMP_SIM_" + flag[2:].upper().replace("-", "_")
        parser.add_argument(
            flag,
            action="store_true",
            default=_bool(env.get(name, "")),
            help=f"{help_} (env {name})",
        )

    option("--host", str, "127.0.0.1", "address to listen on")
    option("--port", int, 8765, "port to listen on")
    option("--tokens", _csv, DEMO_TOKEN, "comma-separated API tokens accepted; others get 401")
    option("--time-scale", float, 1.0, "multiply every scripted duration (0.1 = 10x faster)")
    option("--latency-ms", float, 0, "added latency per API request, in milliseconds")
    option("--fail-rate", float, 0.0, "fraction of requests answered 500/503 (alternately)")
    option("--rate-limit-rate", float, 0.0, "fraction of requests answered 429 + Retry-After")
    option("--retry-after", float, 1.0, "Retry-After of 429/503 answers, in seconds")
    option("--retry-after-form", str, "alternate", "Retry-After as seconds, date or alternate")
    option("--timeout-rate", float, 0.0, "fraction of requests that hang (client times out)")
    option("--hang-seconds", float, 60.0, "how long a hanging request hangs")
    option("--malformed-rate", float, 0.0, "fraction of answers that are not a run object")
    option("--drop-rate", float, 0.0, "fraction of connections closed without an answer")
    option("--fault-methods", _csv, "GET", "methods the random faults apply to, e.g. GET,POST")
    switch("--hang-post", "every POST creates its run, then hangs")
    switch("--drop-post", "every POST creates its run, then drops the connection")
    option("--redirect-to", str, None, "answer every API request with a 302 to this URL")
    option("--seed", int, None, "seed of the fault RNG (deterministic faults)")
    option("--webhook-url", str, None, "POST workflow_run.completed/.failed events here")
    option("--webhook-token", str, "", "bearer token sent with webhook deliveries")
    option("--webhook-attempts", int, 5, "delivery attempts per event")
    switch("--access-log", "log every request (slower)")


def simulator_from_options(options: Mapping[str, Any]) -> ChampSimulator:
    """Build a simulator from parsed options; ValueError on a bad value."""
    faults = FaultConfig(
        latency_ms=options["latency_ms"],
        fail_rate=options["fail_rate"],
        rate_limit_rate=options["rate_limit_rate"],
        retry_after=options["retry_after"],
        retry_after_form=options["retry_after_form"],
        timeout_rate=options["timeout_rate"],
        hang_seconds=options["hang_seconds"],
        malformed_rate=options["malformed_rate"],
        drop_rate=options["drop_rate"],
        hang_post=options["hang_post"],
        drop_post=options["drop_post"],
        fault_methods=frozenset(options["fault_methods"]),
        redirect_to=options["redirect_to"],
        seed=options["seed"],
    )
    webhook = None
    if options["webhook_url"]:
        webhook = WebhookConfig(
            options["webhook_url"], options["webhook_token"], options["webhook_attempts"]
        )
    if not options["tokens"]:
        raise ValueError("at least one token is required")
    return ChampSimulator(
        tokens=options["tokens"],
        faults=faults,
        webhook=webhook,
        time_scale=options["time_scale"],
        first_run_id=time_based_first_run_id(),
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m runs.simulator_server --port 8765`` (no Django needed)."""
    parser = argparse.ArgumentParser(description="Built-in Champ simulator")
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        sim = simulator_from_options(options)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve_forever(sim, options["host"], options["port"], access_log=options["access_log"])


if __name__ == "__main__":
    main()
