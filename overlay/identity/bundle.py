"""Trust bundles: the X.509 anchors of ONE trust domain each, loaded as SPIRE writes them.

Theory of operation
-------------------
A :class:`Bundle` belongs to exactly one trust domain and is never merged with another: the
verifier looks a peer's chain up in the bundle of the trust domain that the peer's own SPIFFE ID
names, and only there (see :mod:`overlay.identity.verify`).  A :class:`BundleSet` is the frozen
mapping ``TrustDomain -> Bundle`` a gateway trusts at one moment; rotation swaps whole sets.

Two on-disk formats, both as written by SPIRE agent / spiffe-helper:

* **PEM**: concatenated ``CERTIFICATE`` blocks (``bundle.pem``).  A file with nothing but
  whitespace is an *empty bundle*; text that is not PEM is an error.
* **SPIFFE bundle JSON** (SPIFFE Trust Domain and Bundle standard, a JWKS): keys with
  ``"use": "x509-svid"`` contribute the first ``x5c`` entry (base64 DER); ``jwt-svid`` and other
  keys are ignored, as are x509-svid keys without ``x5c`` (X509-SVID standard 6.2).
  ``spiffe_sequence`` and ``spiffe_refresh_hint`` are kept.

``format="auto"`` decides by the first non-blank byte: ``{`` is JSON, anything else PEM.
An **empty bundle** (no anchors) is legal and rejects every SVID of its trust domain: that is how
an operator says "we know this domain and trust nothing from it right now".  Files are read with
a size bound (:data:`MAX_BUNDLE_BYTES`); every failure is a :class:`BundleError` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from foundation.spiffe_id import TrustDomain
from overlay.identity.errors import BundleError, SvidError
from overlay.identity.svid import parse_pem_certificates

__all__ = [
    "MAX_BUNDLE_BYTES",
    "Bundle",
    "BundleFormat",
    "BundleSet",
    "load_bundle",
    "parse_bundle",
    "parse_pem_bundle",
    "parse_spiffe_bundle",
    "read_bounded",
]

BundleFormat = Literal["auto", "pem", "spiffe-json"]
MAX_BUNDLE_BYTES = 1024 * 1024  # SPIRE bundles are a few KiB; 1 MiB is hostile or a mistake
MAX_ANCHORS = 256


@dataclass(frozen=True, slots=True)
class Bundle:
    """The X.509 trust anchors of one trust domain (possibly none)."""

    trust_domain: TrustDomain
    anchors: tuple[x509.Certificate, ...]
    sequence: int | None = None
    refresh_hint: int | None = None  # seconds, as spiffe_refresh_hint
    anchor_ders: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ders = frozenset(a.public_bytes(serialization.Encoding.DER) for a in self.anchors)
        object.__setattr__(self, "anchor_ders", ders)

    @property
    def empty(self) -> bool:
        return not self.anchors

    def has_anchor(self, der: bytes) -> bool:
        """Is the DER-encoded certificate ``der`` one of this bundle's anchors (exactly)?"""
        return der in self.anchor_ders

    def anchors_pem(self) -> str:
        return "".join(a.public_bytes(serialization.Encoding.PEM).decode() for a in self.anchors)


class BundleSet(Mapping[TrustDomain, Bundle]):
    """A frozen mapping ``TrustDomain -> Bundle``; at most one bundle per trust domain."""

    __slots__ = ("_map",)

    def __init__(self, bundles: Iterable[Bundle] = ()) -> None:
        out: dict[TrustDomain, Bundle] = {}
        for b in bundles:
            if b.trust_domain in out:
                raise BundleError(f"two bundles for trust domain {b.trust_domain}; never merged")
            out[b.trust_domain] = b
        self._map: Mapping[TrustDomain, Bundle] = MappingProxyType(out)

    def __getitem__(self, td: TrustDomain) -> Bundle:
        return self._map[td]

    def __iter__(self) -> Iterator[TrustDomain]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_map"):
            raise AttributeError("BundleSet is frozen")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BundleSet) and dict(self._map) == dict(other._map)

    def __hash__(self) -> int:
        return hash(frozenset(self._map.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{td}: {len(b.anchors)} anchor(s)" for td, b in self._map.items())
        return f"BundleSet({{{inner}}})"

    def all_anchors(self) -> tuple[x509.Certificate, ...]:
        """Every anchor of every bundle, for OpenSSL's pooled check (deduplicated)."""
        seen: set[bytes] = set()
        out: list[x509.Certificate] = []
        for b in self._map.values():
            for a in b.anchors:
                der = a.public_bytes(serialization.Encoding.DER)
                if der not in seen:
                    seen.add(der)
                    out.append(a)
        return tuple(out)


def parse_pem_bundle(td: TrustDomain, data: bytes, *, what: str = "bundle") -> Bundle:
    try:
        anchors = parse_pem_certificates(data, what=what)
    except SvidError as exc:
        raise BundleError(str(exc)) from None
    if not anchors and data.strip():
        raise BundleError(f"{what}: no PEM certificate found (and the file is not empty)")
    return _bundle(td, anchors, None, None, what)


def parse_spiffe_bundle(td: TrustDomain, data: bytes, *, what: str = "bundle") -> Bundle:
    """Parse a SPIFFE bundle (JWKS) document; keep the x509-svid anchors only."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{what}: a SPIFFE bundle is a JSON object")
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise BundleError(f"{what}: 'keys' must be a list")
    sequence = _opt_int(doc, "spiffe_sequence", what)
    hint = _opt_int(doc, "spiffe_refresh_hint", what)
    anchors: list[x509.Certificate] = []
    for i, key in enumerate(keys):
        if not isinstance(key, dict):
            raise BundleError(f"{what}: keys[{i}] must be an object")
        if key.get("use") != "x509-svid":
            continue  # jwt-svid keys and anything else are not X.509 anchors
        x5c = key.get("x5c")
        if x5c is None or x5c == []:
            continue  # X509-SVID 6.2: such an entry MUST be ignored
        if not isinstance(x5c, list) or not isinstance(x5c[0], str):
            raise BundleError(f"{what}: keys[{i}].x5c must be a list of base64 strings")
        try:
            der = base64.b64decode(x5c[0], validate=True)
            anchors.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError) as exc:
            raise BundleError(f"{what}: keys[{i}].x5c[0] is not a DER certificate: {exc}") from None
    return _bundle(td, tuple(anchors), sequence, hint, what)


def parse_bundle(
    td: TrustDomain, data: bytes, fmt: BundleFormat = "auto", *, what: str = "bundle"
) -> Bundle:
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{what}: {len(data)} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")
    if fmt == "auto":
        fmt = "spiffe-json" if data.lstrip()[:1] == b"{" else "pem"
    if fmt == "pem":
        return parse_pem_bundle(td, data, what=what)
    return parse_spiffe_bundle(td, data, what=what)


def read_bounded(path: Path, limit: int = MAX_BUNDLE_BYTES) -> bytes:
    """Read at most ``limit`` bytes of ``path``; a larger file is an error, not truncated."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BundleError(f"{path}: larger than the {limit}-byte limit")
    return data


def load_bundle(td: TrustDomain, path: Path, fmt: BundleFormat = "auto") -> Bundle:
    return parse_bundle(td, read_bounded(path), fmt, what=str(path))


def _opt_int(doc: Mapping[str, Any], name: str, what: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BundleError(f"{what}: {name!r} must be a non-negative integer")
    return value


def _bundle(
    td: TrustDomain,
    anchors: tuple[x509.Certificate, ...],
    sequence: int | None,
    hint: int | None,
    what: str,
) -> Bundle:
    if len(anchors) > MAX_ANCHORS:
        raise BundleError(f"{what}: {len(anchors)} anchors (limit {MAX_ANCHORS})")
    return Bundle(td, anchors, sequence, hint)
