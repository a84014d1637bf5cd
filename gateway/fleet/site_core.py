"""The pure cores of the fleet push between sites: who sends what when, who accepts what.

Theory of operation
-------------------
The authority site runs one :class:`PushSession` per replica of each peer site and per push
stream.  It holds the
latest document (``set_document``) and sends it when nothing is in flight and the peer has not
answered that document yet: **one version in flight** per replica, and a burst of applies sends
only the newest once the previous push is answered (never a queue).  Every push is answered
with the federation's ``ack`` (the site runs it) or ``nack`` (it rejected it; ``reason`` says
why); a reply that names another push is a protocol error (the stream is torn down and the
next one starts with a fresh epoch and a full push).

A receiving site runs one :class:`ReceiveSession` per push stream: only pushes from the
authority site it expects, and within an epoch only increasing push versions.  What it does
with a push is :func:`decide`: decode the document with the same decoder as the Consul path
(size, UTF-8, JSON, structure, each spec) -- a document it cannot decode is rejected at once,
one it already runs is acknowledged at once, any other is handed to the reload (which merges
it with the site's file and validates it with the loader of ``isthmus config check``).

What the authority shows of the answers, per replica and per site, is
:mod:`gateway.fleet.replica_answers`.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from gateway.config.errors import Problem
from gateway.fleet.document import FleetDocument
from gateway.fleet.site_wire import FleetPush, Reply
from gateway.fleet.watch import decode_value
from overlay.federation.protocol import MAX_REASON_CHARS, Ack, FederationProtocolError, Nack


@dataclass(frozen=True, slots=True)
class _InFlight:
    push: int  # the push version (counter of the epoch)
    document: str  # the document version it carries
    sent_at: float


@dataclass(frozen=True, slots=True)
class Answer:
    """A site's reply to the push of document ``version``."""

    version: str
    applied: bool
    reason: str | None


class PushSession:
    """The authority's side of one push stream to one site (see the module docstring)."""

    def __init__(self, origin_site: str, epoch: str) -> None:
        self.origin_site = origin_site
        self.epoch = epoch
        self._count = 0
        self._latest: tuple[str, str] | None = None  # (document version, canonical text)
        self._in_flight: _InFlight | None = None
        self.answered: str | None = None  # the document version the site last answered

    def set_document(self, doc: FleetDocument) -> None:
        self._latest = (doc.version, doc.canonical_json())

    def next_message(self, now: float) -> FleetPush | None:
        """The push to send now, if any (never a second one while one is in flight)."""
        if self._in_flight is not None or self._latest is None:
            return None
        version, text = self._latest
        if version == self.answered:
            return None
        self._count += 1
        self._in_flight = _InFlight(self._count, version, now)
        return FleetPush(self.origin_site, self.epoch, self._count, text)

    def receive(self, reply: Reply) -> Answer:
        """The site's reply to the push in flight; :class:`FederationProtocolError` if it
        names another push."""
        sent = self._in_flight
        if sent is None or reply.epoch != self.epoch or reply.version != sent.push:
            raise FederationProtocolError(
                f"fleet reply for push {reply.epoch}/{reply.version} matches no push in flight"
            )
        self._in_flight = None
        self.answered = sent.document
        if isinstance(reply, Nack):
            return Answer(sent.document, False, reply.reason)
        return Answer(sent.document, True, None)

    def oldest_unacked_at(self) -> float | None:
        return None if self._in_flight is None else self._in_flight.sent_at


class ReceiveSession:
    """A site's side of one push stream: only the authority, only newer pushes."""

    def __init__(self, expected_origin: str) -> None:
        self.expected_origin = expected_origin
        self._last: tuple[str, int] | None = None

    def receive(self, push: FleetPush) -> None:
        if push.origin_site != self.expected_origin:
            raise FederationProtocolError(
                f"a fleet push names {push.origin_site!r} as its origin; "
                f"the authority is {self.expected_origin!r}"
            )
        if self._last is not None and self._last[0] == push.epoch and push.version <= self._last[1]:
            raise FederationProtocolError(
                f"fleet push {push.version} is not after push {self._last[1]} of its epoch"
            )
        self._last = (push.epoch, push.version)


Decision = Literal["apply", "ack", "reject"]


def decide(
    push: FleetPush, running: str | None, *, max_bytes: int, max_resources: int
) -> tuple[Decision, FleetDocument | None, str, tuple[Problem, ...]]:
    """What to do with ``push`` at a site running document version ``running``: (decision,
    the decoded document, its version, the problems when rejected)."""
    doc, version, problems = decode_value(
        push.document.encode(), max_bytes=max_bytes, max_resources=max_resources
    )
    if doc is None:
        return "reject", None, version, problems
    if doc.version == running:
        return "ack", doc, version, ()
    return "apply", doc, version, ()


def rejection_reason(version: str, problems: Iterable[Problem]) -> str:
    """A nack's reason: the version and its problems, cut to the federation's bound."""
    shown = "; ".join(p.render(None) for p in problems) or "rejected"
    text = f"version {version}: {shown}"
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text


def reply_for(push: FleetPush, rejected: str | None) -> Reply:
    """The ack (``rejected`` None) or nack answering ``push``."""
    if rejected is None:
        return Ack(push.epoch, push.version)
    return Nack(push.epoch, push.version, rejected)
