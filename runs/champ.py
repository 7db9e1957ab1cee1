"""The Champ API client: the only module of the portal that speaks HTTP to Champ.

Contract: ``CHAMP_API.md``. Framework-free on purpose (no Django imports) so
that the poller can use it inside ``asyncio.run`` and tests can drive it with
the in-process simulator transport.

* :func:`trigger` (sync) starts a run; :func:`fetch_run` (sync) and
  :class:`AsyncChamp` (one shared pool for every organisation) poll one.
* Every failure is a :class:`ChampError` whose ``permanent`` flag says whether
  retrying can help.  :class:`ChampOutcomeUnknown` means the trigger may or
  may not have created a run: it is never retried, because Champ's API has no
  idempotency key.
* Redirects are never followed (a 3xx is :class:`ChampUnavailable`: it keeps a
  polled run open while someone fixes the organisation's base URL), and a
  run's ``url`` is only followed on the organisation's own API origin.
* The token never reaches logs or exception text: httpx masks the
  ``Authorization`` header in reprs, httpx/httpcore debug logs do not print
  headers, and any message that could echo it is scrubbed.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import re
import ssl
import time
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any, Literal

import httpx

logger = logging.getLogger(__name__)

USER_AGENT = "champ-portal/0.1"
API_PREFIX = "/api/external/v1/workflows"
STATUSES = ("pending", "in_progress", "completed", "failed", "suspended", "skipped")
TERMINAL_STATUSES = frozenset({"completed", "failed", "skipped"})

# Explicit timeouts (seconds). Triggering is one user click: fail within
# seconds. Polling waits on its own semaphore, so the pool timeout is long.
TIMEOUT = httpx.Timeout(connect=5.0, read=15.0, write=10.0, pool=10.0)
POLL_TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=5.0, pool=30.0)
POLL_DEADLINE = 30.0  # whole-request cap for AsyncChamp (aiohttp has no write timeout)
MAX_CONNECTIONS = 50  # AsyncChamp: concurrent requests == pooled connections
KEEPALIVE_EXPIRY = 30.0
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_MESSAGE_LENGTH = 300
MAX_RETRY_AFTER = 3600.0
TRIGGER_RETRY_DELAY = 0.5  # before the single retry of a trigger that was never sent

_TOKEN_RE = re.compile(r"[\x21-\x7e]+")  # what a bearer credential may contain

# httpx exceptions raised before any byte of the request reached Champ.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
# Raised while building/encoding the request: a bug or bad configuration.
_INVALID = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


@dataclass(frozen=True)
class WorkflowRun:
    """A ``workflow_run`` as Champ returned it (validated)."""

    id: int
    status: str
    input: dict
    output: Any
    url: str | None
    raw: dict

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class ChampError(Exception):
    """Any failure talking to Champ.

    ``permanent``: do not retry automatically (retrying cannot help, or, for
    :class:`ChampOutcomeUnknown`, might start a second run). ``retry_after``:
    seconds Champ asked us to wait (429/503), else None. ``not_sent``: the
    request never left (connection refused, connect/pool timeout): Champ did
    not receive it.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        permanent: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.permanent = permanent
        self.retry_after = retry_after
        self.not_sent = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code}, "
            f"permanent={self.permanent}, retry_after={self.retry_after})"
        )

    def __reduce__(self) -> tuple:
        # Keyword-only __init__ arguments defeat Exception's default pickling.
        return (_restore_error, (type(self), self.message, self.__dict__))


def _restore_error(cls: type[ChampError], message: str, state: dict) -> ChampError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ChampAuthError(ChampError):
    """401: the token is missing, invalid or revoked at Champ."""

    def __init__(self, message: str, *, status_code: int | None = 401) -> None:
        super().__init__(message, status_code=status_code, permanent=True)


class ChampNotFound(ChampError):
    """404: unknown or unpublished workflow, or unknown run."""

    def __init__(self, message: str, *, status_code: int | None = 404) -> None:
        super().__init__(message, status_code=status_code, permanent=True)


class ChampNotRunnable(ChampError):
    """422: the workflow cannot be run through the external API (e.g. ticketing)."""

    def __init__(self, message: str, *, status_code: int | None = 422) -> None:
        super().__init__(message, status_code=status_code, permanent=True)


class ChampUnavailable(ChampError):
    """Transient: 5xx, 429, 408, 3xx, timeouts, connection errors, a body that is not a run."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(
            message, status_code=status_code, permanent=False, retry_after=retry_after
        )


class ChampOutcomeUnknown(ChampError):
    """The trigger was sent but its answer was lost: the run may exist. Never retried."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message, status_code=status_code, permanent=True)


# --------------------------------------------------------------------- URLs


@functools.lru_cache(maxsize=1024)  # few organisations, parsed on every poll otherwise
def _base(base_url: str) -> httpx.URL:
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ChampError(f"invalid Champ API base URL: {exc}", permanent=True) from None
    if url.scheme not in ("http", "https") or not url.host or url.userinfo:
        raise ChampError(
            "the Champ API base URL must be http(s)://host[:port][/path]", permanent=True
        )
    if url.query or url.fragment:
        raise ChampError(
            "the Champ API base URL must not have a query or fragment", permanent=True
        )
    return url


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer")
    return value


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme))


def runs_url(base_url: str, workflow_id: int) -> str:
    """``{base}/api/external/v1/workflows/{workflow_id}/runs`` (the trigger URL)."""
    _positive_int("workflow_id", workflow_id)
    return f"{str(_base(base_url)).rstrip('/')}{API_PREFIX}/{workflow_id}/runs"


def run_url(base_url: str, workflow_id: int, run_id: int) -> str:
    """The documented poll URL of one run, built from the base URL."""
    return f"{runs_url(base_url, workflow_id)}/{_positive_int('run_id', run_id)}"


def poll_url(base_url: str, workflow_id: int, run_id: int, url: str | None) -> str:
    """Champ's ``url`` if it is on the base URL's origin and under its path, else the built URL.

    Guards against SSRF and token leaks: the bearer token is only ever sent to
    the organisation's configured API origin.
    """
    return str(_poll_target(base_url, workflow_id, run_id, url))


@functools.lru_cache(maxsize=16384)  # the poller asks again for the same run every second
def _poll_target(base_url: str, workflow_id: int, run_id: int, url: str | None) -> httpx.URL:
    built = httpx.URL(run_url(base_url, workflow_id, run_id))
    if not url:
        return built
    base = _base(base_url)
    try:
        candidate = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        candidate = None
    prefix = base.path.rstrip("/") + "/"
    if (
        candidate is None
        or candidate.userinfo
        or _origin(candidate) != _origin(base)
        or not candidate.path.startswith(prefix)
        or ".." in candidate.path.split("/")
    ):
        logger.info("Ignoring Champ run url outside the API origin %s for run %s", base, run_id)
        return built
    return candidate.copy_with(fragment=None)


# ------------------------------------------------------------ interpretation


def _mask(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "api_…")
    return text


# Control characters (NUL among them) and unpaired surrogates: valid in a JSON
# string, but not in a database text column or a UTF-8 page.
_UNPRINTABLE = re.compile("[\x00-\x08\x0e-\x1f\x7f\ud800-\udfff]")


def _clean(text: str, token: str | None) -> str:
    text = _UNPRINTABLE.sub("\ufffd", _mask(text, token))
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > MAX_MESSAGE_LENGTH:
        text = text[: MAX_MESSAGE_LENGTH - 1] + "…"
    return text


def _headers(token: str) -> dict[str, str]:
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        # h11 would quote an illegal header value (the token) in its exception.
        raise ChampAuthError(
            "the API token is empty or has characters not allowed in an HTTP header",
            status_code=None,
        )
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" dates parse naive; HTTP-dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _error_field(body: bytes | None, token: str) -> str | None:
    try:
        data = json.loads(body or b"")
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"].strip():
        return _clean(data["error"], token)
    return None


def _parse_run(data: Any) -> WorkflowRun:
    """Validate a ``workflow_run`` body; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    run_id, status, run_input = data.get("id"), data.get("status"), data.get("input")
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise ValueError("id is not an integer")
    if status not in STATUSES:
        raise ValueError("status is not a Champ status")
    if not isinstance(run_input, dict):
        raise ValueError("input is not an object")
    if "output" not in data:
        raise ValueError("output is missing")
    url = data.get("url")
    if url is not None and not isinstance(url, str):
        raise ValueError("url is not a string")
    return WorkflowRun(run_id, status, run_input, data["output"], url, data)


Operation = Literal["trigger", "fetch"]


def _interpret(
    status: int,
    headers: httpx.Headers,
    body: bytes | None,
    *,
    token: str,
    operation: Operation,
    expected_id: int | None = None,
) -> WorkflowRun:
    """Turn an HTTP answer into a run or a typed error. ``body`` None: too large."""
    if 200 <= status < 300:
        try:
            if body is None:
                raise ValueError(f"body larger than {MAX_BODY_BYTES} bytes")
            run = _parse_run(json.loads(body))
            if expected_id is not None and run.id != expected_id:
                raise ValueError(f"id {run.id} is not the run requested")
        except (ValueError, RecursionError) as exc:
            reason = f"Champ answered HTTP {status} with a body that is not a workflow run ({exc})"
            if operation == "trigger":  # a 2xx: the run probably exists, id unknown
                raise ChampOutcomeUnknown(
                    reason + "; the run may have been created", status_code=status
                ) from None
            raise ChampUnavailable(reason, status_code=status) from None
        return run
    message = _error_field(body, token) or f"Champ answered HTTP {status}"
    retry_after = parse_retry_after(headers.get("retry-after"))
    if status == 303 and operation == "trigger":  # "See Other": the POST was processed
        raise ChampOutcomeUnknown(
            "Champ answered the run request with a redirect (HTTP 303), which is not "
            "followed; the run may or may not have been created",
            status_code=status,
        )
    if 300 <= status < 400:
        raise ChampUnavailable(
            f"Champ answered with a redirect (HTTP {status}), which is not followed: "
            "check the organisation's API base URL",
            status_code=status,
        )
    if status == 401:
        raise ChampAuthError(message)
    if status == 404:
        raise ChampNotFound(message)
    if status == 422:
        raise ChampNotRunnable(message)
    if status in (408, 429, 503) or (status >= 500 and operation == "fetch"):
        raise ChampUnavailable(message, status_code=status, retry_after=retry_after)
    if status >= 500:
        # 500/502/504 to a trigger: Champ may have created the run before failing.
        raise ChampOutcomeUnknown(
            f"{message}; the run may or may not have been created", status_code=status
        )
    raise ChampError(message, status_code=status, permanent=True)


def _transport_error(exc: Exception, *, token: str, operation: Operation) -> ChampError:
    detail = _clean(f"{type(exc).__name__}: {exc}".rstrip(": "), token)
    if isinstance(exc, _INVALID):
        return ChampError(f"invalid request to Champ: {detail}", permanent=True)
    if isinstance(exc, _NOT_SENT):
        error = ChampUnavailable(f"could not reach Champ: {detail}")
        error.not_sent = True
        return error
    if operation == "trigger":
        return ChampOutcomeUnknown(
            f"the run request was sent but no answer came back ({detail}); the run may or "
            "may not have been created at Champ: check there before starting it again"
        )
    return ChampUnavailable(f"no answer from Champ: {detail}")


def _json_body(run_input: dict | None) -> bytes:
    if run_input is None:
        return b"{}"  # `input` omitted: the workflow takes none
    if not isinstance(run_input, dict):
        raise ValueError("input must be a JSON object (a dict)")
    try:
        return json.dumps({"input": run_input}, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"input is not JSON-serialisable: {exc}") from None


# ----------------------------------------------------------------- sync API


@functools.cache  # loading the CA bundle costs ~40 ms; a context is safe to share
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


class _NoCookies(CookieJar):
    """One pool serves many organisations: never keep or send a cookie (and skip the cost)."""

    def add_cookie_header(self, request: Any) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


def _no_cookies() -> CookieJar:
    return _NoCookies()


def make_client(
    *, timeout: httpx.Timeout = TIMEOUT, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """A sync client configured for Champ (timeouts, no redirects, no cookies, user agent)."""
    return httpx.Client(
        timeout=timeout,
        transport=transport,
        verify=_ssl_context(),
        follow_redirects=False,
        cookies=_no_cookies(),
        headers={"User-Agent": USER_AGENT},
    )


def _read_capped(chunks: Any) -> bytes | None:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _send(
    client: httpx.Client,
    method: str,
    url: str | httpx.URL,
    *,
    token: str,
    content: bytes | None,
    operation: Operation,
    expected_id: int | None = None,
) -> WorkflowRun:
    headers = _headers(token)
    if content is not None:
        headers["Content-Type"] = "application/json"
    started = time.monotonic()
    try:
        request = client.build_request(method, url, headers=headers, content=content)
        response = client.send(request, stream=True, follow_redirects=False)
        try:
            body = _read_capped(response.iter_bytes())
        finally:
            response.close()
    except httpx.HTTPError as exc:
        raise _transport_error(exc, token=token, operation=operation) from exc
    logger.debug(
        "Champ %s %s -> %s in %.0f ms",
        method,
        url,
        response.status_code,
        (time.monotonic() - started) * 1000,
    )
    return _interpret(
        response.status_code,
        response.headers,
        body,
        token=token,
        operation=operation,
        expected_id=expected_id,
    )


def trigger(
    *,
    base_url: str,
    token: str,
    workflow_id: int,
    input: dict | None = None,
    client: httpx.Client | None = None,
) -> WorkflowRun:
    """Start a run: POST ``{base}/api/external/v1/workflows/{id}/runs``; return the new run.

    A failure before the request was sent (connect error/timeout, pool timeout)
    is retried once; anything that may have reached Champ raises
    :class:`ChampOutcomeUnknown` and is never retried. Without ``client`` a
    fresh connection is used so that a stale keep-alive socket cannot turn into
    a spurious "unknown".
    """
    content = _json_body(input)  # ValueError before anything is sent
    url = runs_url(base_url, workflow_id)
    own = client is None
    client = make_client() if own else client
    try:
        for attempt in (1, 2):
            try:
                return _send(
                    client, "POST", url, token=token, content=content, operation="trigger"
                )
            except ChampUnavailable as exc:
                if not exc.not_sent or attempt == 2:
                    raise
                logger.info("Champ trigger not sent (%s); retrying once", exc.message)
                time.sleep(TRIGGER_RETRY_DELAY)
        raise AssertionError("unreachable")
    finally:
        if own:
            client.close()


def fetch_run(
    *,
    base_url: str,
    token: str,
    workflow_id: int,
    run_id: int,
    url: str | None = None,
    client: httpx.Client | None = None,
) -> WorkflowRun:
    """GET one run (Champ's ``url`` when on the API origin, else the built URL)."""
    target = _poll_target(base_url, workflow_id, run_id, url)
    own = client is None
    client = make_client() if own else client
    try:
        return _send(
            client,
            "GET",
            target,
            token=token,
            content=None,
            operation="fetch",
            expected_id=run_id,
        )
    finally:
        if own:
            client.close()


# ---------------------------------------------------------------- async API


def aiohttp_transport(*, max_connections: int = MAX_CONNECTIONS) -> httpx.AsyncBaseTransport:
    """httpx's API over aiohttp's connection pool (about 5x httpx's own on loopback)."""
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    ssl_context = _ssl_context()

    def session() -> aiohttp.ClientSession:  # created lazily, inside the running loop
        connector = aiohttp.TCPConnector(
            limit=max_connections, keepalive_timeout=KEEPALIVE_EXPIRY, ssl=ssl_context
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return AiohttpTransport(client=session)


class AsyncChamp:
    """Async Champ client for the poller: one pool shared by every organisation/token.

    ``async with AsyncChamp() as champ: run = await champ.fetch_run(...)``.
    Concurrency is bounded by ``max_connections`` (callers may gather many
    fetches at once; extras wait their turn without a pool timeout). Pass
    ``transport`` to use e.g. the in-process simulator, ``use_aiohttp=False``
    for httpx's own pool. There is deliberately no async ``trigger``: the
    aiohttp transport reports a dropped connection as ``ConnectTimeout``,
    which would make a sent trigger look unsent.
    """

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        timeout: httpx.Timeout = POLL_TIMEOUT,
        deadline: float = POLL_DEADLINE,
        transport: httpx.AsyncBaseTransport | None = None,
        use_aiohttp: bool = True,
    ) -> None:
        self._max = max_connections
        self._timeout = timeout
        self._deadline = deadline
        self._transport = transport
        self._use_aiohttp = use_aiohttp
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

    async def __aenter__(self) -> AsyncChamp:
        transport = self._transport
        if transport is None:
            limits = httpx.Limits(
                max_connections=self._max,
                max_keepalive_connections=self._max,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
            transport = (
                aiohttp_transport(max_connections=self._max)
                if self._use_aiohttp
                else httpx.AsyncHTTPTransport(limits=limits, verify=_ssl_context())
            )
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=self._timeout,
            follow_redirects=False,
            cookies=_no_cookies(),
            headers={"User-Agent": USER_AGENT},
        )
        self._semaphore = asyncio.Semaphore(self._max)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool (done by ``async with``)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch_run(
        self,
        *,
        base_url: str,
        token: str,
        workflow_id: int,
        run_id: int,
        url: str | None = None,
    ) -> WorkflowRun:
        """GET one run; same rules and errors as :func:`fetch_run`."""
        if self._client is None or self._semaphore is None:
            raise RuntimeError("use AsyncChamp as `async with AsyncChamp() as champ:`")
        target = _poll_target(base_url, workflow_id, run_id, url)
        headers = _headers(token)
        async with self._semaphore:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._deadline):
                    request = self._client.build_request("GET", target, headers=headers)
                    response = await self._client.send(
                        request, stream=True, follow_redirects=False
                    )
                    try:
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > MAX_BODY_BYTES:
                                break
                    finally:
                        await response.aclose()
            except httpx.HTTPError as exc:
                raise _transport_error(exc, token=token, operation="fetch") from exc
            except TimeoutError:
                raise ChampUnavailable(
                    f"no complete answer from Champ within {self._deadline:g} s"
                ) from None
        logger.debug(
            "Champ GET %s -> %s in %.0f ms",
            target,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return _interpret(
            response.status_code,
            response.headers,
            bytes(body) if len(body) <= MAX_BODY_BYTES else None,
            token=token,
            operation="fetch",
            expected_id=run_id,
        )
