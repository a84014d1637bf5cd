"""Read a TLS ClientHello without terminating TLS, and return its SNI plus the exact bytes read.

Why: the SNI listener routes a TLS connection by the name the client asked for while the TLS
session stays end to end between the caller and the workload (their mTLS is not ours to
open). So we parse only as much of the handshake as needed to find ``server_name``, then hand
every byte we consumed back to the caller, which forwards it unchanged before relaying.

The pure, incremental parser and its typed errors live in :mod:`overlay.link.client_hello`
(the east-west listener of a worker reads ClientHellos too); they are re-exported here.
``read_client_hello(stream)`` is the trio adapter: it never receives more than ``max_bytes``
in total, enforces ``timeout_s`` for the whole hello, and returns ``(sni, bytes_read)``.
Errors carry ``.data`` (the bytes read so far) so a caller may still forward a hello without
SNI to a default route.
"""

from __future__ import annotations

import trio

from overlay.link.client_hello import (
    CLIENT_HELLO_TIMEOUT_S,
    MAX_CLIENT_HELLO_BYTES,
    ClientHelloError,
    ClientHelloReader,
    ClientHelloTimeout,
    ClientHelloTooLarge,
    InvalidSni,
    MalformedClientHello,
    NoSni,
    NotTls,
    TruncatedClientHello,
    peek_sni,
)

__all__ = [
    "CLIENT_HELLO_TIMEOUT_S",
    "MAX_CLIENT_HELLO_BYTES",
    "ClientHelloError",
    "ClientHelloReader",
    "ClientHelloTimeout",
    "ClientHelloTooLarge",
    "InvalidSni",
    "MalformedClientHello",
    "NoSni",
    "NotTls",
    "TruncatedClientHello",
    "peek_sni",
    "read_client_hello",
]


async def read_client_hello(
    stream: trio.abc.ReceiveStream,
    *,
    max_bytes: int = MAX_CLIENT_HELLO_BYTES,
    timeout_s: float = CLIENT_HELLO_TIMEOUT_S,
) -> tuple[str, bytes]:
    """Read a ClientHello from ``stream``: returns ``(sni, bytes_read)``.

    Forward ``bytes_read`` untouched before relaying the rest. Never receives more than
    ``max_bytes``; raises ``ClientHelloTimeout`` after ``timeout_s``; other failures raise the
    typed errors above, each with ``.data`` = the bytes read so far.
    """
    buf = bytearray()
    reader = ClientHelloReader(max_bytes=max_bytes)
    with trio.move_on_after(timeout_s):
        while len(buf) < max_bytes:
            chunk = await stream.receive_some(max_bytes - len(buf))
            if not chunk:
                raise TruncatedClientHello("connection closed inside the ClientHello", bytes(buf))
            buf += chunk
            try:
                sni = reader.feed(bytes(chunk))
            except ClientHelloError as exc:
                exc.data = bytes(buf)
                raise
            if sni is not None:
                return sni, bytes(buf)
        raise ClientHelloTooLarge(f"ClientHello larger than {max_bytes} bytes", bytes(buf))
    raise ClientHelloTimeout(f"no complete ClientHello within {timeout_s} s", bytes(buf))
