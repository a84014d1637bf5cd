"""Federation wire messages and their strict, size-limited codec.

Wire format
-----------
The export travels on one long-lived HTTP/2 stream per link as a sequence of frames.  Each
frame is a 4-byte unsigned big-endian length followed by that many bytes of UTF-8 JSON holding
exactly one object (gRPC-style length prefixing: the receiver knows a frame is oversized from
its first four bytes and never buffers it).  The default limit is 4 MiB per frame.  Objects
have a ``type`` and a closed set of keys -- unknown, missing or duplicate keys, wrong types,
``NaN``/``Infinity``, booleans posing as integers, invalid names or SPIFFE IDs are all
rejected with :class:`FederationProtocolError`, and the stream is torn down (a peer that
sends garbage is disconnected; the protocol's *version* lives in the stream's request path, so
a closed key set does not block upgrades)::

    {"type":"snapshot","origin_site":S,"epoch":E,"version":V,"final":B,"services":[SVC...]}
    {"type":"delta","origin_site":S,"epoch":E,"base_version":V0,"version":V,
     "upserts":[SVC...],"removals":[{"name":N,"namespace":NS}...]}
    {"type":"ack","epoch":E,"version":V}
    {"type":"nack","epoch":E,"version":V,"reason":R}
    SVC = {"name":N,"namespace":NS,"protocols":[P...],"healthy":H,"total":T,
           "capacity":C,"spiffe_ids":[ID...]}
    SVC (version 2) = the same, plus "routes":[TEXT...] when the service has routes

Version 2 (the stream path ``/isthmus.federation.v2/export``) adds the owner's ``[[routes]]``
for the service: each a string holding one route as canonical JSON (the TOML keys of
``[[routes]]``).  This layer checks only their shape (a list of strings); what a route says is
validated by the importing gateway, route by route, with its own config loader.  A version-1
stream never carries the key (a version-1 peer would refuse it), so an exporter speaks
version 1 to a peer that does not answer the version-2 path.

An exporter picks a fresh random ``epoch`` each time it starts; ``version`` counts up from 1
within an epoch.  A snapshot may be split into parts (same epoch and version, ``final`` false
on all but the last) so that no frame exceeds the limit; the importer applies it atomically at
the final part.  Every snapshot and delta is answered by an ack or a nack.  The state machines
are :class:`~overlay.federation.export.ExportSession` (sender) and
:class:`~overlay.federation.import_.ImportSession` (receiver).
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from discovery.model import PROTOCOLS, Protocol, ServiceName
from foundation.errors import H2_PROTOCOL_ERROR, UpstreamError
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId, SpiffeIdError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_INT = 2**63 - 1
MAX_EPOCH_CHARS = 64
MAX_REASON_CHARS = 1024
_HEADER = struct.Struct(">I")
_EPOCH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class FederationProtocolError(UpstreamError):
    """A peer sent a federation frame we refuse (malformed, oversized, out of protocol).

    An :class:`~foundation.errors.UpstreamError` because the peer gateway failed us; the
    stream is reset with ``PROTOCOL_ERROR`` and the link re-established with backoff.
    """

    h2_error_code = H2_PROTOCOL_ERROR


@dataclass(frozen=True, slots=True)
class ExportedService:
    """One service as a peer sees it: an aggregate, never endpoint addresses.

    Tuples are sorted (protocols in :data:`~discovery.model.PROTOCOLS` order, SPIFFE IDs by
    their string form) and duplicate-free, so equal services compare equal on both sides.
    """

    service: ServiceName
    protocols: tuple[Protocol, ...]
    healthy_count: int
    total_count: int
    capacity: int
    spiffe_ids: tuple[SpiffeId, ...] = ()
    #: The owner's routes for the service's addresses, as canonical JSON texts in config
    #: order (protocol version 2; always empty on version 1).
    routes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The exporter's whole view (or one part of it, when ``final`` is false)."""

    origin_site: str
    epoch: str
    version: int
    services: tuple[ExportedService, ...]
    final: bool = True


@dataclass(frozen=True, slots=True)
class Delta:
    """Changes taking the importer from ``base_version`` to ``version`` within ``epoch``."""

    origin_site: str
    epoch: str
    base_version: int
    version: int
    upserts: tuple[ExportedService, ...]
    removals: tuple[ServiceName, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """The importer holds ``version`` (cumulative: every earlier version too)."""

    epoch: str
    version: int


@dataclass(frozen=True, slots=True)
class Nack:
    """The importer could not apply ``version``; the exporter must resend a full snapshot."""

    epoch: str
    version: int
    reason: str


Message = Snapshot | Delta | Ack | Nack


# --- encoding --------------------------------------------------------------------------------


def _service_json(svc: ExportedService) -> dict[str, Any]:
    out = {
        "name": svc.service.name,
        "namespace": svc.service.namespace,
        "protocols": list(svc.protocols),
        "healthy": svc.healthy_count,
        "total": svc.total_count,
        "capacity": svc.capacity,
        "spiffe_ids": [str(i) for i in svc.spiffe_ids],
    }
    if svc.routes:  # version 2 only: a version-1 exporter never attaches routes
        out["routes"] = list(svc.routes)
    return out


def _text_wire_bound(text: str) -> int:
    # ASCII-only (canonical JSON with ensure_ascii); only quotes and backslashes grow.
    return len(text) + text.count('"') + text.count("\\") + 3


def wire_size_bound(item: ExportedService | ServiceName) -> int:
    """An upper bound on the bytes ``item`` (an upsert or a removal) takes inside a frame,
    comma included.  Exact up to a few bytes: every string in it is ASCII that JSON does not
    escape (DNS labels, protocol names, SPIFFE IDs), so no string grows when encoded."""
    if isinstance(item, ServiceName):
        return 32 + len(item.name) + len(item.namespace)
    return (
        100
        + len(item.service.name)
        + len(item.service.namespace)
        + len(str(item.healthy_count))
        + len(str(item.total_count))
        + len(str(item.capacity))
        + sum(len(p) + 3 for p in item.protocols)
        + sum(len(str(i)) + 3 for i in item.spiffe_ids)
        + (12 + sum(_text_wire_bound(r) for r in item.routes) if item.routes else 0)
    )


def message_json(msg: Message) -> dict[str, Any]:
    """The JSON object for ``msg`` (before framing)."""
    if isinstance(msg, Snapshot):
        return {
            "type": "snapshot",
            "origin_site": msg.origin_site,
            "epoch": msg.epoch,
            "version": msg.version,
            "final": msg.final,
            "services": [_service_json(s) for s in msg.services],
        }
    if isinstance(msg, Delta):
        return {
            "type": "delta",
            "origin_site": msg.origin_site,
            "epoch": msg.epoch,
            "base_version": msg.base_version,
            "version": msg.version,
            "upserts": [_service_json(s) for s in msg.upserts],
            "removals": [{"name": r.name, "namespace": r.namespace} for r in msg.removals],
        }
    if isinstance(msg, Ack):
        return {"type": "ack", "epoch": msg.epoch, "version": msg.version}
    return {"type": "nack", "epoch": msg.epoch, "version": msg.version, "reason": msg.reason}


def encode_message(msg: Message, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """One frame: 4-byte big-endian length + compact JSON.  Refuses to exceed the limit."""
    return encode_frame(message_json(msg), type(msg).__name__, max_message_bytes=max_message_bytes)


def encode_frame(obj: dict[str, Any], what: str, *, max_message_bytes: int) -> bytes:
    """One frame holding the JSON object ``obj`` (``what`` names it in the error).  Shared with
    the other streams that speak this framing (the fleet document's push)."""
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()
    if len(body) > max_message_bytes:
        raise FederationProtocolError(
            f"{what} of {len(body)} bytes exceeds the {max_message_bytes}-byte limit"
        )
    return _HEADER.pack(len(body)) + body


# --- decoding --------------------------------------------------------------------------------


def _fail(what: str) -> NoReturn:
    raise FederationProtocolError(f"malformed federation message: {what}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        _fail("an object repeats a key")
    return out


def _no_constants(name: str) -> NoReturn:
    _fail(f"{name} is not allowed")


def _keys(obj: Any, keys: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        _fail(f"{what} must be an object")
    if obj.keys() != keys:
        missing = sorted(keys - obj.keys())
        extra = sorted(obj.keys() - keys)
        _fail(f"{what}: missing keys {missing}, unknown keys {extra}")
    return obj


def _int(value: Any, what: str, *, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value <= MAX_INT:
        _fail(f"{what} must be an integer in {minimum}..{MAX_INT}")
    return value


def _label(value: Any, what: str) -> str:
    if not isinstance(value, str):
        _fail(f"{what} must be a string")
    problem = label_problem(value)
    if problem:
        _fail(f"{what}: {problem}")
    return value


def check_epoch(value: Any) -> str:
    """An epoch is 1..64 characters of ``[A-Za-z0-9_-]`` (e.g. ``secrets.token_hex(8)``)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_EPOCH_CHARS:
        _fail(f"epoch must be a string of 1..{MAX_EPOCH_CHARS} characters")
    if not _EPOCH_CHARS.issuperset(value):
        _fail("epoch has characters outside [A-Za-z0-9_-]")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(f"{what} must be a list")
    return value


_SERVICE_KEYS = frozenset(
    ("name", "namespace", "protocols", "healthy", "total", "capacity", "spiffe_ids")
)
_SERVICE_KEYS_V2 = _SERVICE_KEYS | {"routes"}
_NAME_KEYS = frozenset(("name", "namespace"))
_ORDER = {p: i for i, p in enumerate(PROTOCOLS)}


def _service_name(obj: Any, what: str) -> ServiceName:
    d = _keys(obj, _NAME_KEYS, what)
    return ServiceName(
        _label(d["name"], f"{what}.name"), _label(d["namespace"], f"{what}.namespace")
    )


@functools.lru_cache(maxsize=1 << 16)
def _spiffe_id(raw: str) -> SpiffeId:
    # Peers resend the same IDs in every snapshot and delta; parsing is the decoder's hot spot.
    return SpiffeId.parse(raw)


def _route_texts(value: Any, name: ServiceName) -> tuple[str, ...]:
    texts = _list(value, f"{name}: routes")
    if not texts or not all(isinstance(t, str) and t.isascii() for t in texts):
        _fail(f"{name}: routes must be a non-empty list of ASCII strings")
    return tuple(texts)


def _service(obj: Any, routes: bool = False) -> ExportedService:
    if routes and isinstance(obj, dict) and "routes" in obj:
        d = _keys(obj, _SERVICE_KEYS_V2, "service")
    else:
        d = _keys(obj, _SERVICE_KEYS, "service")
    name = ServiceName(
        _label(d["name"], "service.name"), _label(d["namespace"], "service.namespace")
    )
    protocols: set[Protocol] = set()
    for p in _list(d["protocols"], "service.protocols"):
        if p not in _ORDER or p in protocols:
            _fail(f"{name}: unknown or repeated protocol {p!r}")
        protocols.add(p)
    total = _int(d["total"], "service.total", minimum=1)
    healthy = _int(d["healthy"], "service.healthy")
    if healthy > total:
        _fail(f"{name}: healthy {healthy} exceeds total {total}")
    if not protocols:
        _fail(f"{name}: no protocols")
    ids: set[SpiffeId] = set()
    for raw in _list(d["spiffe_ids"], "service.spiffe_ids"):
        if not isinstance(raw, str):
            _fail(f"{name}: a SPIFFE ID must be a string")
        try:
            sid = _spiffe_id(raw)
        except SpiffeIdError as exc:
            _fail(f"{name}: {exc}")
        if sid in ids:
            _fail(f"{name}: repeated SPIFFE ID {raw!r}")
        ids.add(sid)
    return ExportedService(
        service=name,
        protocols=tuple(sorted(protocols, key=_ORDER.__getitem__)),
        healthy_count=healthy,
        total_count=total,
        capacity=_int(d["capacity"], "service.capacity"),
        spiffe_ids=tuple(sorted(ids, key=str)),
        routes=_route_texts(d["routes"], name) if "routes" in d else (),
    )


def _services(value: Any, what: str, routes: bool) -> tuple[ExportedService, ...]:
    out = tuple(_service(s, routes) for s in _list(value, what))
    if len({s.service for s in out}) != len(out):
        _fail(f"{what} names a service twice")
    return out


_SNAPSHOT_KEYS = frozenset(("type", "origin_site", "epoch", "version", "final", "services"))
_DELTA_KEYS = frozenset(
    ("type", "origin_site", "epoch", "base_version", "version", "upserts", "removals")
)
_ACK_KEYS = frozenset(("type", "epoch", "version"))
_NACK_KEYS = frozenset(("type", "epoch", "version", "reason"))


def message_from_json(obj: Any, *, routes: bool = False) -> Message:
    """Validate one decoded JSON object into a message (strict; see the module docstring).

    ``routes``: the stream is protocol version 2, whose services may carry routes."""
    if not isinstance(obj, dict):
        _fail("a frame must hold a JSON object")
    kind = obj.get("type")
    if kind == "snapshot":
        d = _keys(obj, _SNAPSHOT_KEYS, "snapshot")
        if type(d["final"]) is not bool:
            _fail("snapshot.final must be a boolean")
        return Snapshot(
            origin_site=_label(d["origin_site"], "origin_site"),
            epoch=check_epoch(d["epoch"]),
            version=_int(d["version"], "version", minimum=1),
            services=_services(d["services"], "services", routes),
            final=d["final"],
        )
    if kind == "delta":
        d = _keys(obj, _DELTA_KEYS, "delta")
        base = _int(d["base_version"], "base_version", minimum=1)
        version = _int(d["version"], "version", minimum=1)
        if version <= base:
            _fail(f"delta version {version} is not after its base {base}")
        upserts = _services(d["upserts"], "upserts", routes)
        removals = tuple(_service_name(r, "removal") for r in _list(d["removals"], "removals"))
        names = {s.service for s in upserts}
        if len(set(removals)) != len(removals) or names.intersection(removals):
            _fail("delta removes a service twice or both upserts and removes it")
        return Delta(
            origin_site=_label(d["origin_site"], "origin_site"),
            epoch=check_epoch(d["epoch"]),
            base_version=base,
            version=version,
            upserts=upserts,
            removals=removals,
        )
    if kind == "ack":
        d = _keys(obj, _ACK_KEYS, "ack")
        return Ack(check_epoch(d["epoch"]), _int(d["version"], "version", minimum=1))
    if kind == "nack":
        d = _keys(obj, _NACK_KEYS, "nack")
        reason = d["reason"]
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            _fail(f"nack.reason must be a string of at most {MAX_REASON_CHARS} characters")
        return Nack(check_epoch(d["epoch"]), _int(d["version"], "version", minimum=1), reason)
    _fail(f"unknown message type {kind!r}")


def load_json_body(body: bytes) -> Any:
    """One frame's JSON (strict: no repeated keys, no ``NaN``/``Infinity``), not yet typed."""
    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except FederationProtocolError:
        raise
    except (
        ValueError,
        RecursionError,
    ) as exc:  # JSONDecodeError/UnicodeDecodeError are ValueErrors
        raise FederationProtocolError(f"malformed federation message: {exc}") from None


def decode_body(body: bytes, *, routes: bool = False) -> Message:
    """Decode one frame's body (without the length prefix); ``routes``: protocol version 2."""
    return message_from_json(load_json_body(body), routes=routes)


class FrameReader:
    """Incremental, bounded frame splitter (sans-IO: feed bytes, get decoded frames).

    Buffers at most one partial frame, i.e. ``4 + max_message_bytes`` bytes beyond what the
    caller has just fed.  ``decode`` turns each body into a message; after an error (an
    oversized frame, a body ``decode`` refuses) the reader stays broken: the stream must be
    closed.  The federation uses :class:`FrameDecoder`; other streams with this framing (the
    fleet document's push) pass their own ``decode``.
    """

    def __init__(
        self, decode: Callable[[bytes], Any], *, max_message_bytes: int = MAX_MESSAGE_BYTES
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self._decode = decode
        self._buffer = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> list[Any]:
        """Add received bytes; return every message they complete, in order."""
        if self._broken:
            raise FederationProtocolError("federation stream already failed")
        self._buffer += data
        out: list[Any] = []
        pos = 0
        try:
            while len(self._buffer) - pos >= _HEADER.size:
                (length,) = _HEADER.unpack_from(self._buffer, pos)
                if length > self.max_message_bytes:
                    raise FederationProtocolError(
                        f"frame of {length} bytes exceeds the {self.max_message_bytes}-byte limit"
                    )
                start = pos + _HEADER.size
                if len(self._buffer) < start + length:
                    break
                out.append(self._decode(bytes(self._buffer[start : start + length])))
                pos = start + length
        except FederationProtocolError:
            self._broken = True
            self._buffer.clear()
            raise
        del self._buffer[:pos]
        return out

    def close(self) -> None:
        """The stream ended: a partial frame left over is an error."""
        if self._buffer:
            self._broken = True
            raise FederationProtocolError(
                f"federation stream ended inside a frame ({len(self._buffer)} bytes left)"
            )

    @property
    def buffered(self) -> int:
        return len(self._buffer)


class FrameDecoder(FrameReader):
    """:class:`FrameReader` of federation messages (snapshots, deltas, acks, nacks)."""

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES, routes: bool = False) -> None:
        self.routes = routes  # protocol version 2: services may carry routes
        super().__init__(self._body, max_message_bytes=max_message_bytes)

    def _body(self, body: bytes) -> Message:
        return decode_body(body, routes=self.routes)

    def feed(self, data: bytes) -> list[Message]:
        return super().feed(data)


def encode_all(messages: Iterable[Message], *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Frames for several messages, concatenated (convenience for tests and batching)."""
    return b"".join(encode_message(m, max_message_bytes=max_message_bytes) for m in messages)
