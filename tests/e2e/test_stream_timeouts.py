"""A long, healthy download is not cut by the route timeout, across two gateway processes.

``route_timeout_s`` (15 s by default) bounds the time to the response head only; after it
a response lives while its bytes move.  Here a caller at site east downloads 16 MiB from an
endpoint at site west and reads it at 500 kB/s (about 32 s, twice the route timeout) with a
small receive buffer, so the pace holds through both gateways and the link between them.

Real time is unavoidable (real processes); nothing is asserted about how long it took, and
the only bound is a hang guard of ten route timeouts.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import trio

from tests.e2e.harness import make_topology, open_overlay, routes_of

HTTP_PORT = 15080
BULK_PORT = 18778
TOTAL = 16 * 1024 * 1024
RATE = 500_000  # bytes per second the caller reads
PIECE = bytes(range(256)) * 256  # 64 KiB
ROUTE_TIMEOUT_S = 15.0  # the default the gateways run with
HANG_GUARD_S = 10 * ROUTE_TIMEOUT_S


async def _bulk_endpoint(stream: trio.SocketStream) -> None:
    """HTTP/1.1: answer any request with ``TOTAL`` bytes of ``PIECE`` (Content-Length)."""
    try:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            data = await stream.receive_some(65536)
            if not data:
                return
            head += data
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % TOTAL)
        for _ in range(TOTAL // len(PIECE)):
            await stream.send_all(PIECE)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def _paced_download(host: str, authority: bytes) -> tuple[bytes, int, str]:
    """GET through the gateway at ``host``; read at ``RATE``.  Returns the response head, the
    body length and its SHA-256."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # the pace reaches back
    await sock.connect((host, HTTP_PORT))
    stream = trio.SocketStream(sock)
    async with stream:
        await stream.send_all(b"GET /bulk HTTP/1.1\r\nHost: %s\r\n\r\n" % authority)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            assert data, f"closed before the head: {buf!r}"
            buf += data
        head, _, first = buf.partition(b"\r\n\r\n")
        digest = hashlib.sha256(first)
        received = len(first)
        start = trio.current_time()
        for _ in range(TOTAL):  # bounded: every pass takes at least one byte
            if received >= TOTAL:
                break
            await trio.sleep_until(start + received / RATE)
            try:
                data = await stream.receive_some(min(65536, TOTAL - received))
            except trio.BrokenResourceError:
                data = b""  # reset: cut short, the assertion below says by how much
            if not data:
                break
            digest.update(data)
            received += len(data)
    return head, received, digest.hexdigest()


async def test_a_download_longer_than_the_route_timeout_completes(tmp_path: Path) -> None:
    topology = make_topology(["east", "west"])
    west_addr = str(next(s for s in topology.sites if s.name == "west").address)

    def patch(site: str, text: str) -> str:
        if site != "west":
            return text
        return text + (
            f'\n[[sources]]\nkind = "static"\nname = "bulk"\n[[sources.endpoints]]\n'
            f'service = "bulk"\naddress = "{west_addr}"\nport = {BULK_PORT}\n'
            f'protocol = "http1"\n'
        )

    listeners = await trio.open_tcp_listeners(BULK_PORT, host=west_addr)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, _bulk_endpoint, listeners)
        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            await ov.wait("east", "/routes", lambda d: routes_of(d, "bulk.default.isthmus"))
            east = str(ov.built["east"].site.address)
            with trio.fail_after(HANG_GUARD_S):
                head, received, digest = await _paced_download(east, b"bulk.default.isthmus")
        nursery.cancel_scope.cancel()
    expected = hashlib.sha256(PIECE * (TOTAL // len(PIECE))).hexdigest()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert received == TOTAL, f"cut after {received} of {TOTAL} bytes"
    assert digest == expected
