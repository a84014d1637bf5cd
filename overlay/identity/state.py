"""``IdentityState``: one consistent, validated snapshot of this gateway's identity.

A state is built whole from file bytes (SVID chain, key, bundles) or not at all: any rule that
fails raises a typed :class:`~foundation.errors.IdentityError` and the caller keeps the state it
had.  It is frozen; rotation replaces the whole value (:mod:`overlay.identity.rotation`).

``overlay`` must not import ``gateway``, so the inputs are plain paths and
:class:`BundleSource` values; the gateway maps its ``[identity]`` config onto them
(``BundleSource(b.trust_domain, b.path, b.format)`` for each ``bundles`` entry).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.bundle import (
    MAX_BUNDLE_BYTES,
    Bundle,
    BundleFormat,
    BundleSet,
    parse_bundle,
    read_bounded,
)
from overlay.identity.errors import IdentityLoadError
from overlay.identity.svid import PrivateKey, X509Svid, parse_svid
from overlay.identity.tls_context import (
    build_client_context,
    build_server_context,
    peer_chain_der,
)
from overlay.identity.verify import VerifyCache, verify_peer

__all__ = [
    "BundleSource",
    "IdentityFiles",
    "IdentityState",
    "build_identity_state",
    "load_identity_state",
    "read_identity_files",
    "state_from_files",
]

MAX_SVID_FILE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class BundleSource:
    """Where the bundle of one trust domain lives, and in which format."""

    trust_domain: TrustDomain
    path: Path
    format: BundleFormat = "auto"


@dataclass(frozen=True)
class IdentityState:
    """This gateway's SVID, key, trusted bundles and the TLS contexts built from them."""

    spiffe_id: SpiffeId
    svid: X509Svid
    key: PrivateKey = field(repr=False)
    bundles: BundleSet
    server_ctx: ssl.SSLContext = field(repr=False, compare=False)
    client_ctx: ssl.SSLContext = field(repr=False, compare=False)
    digest: bytes = field(default=b"", repr=False)  # of the input bytes; detects real change
    verify_cache: VerifyCache = field(default_factory=VerifyCache, repr=False, compare=False)

    def handshake_peer_id(self, ssl_object: ssl.SSLObject) -> SpiffeId | None:
        """The SPIFFE ID of the peer of a finished handshake, or None when it presented no
        certificate.  OpenSSL has checked the chain against every trusted anchor; this checks
        it again strictly against the bundle of the peer's *own* trust domain (raises
        :class:`~overlay.identity.errors.PeerRejected` when that does not hold), so one
        domain's CA can never vouch for another's IDs.  One place for every listener that
        names its callers by SVID."""
        presented, verified = peer_chain_der(ssl_object)
        if not presented:
            return None
        peer = verify_peer(
            presented,
            bundles=self.bundles,
            now=dt.datetime.now(dt.UTC),
            openssl_chain=verified,
            cache=self.verify_cache,
        )
        return peer.spiffe_id


def build_identity_state(
    svid_pem: bytes, key_pem: bytes, bundles: BundleSet, *, now: dt.datetime
) -> IdentityState:
    """Validate our own SVID (leaf + signing-CA rules, key match) and build both contexts."""
    svid, key = parse_svid(svid_pem, key_pem, now=now)
    h = hashlib.sha256(svid_pem + b"\0" + key_pem)
    for td in sorted(bundles):
        h.update(td.name.encode() + b"\0")
        for der in sorted(bundles[td].anchor_ders):
            h.update(len(der).to_bytes(4, "big") + der)
    return IdentityState(
        spiffe_id=svid.spiffe_id,
        svid=svid,
        key=key,
        bundles=bundles,
        server_ctx=build_server_context(svid, key, bundles),
        client_ctx=build_client_context(svid, key, bundles),
        digest=h.digest(),
    )


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    """The raw bytes of every identity file, read once so they are checked as one snapshot."""

    svid_pem: bytes
    key_pem: bytes
    bundles: tuple[tuple[BundleSource, bytes], ...]

    def digest(self) -> bytes:
        h = hashlib.sha256()
        for part in (self.svid_pem, self.key_pem, *(b for _, b in self.bundles)):
            h.update(len(part).to_bytes(8, "big") + part)
        return h.digest()


def read_identity_files(
    svid_path: Path, key_path: Path, bundles: Sequence[BundleSource]
) -> IdentityFiles:
    """Read every file with a size bound; ``IdentityLoadError`` names the file that failed."""

    def read(path: Path, limit: int) -> bytes:
        try:
            with path.open("rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise IdentityLoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise IdentityLoadError(f"{path}: larger than the {limit}-byte limit")
        return data

    return IdentityFiles(
        read(svid_path, MAX_SVID_FILE_BYTES),
        read(key_path, MAX_SVID_FILE_BYTES),
        tuple((b, read_bounded(b.path, MAX_BUNDLE_BYTES)) for b in bundles),
    )


def state_from_files(files: IdentityFiles, *, now: dt.datetime) -> IdentityState:
    parsed: list[Bundle] = [
        parse_bundle(src.trust_domain, data, src.format, what=str(src.path))
        for src, data in files.bundles
    ]
    state = build_identity_state(files.svid_pem, files.key_pem, BundleSet(parsed), now=now)
    return replace(state, digest=files.digest(), verify_cache=VerifyCache())


def load_identity_state(
    svid_path: Path,
    key_path: Path,
    bundles: Sequence[BundleSource],
    *,
    now: dt.datetime | None = None,
) -> IdentityState:
    """Read and validate the identity files (as SPIRE agent / spiffe-helper write them)."""
    files = read_identity_files(svid_path, key_path, bundles)
    return state_from_files(files, now=now or dt.datetime.now(dt.UTC))
