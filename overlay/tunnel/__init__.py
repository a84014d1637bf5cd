"""Tunnels: HTTP/2 streams on a link, exposed as trio Streams (L7 requests and L4 CONNECT)."""

from overlay.tunnel.h2_stream import (
    ConnectionGone,
    H2Stream,
    H2StreamStatistics,
    HeaderList,
    Headers,
    InvalidHeaders,
    LinkDown,
    PeerMisbehaved,
    StreamReset,
    TunnelError,
)

__all__ = [
    "ConnectionGone",
    "H2Stream",
    "H2StreamStatistics",
    "HeaderList",
    "Headers",
    "InvalidHeaders",
    "LinkDown",
    "PeerMisbehaved",
    "StreamReset",
    "TunnelError",
]
