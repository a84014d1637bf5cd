"""Real endpoints on loopback for the upstream / cluster / east-west tests, and the caller-side
helpers (a streaming body, a recording response writer).

The servers are ordinary HTTP/1.1 and HTTP/2 servers on real sockets: a streaming echo that
answers while it reads, an HTTP/2 echo that reports the headers it saw and returns trailers,
and a deliberately "stale" keep-alive server.  The tests at the bottom check the servers
themselves, so a broken helper cannot make the real tests pass vacuously.
"""

from __future__ import annotations

import trio

from tests.gateway.upstream.upstream_kit import (
    serve_stream_echo,
)

# -- caller-side helpers ----------------------------------------------------------------------


# -- endpoints ---------------------------------------------------------------------------------


# -- the helpers themselves --------------------------------------------------------------------


async def test_stream_echo_server_echoes_and_reports() -> None:
    stats: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_stream_echo, stats)
        sock = await trio.open_tcp_stream("127.0.0.1", port)
        await sock.send_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc")
        data = b""
        with trio.fail_after(5):
            while b"x-length: 3" not in data:
                data += await sock.receive_some(4096)
        assert b"x-request-headers" in data and b"abc" in data
        await sock.aclose()
        nursery.cancel_scope.cancel()
