"""Trust bundles: PEM and SPIFFE bundle JSON (JWKS), one per trust domain, bounded, typed errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from foundation.spiffe_id import TrustDomain
from overlay.identity.bundle import (
    MAX_BUNDLE_BYTES,
    Bundle,
    BundleSet,
    load_bundle,
    parse_bundle,
)
from overlay.identity.errors import BundleError
from tests.overlay.identity.cases import CA_A, CA_B
from tests.overlay.identity.certfactory import der, pem

TD = TrustDomain("a.test")


def jwks(*certs: object, extra: list[dict[str, object]] | None = None, **top: object) -> bytes:
    keys: list[dict[str, object]] = [
        {"use": "x509-svid", "kty": "EC", "crv": "P-256", "x5c": [base64.b64encode(c).decode()]}
        for c in certs  # type: ignore[arg-type]
    ]
    return json.dumps({"keys": keys + (extra or []), **top}).encode()


def test_pem_bundle_keeps_every_anchor_in_order() -> None:
    b = parse_bundle(TD, pem([CA_A.cert, CA_B.cert]))
    assert b.trust_domain == TD
    assert b.anchors == (CA_A.cert, CA_B.cert)
    assert b.has_anchor(der(CA_A.cert)) and not b.empty
    assert b.sequence is None and b.refresh_hint is None


def test_spiffe_json_bundle() -> None:
    data = jwks(
        der(CA_A.cert),
        extra=[
            {"use": "jwt-svid", "kty": "EC", "kid": "k1", "crv": "P-256", "x": "a", "y": "b"},
            {"use": "x509-svid", "kty": "EC"},  # no x5c: must be ignored
            {"use": "x509-svid", "kty": "EC", "x5c": []},  # empty x5c: ignored
            {"use": "x509-svid", "x5c": [base64.b64encode(der(CA_B.cert)).decode(), "junk"]},
        ],
        spiffe_sequence=7,
        spiffe_refresh_hint=300,
    )
    b = parse_bundle(TD, data)
    assert b.anchors == (CA_A.cert, CA_B.cert)  # only x5c[0] of each x509-svid key
    assert (b.sequence, b.refresh_hint) == (7, 300)
    assert parse_bundle(TD, data, "spiffe-json") == b


def test_format_auto_detects_and_explicit_format_is_obeyed() -> None:
    assert parse_bundle(TD, b"\n  " + jwks(der(CA_A.cert))).anchors == (CA_A.cert,)
    with pytest.raises(BundleError, match="not valid JSON"):
        parse_bundle(TD, pem([CA_A.cert]), "spiffe-json")
    with pytest.raises(BundleError, match="no PEM certificate"):
        parse_bundle(TD, jwks(der(CA_A.cert)), "pem")


def test_empty_bundles_are_legal_and_empty() -> None:
    for data in (b"", b"\n\n", b'{"keys": []}', jwks(extra=[{"use": "jwt-svid", "kty": "EC"}])):
        b = parse_bundle(TD, data)
        assert b.empty and b.anchors == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello, not a bundle", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed"),
        (b"{", "not valid JSON"),
        (b"[]", "no PEM certificate"),  # auto-detect: only '{' means JSON
        (b'{"keys": 3}', "'keys' must be a list"),
        (b'{"keys": [3]}', "keys[0] must be an object"),
        (b'{"keys": [{"use": "x509-svid", "x5c": "abc"}]}', "keys[0].x5c"),
        (b'{"keys": [{"use": "x509-svid", "x5c": ["!!!"]}]}', "keys[0].x5c[0]"),
        (b'{"keys": [{"use": "x509-svid", "x5c": ["AAAA"]}]}', "not a DER certificate"),
        (b'{"keys": [], "spiffe_sequence": -1}', "spiffe_sequence"),
        (b'{"keys": [], "spiffe_refresh_hint": "5m"}', "spiffe_refresh_hint"),
    ],
)
def test_malformed_bundles_are_typed_errors(data: bytes, message: str) -> None:
    with pytest.raises(BundleError) as info:
        parse_bundle(TD, data)
    assert message in str(info.value)


def test_files_are_size_bounded_and_named_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "bundle.pem"
    good.write_bytes(pem([CA_A.cert]))
    assert load_bundle(TD, good).anchors == (CA_A.cert,)
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b" " * (MAX_BUNDLE_BYTES + 1))
    with pytest.raises(BundleError, match="limit"):
        load_bundle(TD, huge)
    with pytest.raises(BundleError, match=r"missing\.pem"):
        load_bundle(TD, tmp_path / "missing.pem")


def test_bundle_set_is_frozen_and_never_merges() -> None:
    a = Bundle(TD, (CA_A.cert,))
    b = Bundle(TrustDomain("b.test"), (CA_B.cert,))
    s = BundleSet([a, b])
    assert s[TD] is a and len(s) == 2 and TrustDomain("c.test") not in s
    assert s.all_anchors() == (CA_A.cert, CA_B.cert)
    with pytest.raises(BundleError, match="never merged"):
        BundleSet([a, Bundle(TD, (CA_B.cert,))])
    with pytest.raises(AttributeError):
        s._map = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        s[TD] = b  # type: ignore[index]
    assert BundleSet([a, b]) == s and hash(BundleSet([b, a])) == hash(s)
