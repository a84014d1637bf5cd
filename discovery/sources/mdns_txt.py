"""Pure mapping of DNS-SD records (SRV, A/AAAA, TXT) to catalog endpoints, and back.

Why a separate module: everything a hostile publisher on the local link controls -- the
instance name, the SRV port and target, the address records, the TXT bytes -- passes through
these functions and nothing else.  They are plain, synchronous and never import trio or
zeroconf, so unit and property tests can throw arbitrary bytes at them.

TXT keys (RFC 6763 section 6: ``key=value`` strings, keys case-insensitive, first occurrence
wins, unknown keys ignored)
-----------------------------------------------------------------------------------------------
==========  ===========================================  =======================================
key         value                                        default when absent
==========  ===========================================  =======================================
``svc``     service name, a DNS label (``api``)          the instance label, lower-cased, which
                                                         must then itself be a DNS label
``ns``      namespace, a DNS label (``payments``)        the source's ``default_namespace``
``proto``   ``http1`` | ``http2`` | ``tcp`` | ``tls``    ``http1``
``spiffe``  SPIFFE ID (``spiffe://td/ns/x/sa/y``),       none
            validated by :mod:`foundation.spiffe_id`
``weight``  integer 1..65535 (decimal digits only)       ``1``
``locality``  ``[A-Za-z0-9._/-]``, at most 128 bytes     ``""``
            (``eu-west-1/eu-west-1a``)
``health``  ``passing`` | ``critical`` | ``maintenance``  ``passing`` (only ``passing`` is
                                                         routable)
``txtvers`` ignored (RFC 6763 section 6.7)
==========  ===========================================  =======================================

Service name: several replicas of one service need distinct instance names on the link (mDNS
renames clashes to ``api (2)``), so the instance label cannot be the service name in general.
Publishers set ``svc=api`` and pick any unique instance label (``api-7f3c``).  Without ``svc``
the lower-cased instance label is the service name -- a convenience for one-replica services
such as ``api._isthmus._tcp.local.`` -- and an instance label that is not a DNS label is then
an error.

Other TXT keys with printable ASCII keys and UTF-8 values are kept as endpoint metadata
``txt.<key>`` (at most :data:`MAX_METADATA_KEYS`, in TXT order); the instance name and SRV
target are kept as ``mdns.instance`` and ``mdns.host``.

Address choice: one DNS-SD instance is *one* endpoint (so its weight is not counted twice).
Unspecified, multicast and link-local IPv6 addresses (unusable without a zone) are dropped;
IPv4 is preferred to IPv6; among the rest the numerically lowest wins, so the choice is stable.

Hostile input: a TXT record larger than ``max_txt_bytes``, a length byte that runs past the
end, a known key with a bad value or invalid UTF-8, SRV port 0 or out of range, an empty SRV
target, no usable address: each raises a :class:`MdnsRecordError` subclass naming the instance;
the caller logs it and skips that instance only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from discovery.model import PROTOCOLS, Endpoint, Protocol, ServiceName
from foundation.errors import DiscoveryError
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId, SpiffeIdError

MAX_TXT_BYTES = 4096
MAX_METADATA_KEYS = 16
MAX_LOCALITY_BYTES = 128
KNOWN_KEYS = frozenset({"svc", "ns", "proto", "spiffe", "weight", "locality", "health", "txtvers"})
HEALTH_VALUES = {"passing": True, "critical": False, "maintenance": False}
_WEIGHT = re.compile(r"^[0-9]{1,5}$")
_LOCALITY = re.compile(r"^[A-Za-z0-9._/-]*$")


class MdnsRecordError(DiscoveryError):
    """One DNS-SD instance's records cannot become an endpoint; that instance is skipped."""

    def __init__(self, instance: str, reason: str) -> None:
        super().__init__(f"mDNS instance {instance[:300]!r}: {reason}")
        self.instance = instance
        self.reason = reason


class TxtTooLarge(MdnsRecordError):
    """The TXT record is larger than the configured bound."""


class TxtMalformed(MdnsRecordError):
    """The TXT record's length-prefixed strings do not add up."""


class TxtValueInvalid(MdnsRecordError):
    """A known TXT key carries a value we refuse (bad UTF-8, out of range, not a label...)."""

    def __init__(self, instance: str, key: str, reason: str) -> None:
        super().__init__(instance, f"TXT key {key!r}: {reason}")
        self.key = key


class InstanceNameInvalid(MdnsRecordError):
    """No service name can be derived (no ``svc`` key and the label is not a DNS label)."""


class SrvInvalid(MdnsRecordError):
    """The SRV record is missing or carries an unusable port or target."""


class NoUsableAddress(MdnsRecordError):
    """None of the host's A/AAAA records is an address a caller could connect to."""


class InstanceLimitExceeded(MdnsRecordError):
    """The source already tracks its maximum number of instances; this one is ignored."""


@dataclass(frozen=True, slots=True)
class MdnsObservation:
    """What zeroconf's cache says about one instance at one moment (plain data, untrusted)."""

    instance: str  # full instance name, e.g. "api-1._isthmus._tcp.local."
    service_type: str  # e.g. "_isthmus._tcp.local."
    port: int | None  # SRV port; None when no SRV record is cached
    server: str | None  # SRV target host name
    addresses: tuple[str, ...]  # textual A/AAAA addresses of the SRV target
    txt: bytes  # raw TXT RDATA (length-prefixed strings)


def parse_txt(
    instance: str, txt: bytes, *, max_bytes: int = MAX_TXT_BYTES
) -> dict[str, bytes | None]:
    """Split TXT RDATA into ``{lower-cased key: value}`` following RFC 6763 section 6.

    A string without ``=`` is a boolean attribute (value None); empty strings and strings
    starting with ``=`` are ignored; keys that are not printable US-ASCII are ignored; only the
    first occurrence of a key counts.
    """
    if len(txt) > max_bytes:
        raise TxtTooLarge(instance, f"TXT record is {len(txt)} bytes (limit {max_bytes})")
    out: dict[str, bytes | None] = {}
    i = 0
    while i < len(txt):
        n = txt[i]
        i += 1
        if i + n > len(txt):
            raise TxtMalformed(
                instance, f"TXT string at offset {i - 1} claims {n} bytes, {len(txt) - i} remain"
            )
        item = txt[i : i + n]
        i += n
        raw_key, eq, value = item.partition(b"=")
        if not raw_key or not all(0x20 <= b <= 0x7E for b in raw_key):
            continue
        key = raw_key.decode("ascii").lower()
        if key not in out:
            out[key] = value if eq else None
    return out


def encode_txt(properties: Mapping[str, str]) -> bytes:
    """Encode ``{key: value}`` as TXT RDATA (the inverse of :func:`parse_txt` for valid input)."""
    chunks: list[bytes] = []
    for key, value in properties.items():
        item = f"{key}={value}".encode()
        if len(item) > 255:
            raise ValueError(f"TXT string for key {key!r} is longer than 255 bytes")
        if not key or "=" in key or not all(0x20 <= ord(c) <= 0x7E for c in key):
            raise ValueError(f"{key!r} is not a valid TXT key")
        chunks.append(bytes([len(item)]) + item)
    return b"".join(chunks) or b"\x00"


def instance_label(instance: str, service_type: str) -> str:
    """The instance label: the full instance name without ``.<service type>``."""
    suffix = "." + service_type
    if not instance.lower().endswith(suffix.lower()) or len(instance) <= len(suffix):
        raise InstanceNameInvalid(instance, f"name is not an instance of {service_type!r}")
    return instance[: -len(suffix)]


def choose_address(instance: str, addresses: tuple[str, ...]) -> str:
    """Pick the one address the endpoint is reached at (see the module docstring)."""
    usable: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in addresses:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        if addr.is_unspecified or addr.is_multicast:
            continue
        if isinstance(addr, ipaddress.IPv6Address) and (addr.is_link_local or addr.scope_id):
            continue
        usable.append(addr)
    if not usable:
        raise NoUsableAddress(instance, f"no usable address among {list(addresses)[:8]!r}")
    best = min(usable, key=lambda a: (a.version, int(a)))
    return str(best)


def _text(instance: str, key: str, value: bytes | None) -> str:
    if value is None:
        raise TxtValueInvalid(instance, key, "needs a value (key=value)")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise TxtValueInvalid(instance, key, "value is not valid UTF-8") from None


def _label_value(instance: str, key: str, value: bytes | None) -> str:
    text = _text(instance, key, value)
    problem = label_problem(text)
    if problem is not None:
        raise TxtValueInvalid(instance, key, problem)
    return text


def _metadata(
    obs: MdnsObservation, props: Mapping[str, bytes | None]
) -> tuple[tuple[str, str], ...]:
    meta = [("mdns.instance", obs.instance)]
    if obs.server:
        meta.append(("mdns.host", obs.server))
    extra = 0
    for key, value in props.items():
        if key in KNOWN_KEYS or extra >= MAX_METADATA_KEYS:
            continue
        try:
            text = "" if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            continue  # unknown key: not ours to reject, but not worth keeping garbled
        if not text.isprintable():
            continue
        meta.append((f"txt.{key}", text))
        extra += 1
    return tuple(sorted(meta))


def endpoint_from_observation(
    obs: MdnsObservation, *, default_namespace: str, max_txt_bytes: int = MAX_TXT_BYTES
) -> Endpoint:
    """Map one instance's records to an :class:`Endpoint`, or raise :class:`MdnsRecordError`."""
    label = instance_label(obs.instance, obs.service_type)
    if obs.port is None or obs.server is None:
        raise SrvInvalid(obs.instance, "no SRV record")
    if not 1 <= obs.port <= 65535:
        raise SrvInvalid(obs.instance, f"SRV port {obs.port} is not in 1..65535")
    if not obs.server.strip("."):
        raise SrvInvalid(obs.instance, "SRV target is empty")
    props = parse_txt(obs.instance, obs.txt, max_bytes=max_txt_bytes)
    address = choose_address(obs.instance, obs.addresses)

    if "svc" in props:
        name = _label_value(obs.instance, "svc", props["svc"])
    else:
        name = label.lower()
        problem = label_problem(name)
        if problem is not None:
            raise InstanceNameInvalid(
                obs.instance, f"no 'svc' TXT key and the instance label {problem}"
            )
    namespace = (
        _label_value(obs.instance, "ns", props["ns"]) if "ns" in props else default_namespace
    )

    protocol: Protocol = "http1"
    if "proto" in props:
        proto_text = _text(obs.instance, "proto", props["proto"])
        matched = [p for p in PROTOCOLS if p == proto_text]
        if not matched:
            raise TxtValueInvalid(
                obs.instance, "proto", f"{proto_text[:64]!r} is not one of {', '.join(PROTOCOLS)}"
            )
        protocol = matched[0]

    spiffe_id: SpiffeId | None = None
    if "spiffe" in props:
        try:
            spiffe_id = SpiffeId.parse(_text(obs.instance, "spiffe", props["spiffe"]))
        except SpiffeIdError as exc:
            raise TxtValueInvalid(obs.instance, "spiffe", str(exc)[:300]) from None

    weight = 1
    if "weight" in props:
        weight_text = _text(obs.instance, "weight", props["weight"])
        if not _WEIGHT.match(weight_text) or not 1 <= int(weight_text) <= 65535:
            raise TxtValueInvalid(
                obs.instance, "weight", f"{weight_text[:64]!r} is not an integer in 1..65535"
            )
        weight = int(weight_text)

    locality = ""
    if "locality" in props:
        locality = _text(obs.instance, "locality", props["locality"])
        if len(locality.encode()) > MAX_LOCALITY_BYTES or not _LOCALITY.match(locality):
            raise TxtValueInvalid(
                obs.instance,
                "locality",
                f"must be at most {MAX_LOCALITY_BYTES} bytes of [A-Za-z0-9._/-]",
            )

    healthy = True
    if "health" in props:
        health_text = _text(obs.instance, "health", props["health"])
        if health_text not in HEALTH_VALUES:
            raise TxtValueInvalid(
                obs.instance,
                "health",
                f"{health_text[:64]!r} is not one of {', '.join(HEALTH_VALUES)}",
            )
        healthy = HEALTH_VALUES[health_text]

    return Endpoint(
        service=ServiceName(name, namespace),
        address=address,
        port=obs.port,
        protocol=protocol,
        healthy=healthy,
        weight=weight,
        spiffe_id=spiffe_id,
        locality=locality,
        metadata=_metadata(obs, props),
    )


def txt_for_endpoint(
    *,
    service: str,
    namespace: str,
    protocol: Protocol = "http1",
    spiffe_id: SpiffeId | None = None,
    weight: int = 1,
    locality: str = "",
    healthy: bool = True,
) -> dict[str, str]:
    """The TXT properties an announcer publishes so that this module maps them back exactly."""
    props = {"txtvers": "1", "svc": service, "ns": namespace, "proto": protocol}
    if spiffe_id is not None:
        props["spiffe"] = str(spiffe_id)
    props["weight"] = str(weight)
    if locality:
        props["locality"] = locality
    props["health"] = "passing" if healthy else "critical"
    return props
