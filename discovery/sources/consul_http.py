"""A trio-native HTTP/1.1 client for py-consul: h11 over trio streams, TLS via trio.SSLStream.

Why not py-consul's own clients: ``consul.std`` uses ``requests`` (a blocking call in a
worker thread cannot be cancelled, so a 60 s blocking query would pin shutdown for a minute)
and ``consul.aio`` needs asyncio.  py-consul's API objects only *build* requests and hand them
to ``self.http.get(callback, path, params=..., headers=...)``, returning whatever that returns;
``consul.aio`` exploits this by returning coroutines, and so does :class:`TrioHTTPClient`.  So
``await consul.health.service("web", index=..., wait=...)`` is a plain trio await: cancelling
the caller closes the socket at once.

Theory of operation
-------------------
Connections are kept alive (HTTP/1.1, as Consul's Go ``net/http`` server allows).  A parked
blocking query amortises its connection's set-up, but under churn every watched service's
query returns often -- 1 % churn of 100k endpoints in 500 services is ~430 answers a second --
and a connection per answer cost a getaddrinfo (in a thread), a TCP connect and a close each
time, with ``https`` a whole TLS handshake.  So an answered request hands its connection to a
bounded pool of idle ones (:mod:`discovery.sources.consul_pool`: at most ``max_connections``,
none reused after ``idle_s`` unused, 20 s by default) and the next request takes it.  Only a
complete answer that allows reuse puts a connection back: not after ``Connection: close``,
any error, an oversize body, a timeout or a cancellation mid-request -- those close it.  The
price of a pool is stale sockets: the server may close an idle connection at any time.  A GET
on a reused connection that fails before any byte of the answer arrived is sent once more on
a fresh connection (reads are idempotent); writes never take an idle connection, so they are
never sent twice, and a fresh connection's failure is never retried.  ``close()`` closes
the idle ones.  Two :class:`trio.CapacityLimiter` bound concurrent requests
to ``max_connections`` (Consul limits connections per client IP, 200 by default): one for
parked blocking queries, a tenth reserved for quick reads so those never queue behind them.
With more watched services than blocking slots, watchers take turns (FIFO; the source then
shortens ``wait`` so that a turn stays near the configured one).  Every request runs under a
deadline: the ``wait`` it carries + Consul's jitter (``wait/16``) + a margin, or the plain
request timeout.  Response headers are bounded by h11, the body by ``max_body_bytes``.
A body of ``offload_bytes`` or more is decoded (py-consul's callback: ``json.loads``) in a
worker thread, one at a time (:class:`~discovery.offload.Offload`), so the event loop keeps
serving requests meanwhile. Failures come out typed: :class:`ConsulUnavailable` /
:class:`ConsulTimeout` for transport problems, :class:`ConsulResponseTooLarge` for oversize
bodies, and for an answer with status >= 400 (:func:`status_error`) one that names the status
and the request -- ``HTTP 404 from GET /v1/health/service/web: ...`` -- rather than whatever
py-consul's callbacks make of it (for a 404 on a read they return no data and then complain
about a "Missing index header", quoting an object's repr).
"""

from __future__ import annotations

import functools
import re
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import h11
import trio
from consul import base

from discovery.offload import Offload
from discovery.sources.consul_parse import (
    ConsulAclDenied,
    ConsulError,
    ConsulHttpError,
    ConsulMalformedResponse,
    ConsulResponseTooLarge,
    ConsulTimeout,
    ConsulUnavailable,
    request_deadline,
)
from discovery.sources.consul_pool import IDLE_S, IdlePool

OFFLOAD_BYTES = 32 * 1024
"""Bodies at least this long are decoded in a worker thread (:mod:`discovery.offload`): ~0.2 ms
of ``json.loads``; smaller ones cost less than the hand-over."""
_BODY_READ_SIZE = 65536  # bytes of a response body asked of the connection per read
_MAX_HEADER_BYTES = 64 * 1024
_GO_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)$")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

Callback = Callable[[base.Response], Any]
#: How much of an error body a message quotes (Consul's are one line: "ACL not found").
_ERROR_BODY_CHARS = 200


def status_error(code: int, method: str, path: str, body: str) -> ConsulError:
    """The typed error for an answer with status ``code`` >= 400 to ``method path``.

    5xx means Consul cannot answer now (:class:`ConsulUnavailable`, retried); 403 is the ACL
    token (:class:`ConsulAclDenied`, the token file is re-read); anything else is
    :class:`ConsulHttpError`.  The path is quoted without its query string.
    """
    text = " ".join(body.split())[:_ERROR_BODY_CHARS]
    message = f"HTTP {code} from {method} {path}" + (f": {text}" if text else "")
    if code == 403:
        return ConsulAclDenied(message)
    if code >= 500:
        return ConsulUnavailable(message)
    return ConsulHttpError(message)


class Headers(Mapping[str, str]):
    """Response headers with case-insensitive lookup (py-consul asks for ``X-Consul-Index``)."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._items: dict[str, str] = {}
        for name, value in raw:
            # Latin-1 never fails; header values are bytes on the wire.
            self._items[name.decode("latin-1").lower()] = value.decode("latin-1")

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def wait_seconds(params: list[tuple[str, Any]] | None) -> float | None:
    """The ``wait`` parameter of a blocking query in seconds (Go duration), or None."""
    for key, value in params or ():
        if key == "wait":
            match = _GO_DURATION.match(str(value))
            if match is None:
                return None
            return float(match.group(1)) * _UNIT_S[match.group(2)]
    return None


class TrioHTTPClient(base.HTTPClient):  # type: ignore[misc]
    """py-consul's HTTP interface on trio; every method returns an awaitable."""

    def __init__(
        self,
        host: str,
        port: int,
        scheme: str,
        *,
        ssl_context: ssl.SSLContext | None,
        extra_params: tuple[tuple[str, str], ...] = (),
        max_body_bytes: int = 64 * 1024 * 1024,
        max_connections: int = 100,
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 10.0,
        margin_s: float = 5.0,
        offload_bytes: int = OFFLOAD_BYTES,
        idle_s: float = IDLE_S,
    ) -> None:
        super().__init__(host, port, scheme, verify=ssl_context is not None, cert=None)
        if scheme == "https" and ssl_context is None:
            raise ValueError("https needs an ssl_context")
        self.ssl_context = ssl_context
        # Query parameters every request carries (``ns``, ``partition``): py-consul has no
        # arguments for them, and Consul's own Go client applies them per client the same way.
        self.extra_params = extra_params
        self.max_body_bytes = max_body_bytes
        # Parked blocking queries must not starve quick (non-blocking) ones, e.g. the first
        # read of a newly listed service: a tenth of the connections is kept for those.
        quick = max(1, max_connections // 10)
        self.limiter = trio.CapacityLimiter(max(1, max_connections - quick))
        self.quick_limiter = trio.CapacityLimiter(quick)
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.margin_s = margin_s
        # py-consul's callbacks decode the JSON body: a big one runs in a worker thread.
        self.offload_bytes = offload_bytes
        self.decoder = Offload()
        # Idle keep-alive connections (discovery.sources.consul_pool): never more than the
        # requests that may run at once, none reused after ``idle_s`` unused.
        self.pool: IdlePool[_Conn] = IdlePool(max_connections, idle_s)

    # -- py-consul's interface ----------------------------------------------------------------
    def get(
        self,
        callback: Callback,
        path: str,
        params: list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
        **_: Any,
    ) -> Awaitable[Any]:
        return self._call(callback, "GET", path, params, headers, b"")

    def put(
        self,
        callback: Callback,
        path: str,
        params: list[tuple[str, Any]] | None = None,
        data: str | bytes = "",
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> Awaitable[Any]:
        return self._call(callback, "PUT", path, params, headers, data)

    def delete(
        self,
        callback: Callback,
        path: str,
        params: list[tuple[str, Any]] | None = None,
        data: str | bytes = "",
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> Awaitable[Any]:
        return self._call(callback, "DELETE", path, params, headers, data)

    def post(
        self,
        callback: Callback,
        path: str,
        params: list[tuple[str, Any]] | None = None,
        data: str | bytes = "",
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> Awaitable[Any]:
        return self._call(callback, "POST", path, params, headers, data)

    def close(self) -> Awaitable[None]:
        """Close the idle keep-alive connections (requests in flight close theirs)."""
        return _close_all(self.pool.drain())

    # -- the request --------------------------------------------------------------------------
    def target(self, path: str, params: list[tuple[str, Any]] | None) -> str:
        query = [*(params or ()), *self.extra_params]
        target = urllib.parse.quote(path, safe="/:")
        return f"{target}?{urllib.parse.urlencode(query)}" if query else target

    def deadline_for(self, params: list[tuple[str, Any]] | None) -> float:
        wait = wait_seconds(params)
        if wait is None:
            return self.request_timeout_s
        return request_deadline(wait, self.margin_s)

    async def _call(
        self,
        callback: Callback,
        method: str,
        path: str,
        params: list[tuple[str, Any]] | None,
        headers: dict[str, str] | None,
        data: str | bytes,
    ) -> Any:
        body = data.encode() if isinstance(data, str) else data
        timeout = self.deadline_for(params)
        blocking = any(key == "index" for key, _ in params or ())
        async with self.limiter if blocking else self.quick_limiter:
            with trio.move_on_after(timeout) as scope:
                response = await self.request(method, self.target(path, params), headers, body)
        if scope.cancelled_caught:
            raise ConsulTimeout(f"{method} {path}: no complete answer within {timeout:.1f}s")
        if response.code >= 400:
            raise status_error(response.code, method, path, response.body)
        if len(response.body) < self.offload_bytes:
            return callback(response)
        return await self.decoder.run(functools.partial(callback, response))

    async def request(
        self, method: str, target: str, headers: Mapping[str, str] | None, body: bytes
    ) -> base.Response:
        """One HTTP/1.1 exchange on a kept-alive connection or a fresh one; typed errors only.

        Only a GET takes an idle connection: if the server closed that one while it sat idle
        (EOF or reset before any byte of the answer), the GET is sent once more on a fresh
        connection -- a read is idempotent.  Writes (PUT, POST, DELETE: registrations, check
        updates, KV compare-and-set) always open a fresh connection, so they never meet a
        stale one and are never sent twice; afterwards that connection may be kept for reads.
        """
        if method == "GET":
            conn = await self._take()
            if conn is not None:
                try:
                    return await self._exchange_on(conn, method, target, headers or {}, body)
                except _StaleConnection:
                    pass  # closed by the server while idle: once more on a fresh connection
        conn = await self._open()
        return await self._exchange_on(conn, method, target, headers or {}, body)

    async def _exchange_on(
        self, conn: _Conn, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> base.Response:
        """The exchange on ``conn``; then ``conn`` is kept for reuse if the answer allows, else
        closed (after any error, a timeout or a cancellation it is always closed)."""
        response: base.Response | None = None
        try:
            response = await self._exchange(conn, method, target, headers, body)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as err:
            raise ConsulUnavailable(f"{method} {self.base_uri}: {err!r}") from err
        except h11.ProtocolError as err:
            raise ConsulMalformedResponse(f"{method} {self.base_uri}: bad HTTP: {err}") from err
        finally:
            if response is not None and _next_cycle(conn.http):
                conn.reused = True
                await _close_all(self.pool.put(conn, trio.current_time()))
            else:
                await trio.aclose_forcefully(conn.stream)
        return response

    async def _take(self) -> _Conn | None:
        conn, stale = self.pool.take(trio.current_time())
        await _close_all(stale)
        return conn

    async def _open(self) -> _Conn:
        try:
            stream = await self._connect()
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as err:
            raise ConsulUnavailable(f"cannot connect to {self.base_uri}: {err}") from err
        http = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEADER_BYTES)
        return _Conn(stream, http)

    async def _connect(self) -> trio.abc.Stream:
        with trio.move_on_after(self.connect_timeout_s) as scope:
            tcp = await trio.open_tcp_stream(self.host, self.port)
        if scope.cancelled_caught:
            raise ConsulTimeout(f"connecting to {self.base_uri} took too long")
        if self.ssl_context is None:
            return tcp
        tls = trio.SSLStream(tcp, self.ssl_context, server_hostname=self.host)
        try:
            with trio.move_on_after(self.connect_timeout_s) as scope:
                await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        if scope.cancelled_caught:
            await trio.aclose_forcefully(tcp)
            raise ConsulTimeout(f"TLS handshake with {self.base_uri} took too long")
        return tls

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> base.Response:
        http, stream = conn.http, conn.stream
        wire_headers = [
            ("Host", f"{self.host}:{self.port}"),
            ("User-Agent", "isthmus-consul-source"),
            ("Accept", "application/json"),
            *headers.items(),
        ]
        if method != "GET" or body:
            wire_headers.append(("Content-Length", str(len(body))))
        out = http.send(h11.Request(method=method, target=target, headers=wire_headers))
        out += http.send(h11.Data(data=body)) if body else b""
        out += http.send(h11.EndOfMessage())
        try:
            await stream.send_all(out)
        except _TRANSPORT_ERRORS as err:
            if conn.reused:
                raise _StaleConnection from err
            raise

        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        eof = False
        received = 0
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as err:
                if eof:  # the agent hung up mid-answer: a transport failure, not bad data
                    raise ConsulUnavailable(f"{self.base_uri} closed the connection early") from err
                raise
            if event is h11.NEED_DATA:
                try:
                    data = bytes(await stream.receive_some(_BODY_READ_SIZE))
                except _TRANSPORT_ERRORS as err:
                    if conn.reused and not received:
                        raise _StaleConnection from err
                    raise
                if conn.reused and not received and not data:
                    raise _StaleConnection
                received += len(data)
                eof = not data
                http.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
                length = Headers(event.headers).get("content-length")
                if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                    raise ConsulResponseTooLarge(
                        f"Content-Length {length} exceeds the {self.max_body_bytes}-byte bound"
                    )
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body_bytes:
                    raise ConsulResponseTooLarge(
                        f"response body exceeds the {self.max_body_bytes}-byte bound"
                    )
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConsulUnavailable(f"{self.base_uri} closed the connection mid-response")
            # InformationalResponse (1xx) and PAUSED cannot happen here; loop on.
        assert response is not None
        try:
            text = b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConsulMalformedResponse(f"response body is not UTF-8: {err}") from err
        return base.Response(response.status_code, Headers(response.headers), text)


@dataclass(slots=True)
class _Conn:
    """A connection to the agent and its h11 state, kept across requests while reusable."""

    stream: trio.abc.Stream
    http: h11.Connection
    reused: bool = False  # it answered a request before: it may have gone stale since


class _StaleConnection(Exception):
    """A reused connection failed before any byte of the answer: the server closed it idle."""


_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError)


def _next_cycle(http: h11.Connection) -> bool:
    """Ready ``http`` for the next request if the exchange allows reuse; True if it does.

    Not when either side said ``Connection: close`` (h11 then leaves ``MUST_CLOSE``, not
    ``DONE``), nor when the server sent bytes after its answer or closed its side."""
    if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
        return False
    data, closed = http.trailing_data
    if data or closed:
        return False
    http.start_next_cycle()  # both sides back to IDLE: ready for the next request
    return True


async def _close_all(conns: Iterable[_Conn]) -> None:
    for conn in conns:
        await trio.aclose_forcefully(conn.stream)
