"""A route's mirror with request bodies, on real gateway processes: the primary endpoint is
in site a, the mirror's endpoints in site b (across the link).  Every endpoint is a real
HTTP/1.1 server that keeps what it was sent.

* POSTs with a body (HTTP/1.1 content-length, HTTP/1.1 chunked, h2c) reach the primary and
  the mirror with identical bodies; a caller's forged ``isthmus-*``/``x-isthmus-*`` fields
  reach neither;
* a body over ``max_body_bytes`` (declared, or chunked and growing past it) reaches the
  primary intact and the mirror not, and ``isthmus_route_mirror_dropped_total`` moves;
* a mirror whose endpoint never answers, or is down, never touches the caller's answer; the
  hung one is cut at its ``timeout_s`` (``isthmus_route_mirror_failed_total``);
* ``[limits] mirror_buffer_budget`` lowered by a live reload: with a copy held by a hung
  mirror, the next body is not mirrored (``reason="buffer_budget"``), its request untouched.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from tests.e2e.clients import h1_request, h2_request
from tests.e2e.counting_server import Counting, serve_counting
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of

HTTP_PORT = 15080
ORDERS = "orders.default.isthmus"
CAP = 4096
FORGED = "spiffe://b.e2e.test/forged"

ROUTES = f"""
[[routes]]
address = "orders.default"
name = "mirrored"
match = {{ path = {{ prefix = "/mirrored" }} }}
mirror = {{ service = "shadow.default", site = "b", max_body_bytes = {CAP} }}

[[routes]]
address = "orders.default"
name = "stuck"
match = {{ path = {{ prefix = "/stuck" }} }}
mirror = {{ service = "stuck.default", site = "b", timeout_s = 1 }}

[[routes]]
address = "orders.default"
name = "held"
match = {{ path = {{ prefix = "/held" }} }}
mirror = {{ service = "stuck.default", site = "b", timeout_s = 60 }}

[[routes]]
address = "orders.default"
name = "down"
match = {{ path = {{ prefix = "/down" }} }}
mirror = {{ service = "down.default", site = "b" }}
"""


BUDGET = "\n[limits]\nmirror_buffer_budget = 4096\n"


def _reload(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url + "/config/reload", data=b"", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _endpoint(service: str, address: str, port: int) -> str:
    # Appended to the static source (the last [[sources]] table).
    return (
        f'\n[[sources.endpoints]]\nservice = "{service}"\naddress = "{address}"\n'
        f'port = {port}\nprotocol = "http1"\n'
    )


async def _serve_stuck(
    host: str, arrived: list[bytes], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """An endpoint that reads a request and never answers (hang guard: 30 s)."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])

    async def connection(stream: trio.SocketStream) -> None:
        with trio.move_on_after(30):
            arrived.append(await stream.receive_some(65536))
            await trio.sleep_forever()

    await trio.serve_listeners(connection, listeners)


async def _metric(ov: Overlay, host: str, name: str, labels: str) -> float:
    reply = await h1_request(host, ov.topology.admin_port, authority="admin", path="/metrics")
    assert reply.status == 200
    found = re.search(
        rf"^{name}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", reply.body.decode(), re.MULTILINE
    )
    return float(found.group(1)) if found else 0.0


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):  # bounded: 20 s
        if await check():
            return
        await trio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


async def test_bodies_are_mirrored_bounded_and_never_in_the_callers_way(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"])
    a, b = (str(s.address) for s in topology.sites)
    orders, shadow, down = Counting(200, "orders"), Counting(200, "shadow"), Counting(0, "down")
    stuck: list[bytes] = []
    async with trio.open_nursery() as servers:
        orders_port = await servers.start(serve_counting, a, orders)
        shadow_port = await servers.start(serve_counting, b, shadow)
        stuck_port = await servers.start(partial(_serve_stuck, b, stuck))
        closed = trio.socket.socket()  # a port nothing listens on: the "down" endpoint
        await closed.bind((b, 0))
        down_port = closed.getsockname()[1]

        def patch(site: str, text: str) -> str:
            if site == "a":
                return text + ROUTES + _endpoint("orders", a, orders_port)
            return (
                text
                + _endpoint("shadow", b, shadow_port)
                + _endpoint("stuck", b, stuck_port)
                + _endpoint("down", b, down_port)
            )

        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            names = [f"{n}.default.isthmus" for n in ("orders", "shadow", "stuck", "down")]
            await ov.wait("a", "/routes", lambda d: all(routes_of(d, n) for n in names))
            forged = {"isthmus-caller-id": FORGED, "x-isthmus-caller-id": FORGED, "x-test": "1"}

            async def h1(path: str, body: bytes | list[bytes]) -> None:
                reply = await h1_request(
                    a, HTTP_PORT, authority=ORDERS, path=path, method="POST", headers=forged,
                    body=body, request_timeout_s=20,
                )  # fmt: skip
                assert (reply.status, reply.body) == (200, b"orders"), reply

            # 1. Within the cap: HTTP/1.1 content-length, HTTP/1.1 chunked, h2c.
            sized = b"".join(b"%04d;" % i for i in range(600))  # 3000 bytes
            pieces = [b"chunk-one;" * 100, b"chunk-two;" * 150]  # 2500 bytes, chunked
            await h1("/mirrored/sized", sized)
            await h1("/mirrored/chunked", pieces)
            h2_body = b"h2c body;" * 300
            reply = await h2_request(
                a, HTTP_PORT, authority=ORDERS, path="/mirrored/h2", method="POST",
                headers=list(forged.items()), body=h2_body,
            )  # fmt: skip
            assert (reply.status, reply.body) == (200, b"orders")
            await _until(lambda: _ready(len(shadow.seen) >= 3), "three mirror copies")
            sent = {sized, b"".join(pieces), h2_body}
            assert {s.body for s in orders.seen} == sent
            assert {s.body for s in shadow.seen} == sent
            for seen in (*orders.seen, *shadow.seen):
                assert seen.method == "POST" and seen.headers.get("x-test") == "1"
                assert FORGED not in seen.headers.values(), seen.headers

            # 2. Over the cap, declared and chunked: the primary whole, the mirror nothing.
            big = b"B" * (CAP + 1)
            await h1("/mirrored/big", big)
            await h1("/mirrored/big-chunked", [b"C" * 2000, b"C" * 2000, b"C" * 2000])
            assert [s.body for s in orders.seen[3:]] == [big, b"C" * 6000]
            await _until(
                lambda: _at_least(ov, a, "body_too_large", 2), "two drops for body_too_large"
            )
            assert len(shadow.seen) == 3

            # 3. A mirror that hangs, one whose endpoint is down: the caller gets its answer.
            await h1("/stuck", b"stuck body")
            await h1("/down", b"down body")
            assert [s.body for s in orders.seen[5:]] == [b"stuck body", b"down body"]
            await _until(lambda: _ready(bool(stuck)), "the hung mirror's request arrived")
            await _until(
                lambda: _failed(ov, a, "timeout"), "the hung mirror timed out at its timeout_s"
            )
            assert not down.seen

            # 4. The gateway-wide budget, lowered by a live reload: a copy held by a hung
            #    mirror (its timeout is 60 s) leaves no room for the next; that caller's
            #    request is untouched.
            config = ov.built["a"].config_path
            config.write_text(config.read_text("utf-8") + BUDGET, "utf-8")
            status, doc = await trio.to_thread.run_sync(_reload, ov.url("a"))
            assert status == 200 and doc["changes"] == ["limits"], doc
            await h1("/held", b"H" * 3000)
            await _until(lambda: _ready(len(stuck) >= 2), "the held mirror's request arrived")
            await h1("/mirrored/no-room", b"N" * 3000)
            assert [s.body for s in orders.seen[7:]] == [b"H" * 3000, b"N" * 3000]
            assert await _at_least(ov, a, "buffer_budget", 1)
            assert len(shadow.seen) == 3
        servers.cancel_scope.cancel()
        closed.close()


async def _ready(value: bool) -> bool:
    return value


async def _at_least(ov: Overlay, host: str, reason: str, count: int) -> bool:
    labels = f'reason="{reason}"'
    return await _metric(ov, host, "isthmus_route_mirror_dropped_total", labels) >= count


async def _failed(ov: Overlay, host: str, reason: str) -> bool:
    labels = f'reason="{reason}"'
    return await _metric(ov, host, "isthmus_route_mirror_failed_total", labels) >= 1
