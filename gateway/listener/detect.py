"""Which HTTP a downstream connection speaks: the ALPN offer and the HTTP/2 client preface.

Why its own module: the choice is made from the first bytes (or the TLS handshake's ALPN)
before any protocol engine runs; :mod:`gateway.listener.http` acts on it, and the bytes peeked
here are handed back through :class:`~gateway.prefixed.PrefixedStream`.
"""

from __future__ import annotations

import trio

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ALPN_PROTOCOLS = ["h2", "http/1.1"]


async def peek_preface(stream: trio.abc.Stream, timeout_s: float) -> bytes:
    """Read until the bytes are (or cannot be) the HTTP/2 client preface."""
    buf = b""
    with trio.move_on_after(timeout_s):
        while len(buf) < len(H2_PREFACE) and H2_PREFACE.startswith(buf):
            data = await stream.receive_some(64 * 1024)
            if not data:
                break
            buf += bytes(data)
    return buf


def speaks_h2(first: bytes, alpn: str | None) -> bool:
    """HTTP/2 with prior knowledge: the preface as the first bytes and no ALPN choice (a TLS
    caller that negotiated ``http/1.1`` stays HTTP/1.1 whatever it sends)."""
    return first.startswith(H2_PREFACE) and alpn is None
