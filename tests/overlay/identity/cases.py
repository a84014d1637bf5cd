"""The negative (and matching positive) certificate suite, shared by unit and handshake tests.

The verifying side trusts three trust domains: ``a.test`` and ``b.test`` (one root each) and
``e.test`` (an *empty* bundle).  Every negative case is one leaf that breaks one rule; several
are deliberately signed by a trusted root so that OpenSSL's pooled check passes and only the
SPIFFE layer can catch them (``openssl_passes=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.overlay.identity.certfactory import (
    CLIENT_AUTH,
    HOUR,
    NOW,
    SERVER_AUTH,
    Ca,
    LeafSpec,
    ku,
    make_ca,
    make_leaf,
)

CA_A = make_ca("a.test")
CA_B = make_ca("b.test")
CA_A_INTERMEDIATE = make_ca("a.test", parent=CA_A, cn="intermediate a.test")
CA_C = make_ca("c.test")  # trusted by nobody
IMPOSTER_A = make_ca("a.test")  # same name as CA_A, different key: "chain to the wrong root"

TRUSTED: dict[str, tuple[x509.Certificate, ...]] = {
    "a.test": (CA_A.cert,),
    "b.test": (CA_B.cert,),
    "e.test": (),
}
ALL_ANCHORS = (CA_A.cert, CA_B.cert)

# The verifying side's own identity (a valid SVID in a.test).
SERVER_CHAIN, SERVER_KEY = make_leaf(CA_A, uris=["spiffe://a.test/gateway/server"])
SERVER_ID = "spiffe://a.test/gateway/server"


@dataclass(frozen=True)
class Case:
    name: str
    ca: Ca
    spec: LeafSpec
    reason: str  # substring of the SPIFFE layer's error message
    openssl_passes: bool  # True: only the post-handshake check can reject this

    def make(self) -> tuple[tuple[x509.Certificate, ...], ec.EllipticCurvePrivateKey]:
        return make_leaf(self.ca, self.spec)


ID = "spiffe://a.test/workload"

NEGATIVE: tuple[Case, ...] = (
    Case("two_uri_sans", CA_A, LeafSpec(uris=[ID, "spiffe://a.test/other"]), "2 URI SANs", True),
    Case("ca_leaf", CA_A, LeafSpec(uris=[ID], is_ca=True), "cA=true", True),
    Case(
        "key_cert_sign_on_leaf",
        CA_A,
        LeafSpec(uris=[ID], key_usage=ku(digital_signature=True, key_cert_sign=True)),
        "keyCertSign",
        True,
    ),
    Case(
        "crl_sign_on_leaf",
        CA_A,
        LeafSpec(uris=[ID], key_usage=ku(digital_signature=True, crl_sign=True)),
        "cRLSign",
        True,
    ),
    Case("missing_key_usage", CA_A, LeafSpec(uris=[ID], key_usage=None), "no keyUsage", True),
    Case(
        "non_critical_key_usage",
        CA_A,
        LeafSpec(uris=[ID], ku_critical=False),
        "keyUsage is not critical",
        True,
    ),
    Case(
        "no_digital_signature",
        CA_A,
        LeafSpec(uris=[ID], key_usage=ku(key_encipherment=True)),
        "lacks digitalSignature",
        False,  # OpenSSL refuses such a key for TLS 1.3 signatures itself
    ),
    Case(
        "server_auth_eku_only",
        CA_A,
        LeafSpec(uris=[ID], eku=(SERVER_AUTH,)),
        "lacks clientAuth",
        False,  # OpenSSL's purpose check catches it in one direction
    ),
    Case(
        "client_auth_eku_only",
        CA_A,
        LeafSpec(uris=[ID], eku=(CLIENT_AUTH,)),
        "lacks serverAuth",
        False,
    ),
    Case("root_path_leaf", CA_A, LeafSpec(uris=["spiffe://a.test"]), "has no path", True),
    Case(
        "wrong_scheme",
        CA_A,
        LeafSpec(uris=["https://a.test/workload"]),
        "not a SPIFFE ID",
        True,
    ),
    Case(
        "uppercase_scheme",
        CA_A,
        LeafSpec(uris=["SPIFFE://a.test/workload"]),
        "not a SPIFFE ID",
        True,
    ),
    Case(
        "expired",
        CA_A,
        LeafSpec(uris=[ID], not_before=NOW - 48 * HOUR, not_after=NOW - HOUR),
        "expired",
        False,
    ),
    Case(
        "not_yet_valid",
        CA_A,
        LeafSpec(uris=[ID], not_before=NOW + HOUR, not_after=NOW + 48 * HOUR),
        "not yet valid",
        False,
    ),
    Case(
        "unknown_trust_domain",
        CA_A,
        LeafSpec(uris=["spiffe://c.test/workload"]),
        "c.test is not trusted",
        True,
    ),
    Case(
        "unknown_trust_domain_own_root",
        CA_C,
        LeafSpec(uris=["spiffe://c.test/workload"]),
        "c.test is not trusted",
        False,
    ),
    Case(
        "empty_bundle",
        CA_A,
        LeafSpec(uris=["spiffe://e.test/workload"]),
        "bundle of e.test is empty",
        True,
    ),
    Case("wrong_root", IMPOSTER_A, LeafSpec(uris=[ID]), "does not anchor", False),
    Case(
        "cross_trust_domain_spoof",
        CA_A,
        LeafSpec(uris=["spiffe://b.test/gateway/server"]),
        "issuer not in the bundle of b.test",
        True,
    ),
    Case(
        "spiffe_id_only_in_dns_san",
        CA_A,
        LeafSpec(dns=["spiffe.a.test"], uris=[]),
        "no URI SAN",
        True,
    ),
    Case("no_san_at_all", CA_A, LeafSpec(uris=[]), "no subjectAltName", True),
    Case(
        "empty_subject_non_critical_san",
        CA_A,
        LeafSpec(uris=[ID], empty_subject=True, san_critical=False),
        "subjectAltName is not critical",
        True,
    ),
)

POSITIVE: tuple[Case, ...] = (
    Case("plain_leaf", CA_A, LeafSpec(uris=[ID]), "", True),
    Case("other_trust_domain", CA_B, LeafSpec(uris=["spiffe://b.test/gw/1"]), "", True),
    Case("via_intermediate", CA_A_INTERMEDIATE, LeafSpec(uris=[ID]), "", True),
    Case("no_eku", CA_A, LeafSpec(uris=[ID], eku=None), "", True),
    Case("no_basic_constraints", CA_A, LeafSpec(uris=[ID], is_ca=None), "", True),
    Case(
        "empty_subject_critical_san",
        CA_A,
        LeafSpec(uris=[ID], empty_subject=True, san_critical=True),
        "",
        True,
    ),
    Case(
        "extra_dns_san",
        CA_A,
        LeafSpec(uris=[ID], dns=["gw.a.test"]),
        "",
        True,
    ),
)
