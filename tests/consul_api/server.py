"""A small Consul-HTTP-API-compatible server for tests (h11 over trio).  TEST-ONLY.

No Consul binary can run on these machines, so the Consul source is tested against this server,
which follows HashiCorp's HTTP API documentation for the parts the source uses:

* ``GET /v1/catalog/services`` -> ``{"name": ["tag", ...]}``;
  ``GET /v1/health/service/:service`` -> ``[{"Node": {...}, "Service": {...}, "Checks": [...]}]``
  with the documented field names; query parameters ``index``, ``wait`` (Go duration, default
  5m, max 10m), ``dc``, ``tag`` (repeatable), ``node-meta`` (repeatable ``key:value``),
  ``passing``, ``ns`` and ``partition`` (Enterprise; ``default`` unless given), ``near`` (ignored);
* every read carries ``X-Consul-Index`` (never 0), ``X-Consul-KnownLeader: true`` and
  ``X-Consul-LastContact: 0``; a blocking read (``index`` > 0) returns as soon as the index of
  what it reads moves past ``index``, or after ``wait`` plus a random jitter of up to
  ``wait/16``; a snapshot restore (:meth:`ConsulApiServer.restore_index`) aborts blocking
  reads, as Consul's state store does;
* ``PUT /v1/catalog/register`` and ``/v1/catalog/deregister`` (documented bodies, answer
  ``true``); ``PUT /v1/agent/service/register`` and ``/v1/agent/service/deregister/:id`` on the
  agent's own node (which also runs the ``consul`` service and a passing ``serfHealth`` check);
  ``PUT /v1/agent/check/{pass,warn,fail,update}/:check_id``, TTL checks that turn critical
  (``TTL expired``) when not updated in time (:mod:`tests.consul_api.ttl`); an update that
  changes neither status nor output changes nothing in the catalog (as the agent syncs only
  changes); ``GET /v1/status/leader``;
* the KV store, ``GET``/``PUT``/``DELETE /v1/kv/:key`` with ``recurse``, ``keys``,
  ``separator``, ``raw``, ``cas``, ``flags`` and blocking reads (:mod:`tests.consul_api.kv`);
* ACLs (``acl_token`` set): the token comes from ``X-Consul-Token``, ``Authorization: Bearer``
  or ``?token=``.  An unknown token -> 403 ``ACL not found``.  No token means the anonymous
  token, which (default policy deny) sees *filtered* reads -- an empty result with
  ``X-Consul-Results-Filtered-By-ACLs: true`` -- and gets 403 ``Permission denied`` on writes.

Deviations: ``filter`` expressions answer 400 (not implemented); ``dc`` other than the
server's answers 500 ``No path to datacenter``; health checks never run -- their status is
what was registered (``critical`` by default, as Consul) or set via ``/v1/agent/check/*``.

Test-only controls, as methods (in-process) and as ``PUT /_test/...`` paths (subprocess):
``fail500`` (body ``true``/``false``: every ``/v1`` request answers 500, blocked ones at once),
``inject`` (body ``{"path": prefix, "body": text, "status": 200}``: raw answers for reads under
``path``), ``clear``, ``restore-index`` (body: an integer).  Run as
``python -m tests.consul_api.server --host 127.0.0.1 --port N [--acl-token T]``; it prints
``listening on http://HOST:PORT`` once ready.  Never import this from product code.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import h11
import trio
import trio.lowlevel

from tests.consul_api.kv import KvApi
from tests.consul_api.store import STATUSES, BadRequest, Store
from tests.consul_api.ttl import TtlChecks

_MAX_BODY = 1024 * 1024
_TEXT = [("Content-Type", "text/plain; charset=utf-8")]
_GO_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)$")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# Go's encoding/json matches struct field names case-insensitively (py-consul sends "name",
# "port", ...); map-typed fields (Meta, NodeMeta, TaggedAddresses) keep their keys verbatim.
_FIELDS = {
    name.lower(): name
    for name in [
        *("Node", "Address", "ID", "Datacenter", "TaggedAddresses", "NodeMeta", "Service"),
        *("Check", "Checks", "SkipNodeUpdate", "Tags", "Meta", "Port", "Weights", "Passing"),
        *("Warning", "Namespace", "Partition", "EnableTagOverride", "Kind", "Name", "CheckID"),
        *("Status", "Notes", "Output", "ServiceID", "Type", "TTL", "HTTP", "TCP", "Interval"),
        "Timeout",
    ]
}
_MAPS = {"Meta", "NodeMeta", "TaggedAddresses"}


def _canonical(value: Any) -> Any:
    """A decoded JSON request body with struct field names in Consul's canonical case."""
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for key, item in value.items():
        name = _FIELDS.get(key.lower(), key) if isinstance(key, str) else key
        result[name] = item if name in _MAPS else _canonical(item)
    return result


class _Reply(Exception):
    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body


class _KvAnswer(Exception):
    """A whole KV answer (status, headers, body): a 404 there still carries X-Consul-Index."""

    def __init__(self, answer: tuple[int, list[tuple[str, str]], bytes]) -> None:
        self.answer = answer


class ConsulApiServer:
    def __init__(
        self,
        *,
        datacenter: str = "dc1",
        node_name: str = "node-1",
        node_address: str = "127.0.0.1",
        acl_token: str | None = None,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.datacenter = datacenter
        self.ssl_context = ssl_context
        self.node_name = node_name
        self.node_address = node_address
        self.acl_token = acl_token
        self.store = Store(datacenter)
        self.random = random.Random(seed)
        self.failing = False
        self.injections: list[tuple[str, int, str]] = []
        self.changed = trio.Event()
        self.abandoned = 0
        self.requests: dict[str, int] = {}
        # (path, index) of the last reads, to check clients' blocking behaviour.
        self.reads: collections.deque[tuple[str, int]] = collections.deque(maxlen=1000)
        # Blocking reads waiting right now: tests wait for their clients to be parked by
        # watching this, not by sleeping for a guessed while.
        self.parked = 0
        # Connections accepted so far (test-only, Consul has no such figure): tests of the
        # client's keep-alive count how many connections their requests took.
        self.accepted = 0
        self.host, self.port = "127.0.0.1", 0
        self._nursery: trio.Nursery | None = None
        self._listen_scope: trio.CancelScope | None = None
        self.kv = KvApi(self)  # /v1/kv/ (tests/consul_api/kv.py)
        self.ttl_checks = TtlChecks()  # the agent's TTL checks (tests/consul_api/ttl.py)
        self._ttl_changed = trio.Event()
        self.store.register(
            {
                "Node": node_name,
                "Address": node_address,
                "Service": {"ID": "consul", "Service": "consul", "Port": 8300},
                "Check": {
                    "CheckID": "serfHealth",
                    "Name": "Serf Health Status",
                    "Status": "passing",
                },
            }
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    # -- in-process controls ------------------------------------------------------------------
    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def register(self, body: dict[str, Any]) -> None:
        """``PUT /v1/catalog/register`` in-process."""
        self.store.register(body)
        self._wake()

    def register_service(
        self,
        name: str,
        port: int,
        *,
        id: str | None = None,
        node: str = "node-1",
        address: str = "127.0.0.1",
        service_address: str = "",
        tags: tuple[str, ...] = (),
        meta: dict[str, str] | None = None,
        node_meta: dict[str, str] | None = None,
        status: str = "passing",
    ) -> None:
        """Register one instance with one service check of ``status`` on ``node``."""
        service_id = id or f"{name}-{port}"
        body: dict[str, Any] = {
            "Node": node,
            "Address": address,
            "Service": {
                "ID": service_id,
                "Service": name,
                "Tags": list(tags),
                "Address": service_address,
                "Port": port,
                "Meta": meta or {},
            },
            "Check": {
                "CheckID": f"service:{service_id}",
                "Name": f"Service '{name}' check",
                "Status": status,
                "ServiceID": service_id,
            },
        }
        if node_meta is not None:
            body["NodeMeta"] = node_meta
        self.register(body)

    def deregister(self, body: dict[str, Any]) -> None:
        self.store.deregister(body)
        self._wake()

    def set_check(self, node: str, check_id: str, status: str) -> None:
        self.store.set_check_status(node, check_id, status)
        self._wake()

    def fail_with_500(self, on: bool = True) -> None:
        self.failing = on
        self._wake()

    def inject(self, path: str, body: str, status: int = 200) -> None:
        self.injections.append((path, status, body))
        self._wake()

    def clear_injections(self) -> None:
        self.injections.clear()
        self._wake()

    def restore_index(self, index: int) -> None:
        self.store.restore(index)
        self.abandoned += 1
        self._wake()

    # -- lifetime -----------------------------------------------------------------------------
    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._listen, host, port)
            nursery.start_soon(self._expire_ttls)
            task_status.started()
            await trio.sleep_forever()  # keeps the nursery open for come_back()

    async def _expire_ttls(self) -> None:
        """Set each TTL check whose TTL ran out without an update to critical."""
        while True:
            deadline = self.ttl_checks.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 60):
                await self._ttl_changed.wait()
            self._ttl_changed = trio.Event()
            for check_id in self.ttl_checks.expired(trio.current_time()):
                self.store.set_check_status(self.node_name, check_id, "critical", "TTL expired")
                self._wake()

    def _ttl_update(self, check_id: str, status: str, output: str) -> bool:
        """An agent check update: re-arm its TTL; the catalog changes (and blocking reads
        wake) only when the status or output did, as the agent syncs only changes."""
        check = self.store.checks.get((self.node_name, check_id))
        if check is None:
            return False
        self.ttl_checks.touch(check_id, trio.current_time())
        self._ttl_changed.set()
        if (check.status, check.output) != (status, output):
            self.store.set_check_status(self.node_name, check_id, status, output)
            self._wake()
        return True

    async def _listen(
        self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self._listen_scope = scope
            tcp = await trio.open_tcp_listeners(port, host=host)
            self.host, self.port = host, tcp[0].socket.getsockname()[1]
            listeners: list[trio.abc.Listener[Any]] = list(tcp)
            if self.ssl_context is not None:
                listeners = [
                    trio.SSLListener(listener, self.ssl_context, https_compatible=True)
                    for listener in tcp
                ]
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started()

    async def go_away(self) -> None:
        """Stop listening and drop every connection (blocked queries die mid-flight)."""
        if self._listen_scope is not None:
            self._listen_scope.cancel()
            self._listen_scope = None
        await trio.lowlevel.checkpoint()

    async def come_back(self) -> None:
        """Listen again on the same port."""
        assert self._nursery is not None
        await self._nursery.start(self._listen, self.host, self.port)

    # -- HTTP ---------------------------------------------------------------------------------
    async def _handle(self, stream: trio.abc.Stream) -> None:
        self.accepted += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await _read_request(conn, stream)
                if request is None:
                    return
                status, headers, payload = await self._respond(request, body)
                out = conn.send(
                    h11.Response(
                        status_code=status,
                        reason=HTTPStatus(status).phrase.encode(),
                        headers=[*headers, ("Content-Length", str(len(payload)))],
                    )
                )
                out += conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (
            h11.ProtocolError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
            ssl.SSLError,
        ):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _respond(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        url = urllib.parse.urlsplit(request.target.decode("latin-1"))
        query = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        method = request.method.decode()
        path = urllib.parse.unquote(url.path)
        self.requests[path] = self.requests.get(path, 0) + 1
        headers = [("Content-Type", "application/json")]
        try:
            if path.startswith("/_test/"):
                result = self._test_control(path, body)
            else:
                token = _token(request, query)
                result = await self._api(method, path, query, body, token, headers)
        except _Reply as reply:
            return reply.status, _TEXT, reply.body.encode()
        except _KvAnswer as kv:
            return kv.answer
        except BadRequest as err:
            return 400, _TEXT, str(err).encode()
        return 200, headers, result.encode()

    def _test_control(self, path: str, body: bytes) -> str:
        text = body.decode() if body else ""
        if path == "/_test/fail500":
            self.fail_with_500(json.loads(text or "true"))
        elif path == "/_test/inject":
            spec = json.loads(text)
            self.inject(spec["path"], spec["body"], int(spec.get("status", 200)))
        elif path == "/_test/clear":
            self.fail_with_500(False)
            self.clear_injections()
        elif path == "/_test/restore-index":
            self.restore_index(int(text))
        else:
            raise _Reply(404, "unknown test control")
        return "true"

    def _acl(self, token: str | None, write: bool) -> bool:
        """True if the caller may see everything; False if reads must be filtered."""
        if self.acl_token is None or token == self.acl_token:
            return True
        if token:
            raise _Reply(403, "ACL not found")
        if write:
            raise _Reply(403, "Permission denied: anonymous token lacks permission")
        return False

    async def _api(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: bytes,
        token: str | None,
        headers: list[tuple[str, str]],
    ) -> str:
        if self.failing and path.startswith("/v1/"):
            raise _Reply(500, "rpc error making call: No cluster leader")
        params = dict(query)
        if params.get("dc") not in (None, "", self.datacenter):
            raise _Reply(500, "No path to datacenter")
        if "filter" in params:
            raise _Reply(400, "filter expressions are not supported by this test server")
        if path.startswith("/v1/kv/"):
            full_view = self._acl(token, write=method != "GET")
            raise _KvAnswer(await self.kv.respond(method, path[7:], params, body, full_view))
        if method == "GET" and path == "/v1/status/leader":
            return json.dumps(f"{self.node_address}:8300")
        if method == "GET" and path == "/v1/catalog/services":
            return await self._read(path, params, query, token, headers, None)
        if method == "GET" and path.startswith("/v1/health/service/"):
            name = path.removeprefix("/v1/health/service/")
            return await self._read(path, params, query, token, headers, name)
        if method != "PUT":
            raise _Reply(405, "method not allowed")
        self._acl(token, write=True)
        return self._write(path, body)

    def _write(self, path: str, body: bytes) -> str:
        try:
            data = _canonical(json.loads(body)) if body else {}
        except ValueError as err:
            raise BadRequest(f"Request decode failed: {err}") from err
        if path == "/v1/catalog/register":
            self.register(data)
            return "true"
        if path == "/v1/catalog/deregister":
            self.deregister(data)
            return "true"
        if path == "/v1/agent/service/register":
            agent_body, ttls = self._agent_body(data), self._ttls(data)
            self.register(agent_body)
            for check, ttl in zip(agent_body["Checks"], ttls, strict=True):
                if ttl is not None:
                    self.ttl_checks.arm(check["CheckID"], ttl, trio.current_time())
                    self._ttl_changed.set()
            return ""
        if path.startswith("/v1/agent/service/deregister/"):
            service_id = path.removeprefix("/v1/agent/service/deregister/")
            if (self.node_name, service_id) not in self.store.services:
                raise _Reply(404, f'Unknown service ID "{service_id}"')
            for (node, check_id), check in list(self.store.checks.items()):
                if node == self.node_name and check.service_id == service_id:
                    self.ttl_checks.drop(check_id)
            self.deregister({"Node": self.node_name, "ServiceID": service_id})
            return ""
        match = re.fullmatch(r"/v1/agent/check/(pass|warn|fail|update)/(.+)", path)
        if match:
            verb, check_id = match.groups()
            status = {"pass": "passing", "warn": "warning", "fail": "critical"}.get(verb, "")
            output = ""
            if verb == "update":  # body {"Status": ..., "Output": ...}
                if not isinstance(data, dict) or data.get("Status") not in STATUSES[:3]:
                    raise BadRequest("Status must be passing, warning or critical")
                status, output = str(data["Status"]), str(data.get("Output") or "")
            if not self._ttl_update(check_id, status, output):
                raise _Reply(404, f'Unknown check ID "{check_id}"')
            return ""
        raise _Reply(404, "404 page not found")

    def _ttls(self, data: dict[str, Any]) -> list[float | None]:
        """Each registered check's ``TTL`` in seconds (None: not a TTL check), in the order
        :meth:`_agent_body` lists the checks."""
        checks = list(data.get("Checks") or [])
        if data.get("Check"):
            checks.insert(0, data["Check"])
        out: list[float | None] = []
        for check in checks:
            ttl = check.get("TTL")
            match = _GO_DURATION.match(str(ttl)) if ttl else None
            if ttl and match is None:
                raise BadRequest(f"Invalid TTL: {ttl!r}")
            out.append(None if match is None else float(match.group(1)) * _UNIT_S[match.group(2)])
        return out

    def _agent_body(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("Name"), str):
            raise BadRequest("Missing service name")
        service_id = str(data.get("ID") or data["Name"])
        checks = list(data.get("Checks") or [])
        if data.get("Check"):
            checks.insert(0, data["Check"])
        catalog_checks = []
        for i, check in enumerate(checks):
            status = str(check.get("Status") or "critical")
            if status not in STATUSES:
                raise BadRequest(f"Invalid check status: {status!r}")
            suffix = f":{i + 1}" if len(checks) > 1 else ""
            catalog_checks.append(
                {
                    "CheckID": check.get("CheckID") or f"service:{service_id}{suffix}",
                    "Name": check.get("Name") or f"Service '{data['Name']}' check",
                    "Status": status,
                    "ServiceID": service_id,
                }
            )
        service = {k: data[k] for k in ("Tags", "Address", "Port", "Meta", "Weights") if k in data}
        service.update({"ID": service_id, "Service": data["Name"]})
        return {
            "Node": self.node_name,
            "Address": self.node_address,
            "SkipNodeUpdate": True,
            "Service": service,
            "Checks": catalog_checks,
        }

    async def _read(
        self,
        path: str,
        params: dict[str, str],
        query: list[tuple[str, str]],
        token: str | None,
        headers: list[tuple[str, str]],
        service: str | None,
    ) -> str:
        index, wait = _blocking_params(params)
        self.reads.append((path, index))
        full_view = self._acl(token, write=False)

        def current() -> int:
            if service is None:
                return self.store.catalog_services_index()
            return self.store.health_service_index(service)

        if index > 0:
            deadline = trio.current_time() + wait + self.random.uniform(0, wait / 16)
            abandoned = self.abandoned
            self.parked += 1
            try:
                with trio.move_on_at(deadline):
                    while current() <= index and not self.failing and abandoned == self.abandoned:
                        if any(path.startswith(prefix) for prefix, _, _ in self.injections):
                            break
                        await self.changed.wait()
            finally:
                self.parked -= 1
            if self.failing:
                raise _Reply(500, "rpc error making call: No cluster leader")
        headers += [
            ("X-Consul-Index", str(current())),
            ("X-Consul-KnownLeader", "true"),
            ("X-Consul-LastContact", "0"),
        ]
        for prefix, status, body in self.injections:
            if path.startswith(prefix):
                if status != 200:
                    raise _Reply(status, body)
                return body
        node_meta = [tuple(v.split(":", 1)) for k, v in query if k == "node-meta" and ":" in v]
        ns = params.get("ns") or "default"
        partition = params.get("partition") or "default"
        if not full_view:
            headers.append(("X-Consul-Results-Filtered-By-ACLs", "true"))
        if service is None:
            services = self.store.catalog_services(
                node_meta=node_meta,  # type: ignore[arg-type]
                ns=ns,
                partition=partition,
            )
            return json.dumps(services if full_view else {})
        entries = self.store.health_service(
            service,
            tags=[v for k, v in query if k == "tag"],
            node_meta=node_meta,  # type: ignore[arg-type]
            passing="passing" in params and params["passing"].lower() not in ("0", "false"),
            ns=ns,
            partition=partition,
        )
        return json.dumps(entries if full_view else [])


def _blocking_params(params: dict[str, str]) -> tuple[int, float]:
    try:
        index = int(params.get("index") or 0)
    except ValueError as err:
        raise _Reply(400, "Invalid index") from err
    wait = 300.0
    if params.get("wait"):
        match = _GO_DURATION.match(params["wait"])
        if match is None:
            raise _Reply(400, "Invalid wait time")
        wait = min(float(match.group(1)) * _UNIT_S[match.group(2)], 600.0)
    return index, wait


def _token(request: h11.Request, query: list[tuple[str, str]]) -> str | None:
    for name, value in request.headers:
        if name == b"x-consul-token":
            return value.decode("latin-1")
        if name == b"authorization" and value.lower().startswith(b"bearer "):
            return value[7:].decode("latin-1")
    return dict(query).get("token")


async def _read_request(
    conn: h11.Connection, stream: trio.abc.Stream
) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(bytes(data))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        else:  # ConnectionClosed or PAUSED
            return None, b""


@asynccontextmanager
async def open_consul_api_server(
    host: str = "127.0.0.1", port: int = 0, **kwargs: Any
) -> AsyncIterator[ConsulApiServer]:
    """Run a :class:`ConsulApiServer` for the duration of the block (``srv.url`` to reach it)."""
    server = ConsulApiServer(**kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, host, port)
        yield server
        nursery.cancel_scope.cancel()


async def _main(args: argparse.Namespace) -> None:
    server = ConsulApiServer(acl_token=args.acl_token, datacenter=args.datacenter)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, args.host, args.port)
        print(f"listening on {server.url}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Consul-HTTP-API-compatible test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--acl-token", default=None)
    parser.add_argument("--datacenter", default="dc1")
    trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    main()
