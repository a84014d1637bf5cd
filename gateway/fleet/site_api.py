"""The control site's fleet API: ``isthmus apply``/``diff``/``rollback`` over mTLS, by SVID.

Why a listener of its own: the admin listener is plain HTTP on loopback, for reading and for
local actions guarded against browsers (its CSRF rule); a write that changes every site's
config needs to know *who* writes.  So the authority serves a second, small listener
(``[fleet] api_address``/``api_port``) that takes TLS 1.3 connections with a client SVID only,
verifies it per trust domain with the same rules as a link, and then:

* ``GET /fleet/current`` -- the current document and version; ``GET /fleet/history`` -- the
  versions kept: any verified SVID of a trusted trust domain may read (what the plain admin
  ``/fleet`` view already shows, plus the document);
* ``POST /fleet/apply`` (``{"document": {...}, "expect": VERSION}``) and ``POST
  /fleet/rollback`` (``{"version": V, "expect": VERSION}``) -- only SPIFFE IDs listed in
  ``[fleet] writers``, compared exactly; anyone else gets 403 and a log line naming the ID.

A client without a certificate, or whose chain does not verify against the bundle of its own
trust domain, never gets past the handshake (logged at most once per cause per minute).  A
request from a browser (``Origin`` present) is refused, and POST bodies must be
``application/json``: a page cannot send one without a CORS preflight, which this API never
grants.  Bounded: one request per connection, its head <= 16 KiB, its body <= the document
bound (JSON-escaped), 10 s to receive it, 60 s to apply, at most 16 connections at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from typing import Any

import h11
import trio

from foundation.errors import IsthmusError
from foundation.log_limit import LogLimiter
from foundation.spiffe_id import SpiffeId
from gateway.fleet.api_tls import server_context, verified_peer_id
from gateway.fleet.authority import AuthorityError, Conflict
from gateway.fleet.document import FleetDocumentInvalid, diff, parse_document
from gateway.fleet.site_push import FleetAuthority
from gateway.fleet.site_wire import max_frame_bytes
from overlay.identity.rotation import Identity
from overlay.link.link import tls_rejection_cause
from overlay.link.listen import open_listeners
from overlay.link.tls_stream import TLSStream

log = logging.getLogger("isthmus.fleet")

MAX_HEAD_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 16
READS = frozenset(("/fleet/current", "/fleet/history"))
WRITES = frozenset(("/fleet/apply", "/fleet/rollback"))


def authorize(
    method: str, path: str, peer: SpiffeId, writers: tuple[SpiffeId, ...]
) -> tuple[int, str] | None:
    """Why the request is refused (status, message), or None when it may go on.  Pure."""
    if method == "GET" and path in READS:
        return None
    if method == "POST" and path in WRITES:
        if peer in writers:
            return None
        return 403, f"{peer} may not write the fleet document (not in [fleet] writers)"
    if path in READS or path in WRITES:
        return 405, f"{path} does not take {method}"
    return 404, f"no fleet API path {path}"


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return None


class FleetApi:
    """Serves the fleet API of ``authority`` (see the module docstring)."""

    def __init__(
        self,
        authority: FleetAuthority,
        identity: Identity,
        *,
        writers: tuple[SpiffeId, ...],
        max_document_bytes: int,
    ) -> None:
        self.authority = authority
        self.identity = identity
        self.writers = writers
        self.max_body_bytes = max_frame_bytes(max_document_bytes)
        self._ctx: tuple[int, Any] | None = None
        self._rejections = LogLimiter(window_s=60.0)

    def _context(self) -> Any:
        """The server context of the current identity (rebuilt after a rotation)."""
        generation = self.identity.generation
        if self._ctx is None or self._ctx[0] != generation:
            self._ctx = (generation, server_context(self.identity.state))
        return self._ctx[1]

    async def serve(
        self, *, host: str, port: int, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await open_listeners(port, host)
        limiter = trio.CapacityLimiter(MAX_CONNECTIONS)

        async def handle(tcp: trio.SocketStream) -> None:
            async with limiter:
                try:
                    await self._connection(tcp)
                finally:
                    await trio.aclose_forcefully(tcp)

        async with trio.open_nursery() as nursery:
            task_status.started(listeners[0].socket.getsockname()[1])
            await trio.serve_listeners(handle, listeners, handler_nursery=nursery)

    async def _connection(self, tcp: trio.SocketStream) -> None:
        state = self.identity.state
        stream = TLSStream(tcp, self._context(), server_side=True)
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await stream.do_handshake()
                peer = verified_peer_id(stream.ssl_object, state)
        except (trio.TooSlowError, trio.BrokenResourceError, IsthmusError) as exc:
            cause, _ = tls_rejection_cause(exc)
            self._rejections.log(
                log,
                logging.WARNING,
                cause,
                "fleet API: connection refused: %s",
                cause,
                now=trio.current_time(),
            )
            return
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError
        ):
            await self._exchange(stream, peer)

    async def _exchange(self, stream: trio.abc.Stream, peer: SpiffeId) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        request: h11.Request | None = None
        body = bytearray()
        too_big = False
        with trio.move_on_after(REQUEST_TIMEOUT_S) as scope:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(64 * 1024)
                    if not data:
                        return
                    conn.receive_data(bytes(data))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body_bytes:
                        too_big = True
                        break
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        if scope.cancelled_caught or request is None:
            return
        if too_big:
            status, answer = 413, {"error": f"the body exceeds {self.max_body_bytes} bytes"}
        else:
            status, answer = await self._answer(request, bytes(body), peer)
        payload = (json.dumps(answer, indent=2, sort_keys=True) + "\n").encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("cache-control", "no-store"),
            ("connection", "close"),
        ]
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        await stream.send_all(conn.send(h11.Data(data=payload)) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")

    async def _answer(self, request: h11.Request, body: bytes, peer: SpiffeId) -> tuple[int, Any]:
        method = request.method.decode("ascii", "replace")
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if _header(request, b"origin") is not None:
            return 403, {"error": "the fleet API refuses requests from browsers"}
        refused = authorize(method, path, peer, self.writers)
        if refused is not None:
            if refused[0] == 403:
                log.warning("fleet API: %s %s by %s refused: not a writer", method, path, peer)
            return refused[0], {"error": refused[1]}
        if method == "GET":
            return 200, await self._read(path)
        content_type = (_header(request, b"content-type") or "").split(";")[0].strip()
        if content_type != "application/json":
            return 415, {"error": "a fleet API write takes application/json"}
        try:
            data = json.loads(body)
        except ValueError as err:
            return 400, {"error": f"the body is not JSON: {err}"}
        if not isinstance(data, dict):
            return 400, {"error": "the body must be a JSON object"}
        try:
            with trio.fail_after(WRITE_TIMEOUT_S):
                return await self._write(path, data, peer)
        except trio.TooSlowError:
            return 504, {"error": f"the write did not finish in {WRITE_TIMEOUT_S:.0f}s"}

    async def _read(self, path: str) -> Any:
        if path == "/fleet/history":
            return {"versions": await self.authority.history()}
        doc = await self.authority.current()
        return {"version": doc.version, "document": json.loads(doc.canonical_json())}

    async def _write(self, path: str, data: dict[str, Any], peer: SpiffeId) -> tuple[int, Any]:
        expect = data.get("expect")
        if expect is not None and not isinstance(expect, str):
            return 400, {"error": "expect must be a version string or null"}
        try:
            if path == "/fleet/apply":
                doc = parse_document(data.get("document"))
            else:
                version = data.get("version")
                if not isinstance(version, str):
                    return 400, {"error": "version must be a string"}
                doc = await self.authority.load_version(version)
            old = await self.authority.write(doc, expect)
        except FleetDocumentInvalid as err:
            problems = [{"path": p or "<root>", "message": m} for p, m in err.problems]
            return 400, {"error": "invalid fleet document", "problems": problems}
        except Conflict as err:
            return 409, {"error": str(err)}
        except AuthorityError as err:
            return 400, {"error": str(err)}
        log.info("fleet API: %s by %s: version %s (was %s)", path, peer, doc.version, old.version)
        return 200, {
            "version": doc.version,
            "previous": old.version,
            "changes": [list(c) for c in diff(old, doc)],
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
