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
5. belt and braces: if OpenSSL's verified chain is known, its root must also be an anchor of
   that same bundle.

The result, :class:`VerifiedPeer`, records which anchor vouched for the peer, so a later bundle
rotation can tell whether the link is still trusted (:func:`revocation_reason`).

cryptography's verifier rejects URI name constraints (SPIFFE 4.2 allows but does not require
them); a CA that uses them is therefore rejected here - fail closed, and documented.

Authorization is a separate, explicit step (:func:`check_expected`): a verified identity is not
yet an allowed one.  Nothing here imports trio; ``now`` is always an argument.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification as xv

from discovery.spiffe_id import SpiffeId
from overlay.identity.bundle import Bundle, BundleSet
from overlay.identity.errors import NotAuthorized, PeerRejected
from overlay.identity.svid import MAX_CHAIN_CERTS, check_leaf, check_signing_ca

__all__ = [
    "Authorizer",
    "NotAuthorized",
    "PeerRejected",
    "VerifiedPeer",
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


def verify_peer(
    presented: Sequence[bytes],
    *,
    bundles: BundleSet,
    now: dt.datetime,
    openssl_chain: Sequence[bytes] | None = None,
) -> VerifiedPeer:
    """Verify a peer's DER chain (leaf first) against its own trust domain's bundle."""
    if not presented:
        raise PeerRejected("peer presented no certificate")
    if len(presented) > MAX_CHAIN_CERTS:
        raise PeerRejected(f"peer chain has {len(presented)} certificates")
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
        raise PeerRejected(
            f"peer {sid}: chain does not anchor in the bundle of {sid.trust_domain}: {exc}"
        ) from None
    for ca in built[1:-1]:
        check_signing_ca(ca, now=now)
    check_signing_ca(built[-1], now=now, anchor=True)
    anchor_der = built[-1].public_bytes(_DER)
    if openssl_chain and not bundle.has_anchor(openssl_chain[-1]):
        raise PeerRejected(
            f"peer {sid}: OpenSSL anchored the chain outside the bundle of {sid.trust_domain}"
        )
    return VerifiedPeer(sid, tuple(built), anchor_der)


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
