"""The L4 floor: the least work any trio relay does to carry one TCP stream over mTLS.

Why: like ``floor.py`` for HTTP, this says what limits Isthmus's cross-site L4 figure rather
than guessing.  Two processes, exactly HAProxy's shape (one TLS connection per client
connection, no multiplexing, no HTTP/2 framing, no flow control of our own): ``near`` accepts
plain TCP and relays it over TLS 1.3 with client certificates to ``far``, which relays it to
the backend.  TLS is the gateway's own ``TLSStream`` (large reads, every buffered record per
receive).  Each copy moves at most ``READ`` bytes: the benchmark passes the gateways'
``tunnel_buffer_bytes`` (64 KiB by default, the bound per tunnel direction in docs/limits.md), so
relay and tunnel move the same units.  Its MB/s per core is the ceiling of a trio design; the
gap from it to Isthmus is what HTTP/2 framing and flow control cost.

Run: ``floor_l4.py near|far LISTEN_HOST LISTEN_PORT TO_HOST TO_PORT CRT_KEY_PEM PEER_BUNDLE
[READ]`` (``READ`` defaults to 64 KiB).
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from overlay.link.tls_stream import TLSStream

READ = 64 * 1024


def _context(server_side: bool, crt_key: str, bundle: str) -> ssl.SSLContext:
    purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose, cafile=bundle)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(crt_key)
    return ctx


async def _copy(src: trio.abc.ReceiveStream, dst: trio.abc.SendStream, read: int) -> None:
    while data := await src.receive_some(read):
        await dst.send_all(data)


async def _relay(a: trio.abc.Stream, b: trio.abc.Stream, read: int) -> None:
    """Both directions until either side ends (bench traffic: iperf3 closes both at once)."""
    async with trio.open_nursery() as nursery:

        async def one_way(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await _copy(src, dst, read)
            nursery.cancel_scope.cancel()

        nursery.start_soon(one_way, a, b)
        nursery.start_soon(one_way, b, a)


async def main(
    role: str, listen: tuple[str, int], to: tuple[str, int], crt: str, ca: str, read: int
) -> None:
    ctx = _context(role == "far", crt, ca)
    to_host, to_port = to

    async def on_connection(tcp: trio.SocketStream) -> None:
        with contextlib.suppress(OSError, trio.BrokenResourceError, ssl.SSLError):
            if role == "near":
                upstream = TLSStream(await trio.open_tcp_stream(to_host, to_port), ctx)
                await upstream.do_handshake()
                async with tcp, upstream:
                    await _relay(tcp, upstream, read)
            else:
                downstream = TLSStream(tcp, ctx, server_side=True)
                await downstream.do_handshake()
                backend = await trio.open_tcp_stream(to_host, to_port)
                async with downstream, backend:
                    await _relay(downstream, backend, read)

    await trio.serve_tcp(on_connection, listen[1], host=listen[0])


if __name__ == "__main__":
    if len(sys.argv) not in (8, 9) or sys.argv[1] not in ("near", "far"):
        sys.exit(
            "usage: floor_l4.py near|far HOST PORT TO_HOST TO_PORT CRT_KEY_PEM PEER_BUNDLE [READ]"
        )
    role, host, port, to_host, to_port, crt, ca = sys.argv[1:8]
    read = int(sys.argv[8]) if len(sys.argv) == 9 else READ
    trio.run(main, role, (host, int(port)), (to_host, int(to_port)), crt, ca, read)
