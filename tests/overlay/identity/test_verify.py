"""Per-trust-domain verification, without sockets: every negative case rejected by the SPIFFE
layer alone (so it does not lean on OpenSSL), every positive case accepted."""

from __future__ import annotations

import pytest

from foundation.errors import IdentityError
from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.bundle import Bundle, BundleSet
from overlay.identity.errors import NotAuthorized, PeerRejected, SvidError
from overlay.identity.verify import VerifyCache, check_expected, revocation_reason, verify_peer
from tests.overlay.identity.cases import (
    CA_A,
    CA_A_INTERMEDIATE,
    CA_B,
    NEGATIVE,
    POSITIVE,
    TRUSTED,
    Case,
)
from tests.overlay.identity.certfactory import HOUR, NOW, bundle_set, der, make_leaf

BUNDLES = bundle_set(dict(TRUSTED))


@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c.name)
def test_negative_case_rejected_with_precise_reason(case: Case) -> None:
    chain, _ = case.make()
    with pytest.raises(IdentityError) as info:
        verify_peer([der(c) for c in chain], bundles=BUNDLES, now=NOW)
    assert isinstance(info.value, SvidError | PeerRejected)
    assert case.reason in str(info.value)


@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
def test_positive_case_accepted(case: Case) -> None:
    chain, _ = case.make()
    peer = verify_peer([der(c) for c in chain], bundles=BUNDLES, now=NOW)
    assert peer.spiffe_id == SpiffeId.parse(case.spec.uris[0])
    assert peer.chain[0] == chain[0]
    assert peer.anchor_der == der(case.ca.cert if case.ca is not CA_A_INTERMEDIATE else CA_A.cert)


def test_cross_domain_spoof_passes_pooled_anchors_but_not_per_domain() -> None:
    """The attack the per-domain check exists for: A's CA signs a B identity."""
    chain, _ = make_leaf(CA_A, uris=["spiffe://b.test/gateway/server"])
    pooled = BundleSet([Bundle(TrustDomain("b.test"), (CA_A.cert, CA_B.cert))])
    # Had the bundles been merged, the spoof would verify:
    assert verify_peer([der(chain[0])], bundles=pooled, now=NOW).spiffe_id.trust_domain.name == (
        "b.test"
    )
    with pytest.raises(PeerRejected, match=r"bundle of b\.test"):
        verify_peer([der(chain[0])], bundles=BUNDLES, now=NOW)


@pytest.mark.parametrize("with_root", [False, True], ids=["leaf-only", "leaf-and-its-root"])
def test_cross_domain_chain_names_the_issuer_not_the_path_builder(with_root: bool) -> None:
    """A chain of domain A claiming a B identity says "issuer not in the bundle of b.test";
    with its own root attached the path builder would say "chain construction exceeds max
    depth", which tells an operator nothing."""
    chain, _ = make_leaf(CA_A, uris=["spiffe://b.test/gateway/server"])
    presented = [der(c) for c in chain] + ([der(CA_A.cert)] if with_root else [])
    with pytest.raises(PeerRejected) as info:
        verify_peer(presented, bundles=BUNDLES, now=NOW)
    message = str(info.value)
    assert "issuer not in the bundle of b.test" in message, message
    assert CA_A.cert.subject.rfc4514_string() in message
    assert "max depth" not in message and "candidates exhausted" not in message


def test_openssl_anchor_outside_the_peer_domain_is_rejected() -> None:
    chain, _ = make_leaf(CA_B, uris=["spiffe://b.test/x"])
    with pytest.raises(PeerRejected, match="OpenSSL anchored"):
        verify_peer(
            [der(chain[0])],
            bundles=BUNDLES,
            now=NOW,
            openssl_chain=[der(chain[0]), der(CA_A.cert)],
        )


def test_intermediate_must_be_a_signing_ca() -> None:
    from tests.overlay.identity.certfactory import ku, make_ca

    weak = make_ca(
        "a.test", parent=CA_A, cn="weak", key_usage=ku(key_cert_sign=True), ku_critical=False
    )
    chain, _ = make_leaf(weak, uris=["spiffe://a.test/x"])
    with pytest.raises(SvidError, match="keyUsage is not critical"):
        verify_peer([der(c) for c in chain], bundles=BUNDLES, now=NOW)


def test_intermediate_with_a_path_is_rejected() -> None:
    from tests.overlay.identity.certfactory import make_ca

    bad = make_ca("a.test", parent=CA_A, cn="bad", uri="spiffe://a.test/not-a-ca-id")
    chain, _ = make_leaf(bad, uris=["spiffe://a.test/x"])
    with pytest.raises(SvidError, match="must not have a path"):
        verify_peer([der(c) for c in chain], bundles=BUNDLES, now=NOW)


def test_missing_intermediate_is_rejected() -> None:
    chain, _ = make_leaf(CA_A_INTERMEDIATE, uris=["spiffe://a.test/x"])
    with pytest.raises(PeerRejected, match="does not anchor"):
        verify_peer([der(chain[0])], bundles=BUNDLES, now=NOW)


def test_empty_presented_chain_and_garbage_rejected() -> None:
    with pytest.raises(PeerRejected):
        verify_peer([], bundles=BUNDLES, now=NOW)
    with pytest.raises(PeerRejected, match="malformed"):
        verify_peer([b"\x30\x03\x02\x01\x00"], bundles=BUNDLES, now=NOW)


def test_authorization_is_exact() -> None:
    me = SpiffeId.parse("spiffe://a.test/gw")
    check_expected(me, SpiffeId.parse("spiffe://a.test/gw"))
    for other in ("spiffe://a.test/gw/x", "spiffe://b.test/gw", "spiffe://a.test/GW"):
        with pytest.raises(NotAuthorized):
            check_expected(me, SpiffeId.parse(other))


def test_revocation_reason_tracks_domain_and_anchor() -> None:
    chain, _ = make_leaf(CA_B, uris=["spiffe://b.test/x"])
    peer = verify_peer([der(chain[0])], bundles=BUNDLES, now=NOW)
    assert revocation_reason(peer, BUNDLES) is None
    without_b = bundle_set({"a.test": [CA_A.cert]})
    assert "left the bundle set" in (revocation_reason(peer, without_b) or "")
    rotated_b = bundle_set({"a.test": [CA_A.cert], "b.test": [CA_A.cert]})
    assert "anchor" in (revocation_reason(peer, rotated_b) or "")
    both_b = bundle_set({"b.test": [CA_A.cert, CA_B.cert]})
    assert revocation_reason(peer, both_b) is None


def test_verify_cache_memoises_success_only_and_rechecks_time_and_anchor() -> None:
    chain, _ = make_leaf(CA_B, uris=["spiffe://b.test/x"])  # valid NOW-1h .. NOW+24h
    ders = [der(chain[0])]
    cache = VerifyCache(max_entries=2)
    first = verify_peer(ders, bundles=BUNDLES, now=NOW, cache=cache)
    assert verify_peer(ders, bundles=BUNDLES, now=NOW, cache=cache) is first
    assert (cache.hits, cache.misses) == (1, 1)
    # A hit never outlives the chain's validity window.
    with pytest.raises(SvidError, match="expired"):
        verify_peer(ders, bundles=BUNDLES, now=NOW + 25 * HOUR, cache=cache)
    # Nor survives a bundle that no longer holds the anchor that vouched for it.
    rotated = bundle_set({"b.test": [CA_A.cert]})
    with pytest.raises(PeerRejected, match="does not anchor"):
        verify_peer(ders, bundles=rotated, now=NOW, cache=cache)
    # Failures are not remembered: a bad chain is re-examined (and rejected) every time.
    bad, _ = make_leaf(CA_A, uris=["spiffe://b.test/spoof"])
    for _ in range(2):
        with pytest.raises(PeerRejected):
            verify_peer([der(bad[0])], bundles=BUNDLES, now=NOW, cache=cache)
    assert len(cache._entries) == 1
    # Bounded: the oldest entry goes first.
    for i in range(3):
        other, _ = make_leaf(CA_A, uris=[f"spiffe://a.test/{i}"])
        verify_peer([der(other[0])], bundles=BUNDLES, now=NOW, cache=cache)
    assert len(cache._entries) == 2
    # A disabled cache stores nothing.
    off = VerifyCache(max_entries=0)
    verify_peer(ders, bundles=BUNDLES, now=NOW, cache=off)
    assert off._entries == {}
