"""X509-SVID rules, one rule per test, on certificates that differ from a good one in one way."""

from __future__ import annotations

import pytest

from foundation.spiffe_id import SpiffeId
from overlay.identity.errors import SvidError
from overlay.identity.svid import (
    check_chain,
    check_leaf,
    check_signing_ca,
    check_validity,
    parse_pem_certificates,
    parse_private_key,
    parse_svid,
    spiffe_id_of,
)
from tests.overlay.identity.cases import CA_A, CA_A_INTERMEDIATE, NEGATIVE, Case
from tests.overlay.identity.certfactory import (
    HOUR,
    NOW,
    LeafSpec,
    key_pem,
    ku,
    make_ca,
    make_leaf,
    pem,
)

ID = "spiffe://a.test/workload"
LEAF_RULE_CASES = [
    c
    for c in NEGATIVE
    if c.name
    not in {
        "unknown_trust_domain",
        "unknown_trust_domain_own_root",
        "empty_bundle",
        "wrong_root",
        "cross_trust_domain_spoof",
    }
]


def test_good_leaf_returns_its_id() -> None:
    chain, _ = make_leaf(CA_A, uris=[ID])
    assert check_leaf(chain[0], now=NOW) == SpiffeId.parse(ID)


@pytest.mark.parametrize("case", LEAF_RULE_CASES, ids=lambda c: c.name)
def test_leaf_rule_violations(case: Case) -> None:
    chain, _ = case.make()
    with pytest.raises(SvidError) as info:
        check_leaf(chain[0], now=NOW)
    assert case.reason in info.value.reason


def test_validity_is_checked_against_the_given_now() -> None:
    chain, _ = make_leaf(CA_A, uris=[ID])  # valid NOW-1h .. NOW+24h
    check_validity(chain[0], now=NOW)
    with pytest.raises(SvidError, match="expired"):
        check_leaf(chain[0], now=NOW + 25 * HOUR)
    with pytest.raises(SvidError, match="not yet valid"):
        check_leaf(chain[0], now=NOW - 2 * HOUR)


def test_spiffe_id_in_dns_san_is_not_an_svid() -> None:
    chain, _ = make_leaf(CA_A, LeafSpec(uris=[], dns=["spiffe"]))
    with pytest.raises(SvidError, match="no URI SAN"):
        spiffe_id_of(chain[0])


def test_signing_ca_rules() -> None:
    assert check_signing_ca(CA_A.cert, now=NOW) == SpiffeId.parse("spiffe://a.test")
    assert check_signing_ca(CA_A_INTERMEDIATE.cert, now=NOW) is not None
    no_uri = make_ca("x.test", uri=None)
    assert check_signing_ca(no_uri.cert, now=NOW) is None  # SHOULD be an SVID, not MUST
    not_ca = make_ca("x.test", is_ca=False)
    with pytest.raises(SvidError, match="not a CA"):
        check_signing_ca(not_ca.cert, now=NOW)
    no_kcs = make_ca("x.test", key_usage=ku(crl_sign=True))
    with pytest.raises(SvidError, match="lacks keyCertSign"):
        check_signing_ca(no_kcs.cert, now=NOW)
    soft = make_ca("x.test", ku_critical=False)
    with pytest.raises(SvidError, match="not critical"):
        check_signing_ca(soft.cert, now=NOW)
    assert check_signing_ca(soft.cert, now=NOW, anchor=True) is not None  # lenient for anchors
    with_path = make_ca("x.test", uri="spiffe://x.test/ca")
    with pytest.raises(SvidError, match="must not have a path"):
        check_signing_ca(with_path.cert, now=NOW)
    old = make_ca("x.test", not_before=NOW - 48 * HOUR, not_after=NOW - HOUR)
    with pytest.raises(SvidError, match="expired"):
        check_signing_ca(old.cert, now=NOW)


def test_check_chain_applies_ca_rules_to_intermediates() -> None:
    chain, _ = make_leaf(CA_A_INTERMEDIATE, uris=[ID])
    assert len(chain) == 2
    assert check_chain(chain, now=NOW) == SpiffeId.parse(ID)
    leaf_as_ca, _ = make_leaf(CA_A, uris=["spiffe://a.test/other"])
    with pytest.raises(SvidError, match="not a CA"):
        check_chain([chain[0], leaf_as_ca[0]], now=NOW)
    with pytest.raises(SvidError, match="empty"):
        check_chain([], now=NOW)


def test_parse_svid_checks_key_matches_leaf() -> None:
    chain, key = make_leaf(CA_A, uris=[ID])
    svid, parsed = parse_svid(pem(chain), key_pem(key), now=NOW)
    assert parsed.public_key() == key.public_key()
    assert svid.spiffe_id == SpiffeId.parse(ID)
    assert svid.chain_pem() == pem(chain)
    _, other = make_leaf(CA_A, uris=[ID])
    with pytest.raises(SvidError, match="does not match"):
        parse_svid(pem(chain), key_pem(other), now=NOW)
    with pytest.raises(SvidError, match="no certificate"):
        parse_svid(b"", key_pem(key), now=NOW)
    with pytest.raises(SvidError, match="not an unencrypted PEM private key"):
        parse_svid(pem(chain), b"nope", now=NOW)


def test_malformed_pem_is_a_typed_error() -> None:
    with pytest.raises(SvidError, match="malformed"):
        parse_pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert parse_pem_certificates(b"") == ()
    with pytest.raises(SvidError):
        parse_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
