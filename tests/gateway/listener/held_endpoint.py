"""A real HTTP/1.1 endpoint that holds its answer to ``/slow`` until a test releases it: the
request in flight of the drain tests (listener drains, scoped drains on reload, and the
end-to-end drains of real gateways)."""

from __future__ import annotations

import trio

from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import ResponseHead

HOLD_GUARD_S = 60.0
"""The endpoint never holds a request longer than this (a test that forgets to release it
still ends)."""

GET_SLOW = b"GET /slow HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n"
GET_FAST = b"GET /fast HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n"
#: ``GET /slow`` as an HTTP/2 caller's request headers (``[:3]`` plus another path for others).
H2_GET_SLOW = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"api.default.isthmus"),
    (b":path", b"/slow"),
]


class HeldEndpoint:
    """Answers ``done <path>`` at once, and ``/slow`` only once :attr:`release` is set.

    ``arrived`` is set and ``held`` counts up when a ``/slow`` request comes in.
    """

    def __init__(self) -> None:
        self.arrived = trio.Event()
        self.held = 0
        self.release = trio.Event()

    async def handler(self, stream: trio.SocketStream) -> None:
        conn = H1ServerConnection(stream)
        try:
            while (head := await conn.next_request()) is not None:
                if head.target == b"/slow":
                    self.held += 1
                    self.arrived.set()
                    with trio.move_on_after(HOLD_GUARD_S):
                        await self.release.wait()
                body = b"done " + head.target
                await conn.send_response(
                    ResponseHead(200, ()), content_length=len(body), body=body, end=True
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await conn.aclose()
