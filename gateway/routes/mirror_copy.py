"""The copy of a request body that a route's mirror sends: bounded, and dropped rather than
waited for.  Pure: no trio, no time, no I/O.

Why a copy at all: a body is streamed once, from the caller to the primary backend, and never
buffered whole.  A mirror needs the same bytes a second time, so they are kept as they stream
past -- but only up to a cap per request (``mirror.max_body_bytes``) and only while the
gateway-wide :class:`MirrorBudget` (``[limits] mirror_buffer_budget``) has room.  Whatever
goes wrong with the copy, the primary's bytes are already on their way: the copy is dropped
(with a reason for ``isthmus_route_mirror_dropped_total``), the primary never waits for it.

Theory of operation
-------------------
A :class:`BodyCopy` starts *copying*.  Before any byte, :func:`admit` refuses a body whose
declared ``content-length`` is already over the cap (nothing is copied for nothing).  Each
piece the primary reads is :meth:`BodyCopy.feed`: kept when the copy stays within its cap and
the budget grants the bytes, else the copy turns *dropped* (its bytes go back to the budget
at once).  The end of the body (:meth:`BodyCopy.finish`) turns a copying copy *complete*: its
bytes are held until the mirror has sent them (:meth:`BodyCopy.release`).  A copy whose
primary stopped reading before the end (the primary failed, or answered without reading the
whole body) is dropped as ``body_unfinished``: a mirror never sends a truncated body -- unless
the body declared its length and every byte of it was copied (:attr:`BodyCopy.whole`): an
endpoint that answers before the body's end is read is common, and the copy is whole then
(only HTTP/2 trailers after such a body would be missing from it).
"""

from __future__ import annotations

from typing import Literal

from gateway.http.message import Headers

#: Why a mirror copy was not sent (the label values of ``isthmus_route_mirror_dropped_total``).
DropReason = Literal["body_too_large", "buffer_budget", "body_unfinished", "in_flight", "stopped"]
DROP_REASONS: tuple[DropReason, ...] = (
    "body_too_large",  # the body (declared or as it came) is over mirror.max_body_bytes
    "buffer_budget",  # [limits] mirror_buffer_budget had no room for the copy
    "body_unfinished",  # the primary did not read the body to its end
    "in_flight",  # mirror.max_in_flight (or the gateway's cap) copies already run
    "stopped",  # the gateway is shutting down (no mirror nursery)
)


class MirrorBudget:
    """Bytes held by mirror copies across the gateway, against ``limit``.

    Single-threaded (one trio run), so no locking; a grant is all or nothing (a piece that
    does not fit is refused whole: the copy it belongs to is dropped)."""

    __slots__ = ("_held", "_peak", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("mirror buffer budget must be >= 0")
        self.limit = limit
        self._held = 0
        self._peak = 0

    @property
    def held(self) -> int:
        return self._held

    @property
    def peak(self) -> int:
        """The most ever held at once (for statistics)."""
        return self._peak

    def try_take(self, nbytes: int) -> bool:
        """Grant ``nbytes`` if they fit under the limit (a limit lowered by a reload below
        what is held refuses every grant until enough comes back)."""
        if self._held + nbytes > self.limit:
            return False
        self._held += nbytes
        if self._held > self._peak:
            self._peak = self._held
        return True

    def give_back(self, nbytes: int) -> None:
        if not 0 <= nbytes <= self._held:
            raise ValueError(f"giving back {nbytes} of {self._held} held bytes")
        self._held -= nbytes


def declared_length(headers: Headers) -> int | None:
    """The request's ``content-length`` (None: absent, chunked or HTTP/2 without one).  The
    listeners validated it already; anything odd here is treated as unknown."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def admit(declared: int | None, cap: int) -> DropReason | None:
    """Before the first byte: a declared length over the cap is dropped at once."""
    if declared is not None and declared > cap:
        return "body_too_large"
    return None


class BodyCopy:
    """The bounded copy of one request body (see the module docstring for its states)."""

    __slots__ = (
        "_budget",
        "_pieces",
        "cap",
        "complete",
        "dropped",
        "expected",
        "held",
        "trailers",
    )

    def __init__(self, cap: int, budget: MirrorBudget, expected: int | None = None) -> None:
        self.cap = cap
        #: The declared ``content-length`` (None: unknown): once that many bytes were copied
        #: the body is whole even if the primary never reads its end (an endpoint that
        #: answered without waiting for it: the primary's forwarder then stops reading).
        self.expected = expected
        self._budget = budget
        self._pieces: list[bytes] = []
        self.held = 0
        self.complete = False
        self.dropped: DropReason | None = None
        self.trailers: Headers = ()

    @property
    def copying(self) -> bool:
        return not self.complete and self.dropped is None

    def feed(self, data: bytes | bytearray) -> DropReason | None:
        """Keep ``data`` (a piece the primary just read); the reason when it drops the copy
        (once: later pieces of a dropped copy return None)."""
        if not self.copying or not data:
            return None
        size = len(data)
        if self.held + size > self.cap:
            return self.drop("body_too_large")
        if not self._budget.try_take(size):
            return self.drop("buffer_budget")
        self._pieces.append(data if type(data) is bytes else bytes(data))
        self.held += size
        return None

    @property
    def whole(self) -> bool:
        """Every declared byte was copied (the end of the body may still be unread)."""
        return self.expected is not None and self.held == self.expected and self.copying

    def finish(self, trailers: Headers = ()) -> bool:
        """The body ended: True when the copy is whole (and now complete)."""
        if not self.copying:
            return False
        self.complete = True
        self.trailers = trailers
        return True

    def drop(self, reason: DropReason) -> DropReason | None:
        """Give the copy up (its bytes back to the budget); the reason, or None when it was
        already dropped or complete (a complete copy ends with :meth:`release`)."""
        if not self.copying:
            return None
        self.dropped = reason
        self.release()
        return reason

    def pieces(self) -> tuple[bytes, ...]:
        """The copied body as it came, piece by piece (once complete; not joined: a join
        would hold the body twice)."""
        return tuple(self._pieces)

    def body(self) -> bytes:
        """The whole copied body (once complete)."""
        return b"".join(self._pieces)

    def release(self) -> None:
        """The bytes are no longer held (the mirror sent them, or the copy was dropped)."""
        if self.held:
            self._budget.give_back(self.held)
            self.held = 0
        self._pieces = []
