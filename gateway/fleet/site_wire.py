"""The fleet document's push over a link: the catalog federation's framing and replies.

Why the federation's wire and not a new one: a link already carries one versioned,
acknowledged stream (the catalog export), with a strict, size-limited codec
(:mod:`overlay.federation.protocol`).  The fleet push is the same shape -- a snapshot, then
an ack or a nack -- so it reuses the framing (4-byte length + one strict JSON object), the
epoch rules, and the ``ack``/``nack`` messages as they are.  Only the pushed message is new::

    {"type":"fleet","origin_site":S,"epoch":E,"version":N,"document":TEXT}

``version`` counts the pushes of one epoch (1, 2, ...), as an export's versions do; the
document's own version (the SHA-256 of its canonical form) is computed by the receiver from
``document``, the canonical JSON text, with the same decoder as the Consul path.  A fleet
document is versioned as a whole and applied whole, so every push is a full snapshot (never a
delta).  The reply names the push (``epoch``, ``version``): an ``ack`` when the site runs the
document, a ``nack`` whose ``reason`` says why it rejected it (the old one keeps serving).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foundation.names import label_problem
from overlay.federation.protocol import (
    MAX_INT,
    Ack,
    FederationProtocolError,
    Nack,
    check_epoch,
    encode_frame,
    encode_message,
    load_json_body,
    message_from_json,
)

FLEET_PATH = "/isthmus.fleet.v1/push"
CONTENT_TYPE = "application/x-isthmus-fleet"
#: JSON escaping may grow the document up to 6x; the frame bound keeps a margin over that.
FRAME_OVERHEAD = 1024

_PUSH_KEYS = frozenset(("type", "origin_site", "epoch", "version", "document"))


@dataclass(frozen=True, slots=True)
class FleetPush:
    """One version of the fleet document, pushed by the authority site."""

    origin_site: str
    epoch: str
    version: int
    document: str  # the canonical JSON text of the document


Reply = Ack | Nack


def max_frame_bytes(max_document_bytes: int) -> int:
    return 6 * max_document_bytes + FRAME_OVERHEAD


def encode_push(push: FleetPush, *, max_document_bytes: int) -> bytes:
    obj = {
        "type": "fleet",
        "origin_site": push.origin_site,
        "epoch": push.epoch,
        "version": push.version,
        "document": push.document,
    }
    return encode_frame(obj, "fleet push", max_message_bytes=max_frame_bytes(max_document_bytes))


def encode_reply(reply: Reply) -> bytes:
    return encode_message(reply)


def _fail(what: str) -> FederationProtocolError:
    return FederationProtocolError(f"malformed fleet message: {what}")


def decode_push(body: bytes) -> FleetPush:
    """A push frame's body (strict: exactly the keys above, valid types)."""
    obj: Any = load_json_body(body)
    if not isinstance(obj, dict) or obj.get("type") != "fleet":
        raise _fail("expected a message of type 'fleet'")
    if obj.keys() != _PUSH_KEYS:
        raise _fail(f"keys {sorted(obj.keys())}, expected {sorted(_PUSH_KEYS)}")
    origin, version, document = obj["origin_site"], obj["version"], obj["document"]
    if not isinstance(origin, str) or label_problem(origin) is not None:
        raise _fail("origin_site must be a site name")
    if type(version) is not int or not 1 <= version <= MAX_INT:
        raise _fail(f"version must be an integer in 1..{MAX_INT}")
    if not isinstance(document, str):
        raise _fail("document must be a string")
    return FleetPush(origin, check_epoch(obj["epoch"]), version, document)


def decode_reply(body: bytes) -> Reply:
    """A reply frame's body: the federation's ``ack`` or ``nack``, nothing else."""
    msg = message_from_json(load_json_body(body))
    if not isinstance(msg, Ack | Nack):
        raise _fail(f"a site must answer a push with ack or nack, not {type(msg).__name__}")
    return msg
