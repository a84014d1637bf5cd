"""A request body already held whole in memory, found through the wrappers around it.

Why: a forwarder streams a body piece by piece because it cannot know how much is still to
come.  Some bodies are complete before the request starts -- a route mirror's copy is held
whole until it is sent -- and a link tunnel can then put the body and END_STREAM on the wire
together with the request's HEADERS (:meth:`overlay.h2.stream.H2Stream.send_final_now`):
one write on the link, one read at the peer, and a peer handler that starts with the whole
request.  Streamed, the same 1 KiB took a write (and a scheduler pass on each side) for the
DATA and another for END_STREAM, and kept the stream -- and the mirror's in-flight slot --
open that much longer.

A body offers its held bytes with a ``held_whole(limit)`` method (no I/O, nothing consumed:
the body can still be read as usual, e.g. by a retry); a wrapper passes the question on to
what it wraps when it has handed nothing out yet.
"""

from __future__ import annotations

from typing import Protocol

from gateway.http.exchange import Body

#: The largest body sent whole: HTTP/2's smallest SETTINGS_MAX_FRAME_SIZE (RFC 9113 6.5.2),
#: so it always fits one DATA frame.
WHOLE_BODY_MAX = 16_384


class HoldsWhole(Protocol):
    def held_whole(self, limit: int) -> bytes | None:
        """All of the body (no trailers, nothing read yet, at most ``limit`` bytes), or None."""


def held_whole(body: Body, limit: int = WHOLE_BODY_MAX) -> bytes | None:
    """``body``'s bytes if it is held whole in memory (see the module docstring), else None."""
    peek = getattr(body, "held_whole", None)
    if peek is None:
        return None
    whole: bytes | None = peek(limit)
    return whole
