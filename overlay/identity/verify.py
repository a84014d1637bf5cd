"""Per-trust-domain verification of a peer's chain, after the TLS handshake.

Theory of operation
-------------------
OpenSSL has already checked the chain against the *pooled* anchors of every bundle, which cannot
tell trust domains apart: a CA of trust domain A could sign a leaf claiming
``spiffe://b/...`` and OpenSSL would accept it.  :func:`verify_peer` closes that hole:

1. parse the presented chain (leaf first) and apply the X509-SVID leaf rules
   (:func:`overlay.identity.svid.check_leaf`) - this yields the claimed SPIFFE ID;
2. look up the bundle of **that ID's trust domain only**: unknown domain -> reject, empty bundle
   -> reject;
3. verify the chain again with cryptography's path builder against a store holding only that
   bundle's anchors (signatures, validity at ``now``, path length, name constraints);
4. apply the signing-CA rules to every intermediate of the built path, and the lenient anchor
   rules to its root;
5. if OpenSSL's verified chain is known, its root must also be an anchor of that same bundle:
   OpenSSL's own path, not just ours, has to end in the peer's trust domain.

Steps 1-4 are a pure function of (presented bytes, bundle, now); :class:`VerifyCache` memoises
their success per identity state, re-checking only the validity window on a hit, because
gateways reconnect with the same SVID for its whole life and a path build costs as much as an
ECDSA verification.  Step 5 runs on every handshake.

The result, :class:`VerifiedPeer`, records which anchor vouched for the peer, so a later bundle
rotation can tell whether the link is still trusted (:func:`revocation_reason`).

cryptography's verifier rejects URI name constraints (SPIFFE 4.2 allows but does not require
them); a CA that uses them is therefore rejected here - fail closed, and documented.

Authorization is a separate, explicit step (:func:`check_expected`): a verified identity is not
yet an allowed one.  Nothing here imports trio; ``now`` is always an argument.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification as xv

from foundation.spiffe_id import SpiffeId
from overlay.identity.bundle import Bundle, BundleSet
from overlay.identity.errors import NotAuthorized, PeerRejected
from overlay.identity.svid import MAX_CHAIN_CERTS, check_leaf, check_signing_ca, check_validity

__all__ = [
    "Authorizer",
    "VerifiedPeer",
    "VerifyCache",
    "check_expected",
    "revocation_reason",
    "verify_peer",
]

Authorizer = Callable[[SpiffeId], bool]
_DER = serialization.Encoding.DER

# cryptography insists that a CA policy requires basicConstraints; everything else the SPIFFE
# rules in svid.py decide, so the Web PKI extension profile (which would reject valid SVIDs,
# e.g. a leaf without extendedKeyUsage) is not applied.
_CA_POLICY = xv.ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, xv.Criticality.AGNOSTIC, None
)
_EE_POLICY = xv.ExtensionPolicy.permit_all()


@dataclass(frozen=True, slots=True)
class VerifiedPeer:
    """A peer whose SVID verified against its own trust domain's bundle."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]  # leaf, intermediates, anchor (as built)
    anchor_der: bytes

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


def _parse(ders: Sequence[bytes]) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(d) for d in ders]
    except ValueError as exc:
        raise PeerRejected(f"peer sent a malformed certificate: {exc}") from None


def _bundle_for(sid: SpiffeId, bundles: BundleSet) -> Bundle:
    bundle = bundles.get(sid.trust_domain)
    if bundle is None:
        raise PeerRejected(f"peer {sid}: trust domain {sid.trust_domain} is not trusted")
    if bundle.empty:
        raise PeerRejected(f"peer {sid}: the bundle of {sid.trust_domain} is empty")
    return bundle


class VerifyCache:
    """Memo of successful chain verifications: ``(chain bytes, trust domain, anchors) -> peer``.

    :func:`verify_peer` is a pure function of the presented bytes, the peer's bundle and
    ``now``; for a fixed chain and bundle only ``now`` can change the answer, and it can do so
    only by leaving the chain's common validity window, which a hit re-checks.  Gateways
    reconnect with the same SVID until it rotates, so after the first handshake the second
    (cryptography) check is a dictionary lookup.  Failures are never cached.  Bounded: the
    oldest entry goes first.  One cache per identity state; a bundle rotation starts afresh.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: dict[object, tuple[VerifiedPeer, dt.datetime, dt.datetime]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: object, now: dt.datetime) -> VerifiedPeer | None:
        entry = self._entries.get(key)
        if entry is None or not entry[1] <= now <= entry[2]:
            self.misses += 1
            return None
        self.hits += 1
        return entry[0]

    def put(self, key: object, peer: VerifiedPeer) -> None:
        if self.max_entries <= 0:
            return
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        start = max(c.not_valid_before_utc for c in peer.chain)
        end = min(c.not_valid_after_utc for c in peer.chain)
        self._entries[key] = (peer, start, end)


@functools.lru_cache(maxsize=512)
def _anchor_structure(anchor: x509.Certificate) -> None:
    """The anchor rules minus validity: fixed per certificate, so checked once per anchor."""
    inside = anchor.not_valid_before_utc  # an instant inside its window; validity is separate
    check_signing_ca(anchor, now=inside, anchor=True)


def verify_peer(
    presented: Sequence[bytes],
    *,
    bundles: BundleSet,
    now: dt.datetime,
    openssl_chain: Sequence[bytes] | None = None,
    cache: VerifyCache | None = None,
) -> VerifiedPeer:
    """Verify a peer's DER chain (leaf first) against its own trust domain's bundle.

    ``openssl_chain`` is the chain OpenSSL built and verified in the handshake, if known: its
    root must be an anchor of the peer's own bundle.  The second, independent path build with
    cryptography always runs (memoised in ``cache`` when given).
    """
    if not presented:
        raise PeerRejected("peer presented no certificate")
    if len(presented) > MAX_CHAIN_CERTS:
        raise PeerRejected(f"peer chain has {len(presented)} certificates")
    key: tuple[object, ...] | None = None
    if cache is not None:
        key = (tuple(presented),)
        hit = cache.get(key, now)
        if hit is not None:
            bundle = _bundle_for(hit.spiffe_id, bundles)
            if bundle.has_anchor(hit.anchor_der):
                _check_openssl_anchor(hit.spiffe_id, bundle, openssl_chain)
                return hit
    peer = _verify(presented, bundles, now)
    _check_openssl_anchor(peer.spiffe_id, bundles[peer.spiffe_id.trust_domain], openssl_chain)
    if cache is not None and key is not None:
        cache.put(key, peer)
    return peer


def _check_openssl_anchor(
    sid: SpiffeId, bundle: Bundle, openssl_chain: Sequence[bytes] | None
) -> None:
    if openssl_chain and not bundle.has_anchor(openssl_chain[-1]):
        raise PeerRejected(
            f"peer {sid}: OpenSSL anchored the chain outside the bundle of {sid.trust_domain}"
        )


def _verify(presented: Sequence[bytes], bundles: BundleSet, now: dt.datetime) -> VerifiedPeer:
    certs = _parse(presented)
    leaf = certs[0]
    sid = check_leaf(leaf, now=now)
    bundle = _bundle_for(sid, bundles)
    intermediates = [
        c for d, c in zip(presented[1:], certs[1:], strict=True) if d not in bundle.anchor_ders
    ]
    verifier = (
        xv.PolicyBuilder()
        .store(xv.Store(list(bundle.anchors)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_CERTS)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        built = verifier.verify(leaf, intermediates).chain
    except xv.VerificationError as exc:
        td = sid.trust_domain
        issuer = _issuer_outside(certs, bundle)
        if issuer is not None:
            raise PeerRejected(
                f"peer {sid}: issuer not in the bundle of {td} ({issuer.rfc4514_string()}): "
                "the chain does not anchor there"
            ) from None
        raise PeerRejected(
            f"peer {sid}: chain does not anchor in the bundle of {td}: {exc}"
        ) from None
    for ca in built[1:-1]:
        check_signing_ca(ca, now=now)
    _anchor_structure(built[-1])
    check_validity(built[-1], now=now)
    return VerifiedPeer(sid, tuple(built), built[-1].public_bytes(_DER))


def _issuer_outside(certs: Sequence[x509.Certificate], bundle: Bundle) -> x509.Name | None:
    """The issuer name at which the presented chain leaves ``bundle``, or ``None`` when the
    names do reach one of its anchors (then the failure is something else: a bad signature, a
    validity window).  Why: a chain from another trust domain -- typically one that carries its
    own self-signed root -- makes the path builder report "chain construction exceeds max
    depth", which tells an operator nothing; "issuer not in the bundle of <td>" does.
    Follows subject/issuer names through the presented certificates (bounded by their count).
    """
    anchor_names = {a.subject for a in bundle.anchors}
    current = certs[0]
    for _ in range(len(certs)):
        if current.issuer in anchor_names:
            return None
        if current.issuer == current.subject:  # self-signed, yet not an anchor of this bundle
            return current.issuer
        parent = next((c for c in certs[1:] if c.subject == current.issuer), None)
        if parent is None:
            return current.issuer
        current = parent
    return current.issuer


def check_expected(peer: SpiffeId, expected: SpiffeId) -> None:
    """A dialer's authorization: the peer must be exactly the SPIFFE ID the config names."""
    if peer != expected:
        raise NotAuthorized(f"peer is {peer}, expected {expected}")


def revocation_reason(peer: VerifiedPeer, bundles: BundleSet) -> str | None:
    """Why a live link to ``peer`` is no longer trusted under ``bundles`` (``None``: still is)."""
    td = peer.spiffe_id.trust_domain
    bundle = bundles.get(td)
    if bundle is None:
        return f"trust domain {td} left the bundle set"
    if not bundle.has_anchor(peer.anchor_der):
        return f"the anchor that verified {peer.spiffe_id} left the bundle of {td}"
    return None
