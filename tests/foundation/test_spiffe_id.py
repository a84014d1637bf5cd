"""SPIFFE IDs per the SPIFFE-ID standard: examples both ways, and property tests (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.spiffe_id import MAX_ID_BYTES, SpiffeId, SpiffeIdError, TrustDomain

VALID = [
    "spiffe://example.org",
    "spiffe://example.org/foo/bar",
    "spiffe://staging.example.com/payments/mysql",
    "spiffe://k8s-west.example.com/ns/staging/sa/default",
    "spiffe://trust_domain-1.example/Path.With_Mixed-Case/0",
    "spiffe://1.2.3.4/ip-like-trust-domain-is-just-characters",
    "spiffe://a/b",
    "spiffe://example.org/..a/a../.../...",  # only exactly '.' and '..' are forbidden
    "spiffe://example.org/" + "a" * (MAX_ID_BYTES - len("spiffe://example.org/")),
    "spiffe://" + "d" * 255,
]

INVALID = [
    ("", "empty"),
    ("spiffe://", "trust domain is missing"),
    ("spiffe:///path", "trust domain is missing"),
    ("http://example.org/x", "scheme"),
    ("SPIFFE://example.org/x", "scheme must be lowercase"),
    ("Spiffe://example.org/x", "scheme must be lowercase"),
    ("spiffe:example.org/x", "scheme"),
    ("spiffe:/example.org/x", "scheme"),
    (" spiffe://example.org/x", "scheme"),
    ("spiffe://Example.org/x", "lowercase"),
    ("spiffe://EXAMPLE.ORG", "lowercase"),
    ("spiffe://example.org:8080/x", "port"),
    ("spiffe://user@example.org/x", "userinfo"),
    ("spiffe://user:pass@example.org/x", "port"),  # ':' seen first; either way rejected
    ("spiffe://example.org/x?query=1", "query"),
    ("spiffe://example.org?x", "query"),
    ("spiffe://example.org/x#frag", "fragment"),
    ("spiffe://example.org#frag", "fragment"),
    ("spiffe://example.org/", "must not end with '/'"),
    ("spiffe://example.org/x/", "must not end with '/'"),
    ("spiffe://example.org//x", "empty segment"),
    ("spiffe://example.org/./x", "'.'"),
    ("spiffe://example.org/x/..", "'..'"),
    ("spiffe://example.org/../x", "'..'"),
    ("spiffe://example.org/%41", "percent"),
    ("spiffe://exa%6dple.org/x", "percent"),
    ("spiffe://example.org/a b", "invalid character"),
    ("spiffe://example.org/x\n", "invalid character"),
    ("spiffe://exämple.org/x", "invalid character"),
    ("spiffe://example.org/ü", "invalid character"),
    ("spiffe://example.org/a+b", "invalid character"),
    ("spiffe://example.org/a\\b", "invalid character"),
    ("spiffe://" + "d" * 256, "longer than 255"),
    ("spiffe://example.org/" + "a" * (MAX_ID_BYTES - len("spiffe://example.org/") + 1), "2048"),
]


@pytest.mark.parametrize("text", VALID)
def test_valid_ids_parse_and_round_trip(text: str) -> None:
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert SpiffeId.parse(str(sid)) == sid
    assert sid.trust_domain.name == text[len("spiffe://") :].split("/")[0]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_ids_are_rejected_with_reason(text: str, reason: str) -> None:
    with pytest.raises(SpiffeIdError) as info:
        SpiffeId.parse(text)
    assert reason in str(info.value)


def test_non_string_is_a_typed_error() -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(b"spiffe://example.org/x")  # type: ignore[arg-type]


def test_trust_domain_parse_and_segments() -> None:
    assert TrustDomain.parse("example.org") == TrustDomain("example.org")
    assert TrustDomain.parse("spiffe://example.org") == TrustDomain("example.org")
    with pytest.raises(SpiffeIdError, match="must not have a path"):
        TrustDomain.parse("spiffe://example.org/x")
    with pytest.raises(SpiffeIdError):
        TrustDomain("Example.org")
    sid = SpiffeId.parse("spiffe://example.org/ns/prod/sa/api")
    assert sid.segments == ("ns", "prod", "sa", "api")
    assert sid.is_member_of(TrustDomain("example.org"))
    assert not sid.is_member_of(TrustDomain("example.com"))
    assert TrustDomain("example.org").id() == SpiffeId.parse("spiffe://example.org")


# -- properties ---------------------------------------------------------------------------------

TD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.-_"
SEG_ALPHABET = TD_ALPHABET + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
HOSTILE = SEG_ALPHABET + "/:@?#%. \t\n\x00ÄéSPIFF\ud800"

trust_domains = st.text(TD_ALPHABET, min_size=1, max_size=40)
segments = st.text(SEG_ALPHABET, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
valid_ids = st.builds(
    lambda td, segs: f"spiffe://{td}" + "".join(f"/{s}" for s in segs),
    trust_domains,
    st.lists(segments, max_size=8),
)
near_ids = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["spiffe://", "spiffe:/", "SPIFFE://", "spiffe://a.b/", ""]),
    st.text(HOSTILE, max_size=60),
)


def _parse_or_reject(text: str) -> SpiffeId | None:
    try:
        return SpiffeId.parse(text)
    except SpiffeIdError:
        return None


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), near_ids))
def test_parse_never_crashes_and_accepts_only_canonical_text(text: str) -> None:
    sid = _parse_or_reject(text)  # any other exception fails the test
    if sid is not None:
        assert str(sid) == text  # nothing is normalised: accepted means canonical
        assert SpiffeId.parse(str(sid)) == sid
        assert len(text.encode()) <= MAX_ID_BYTES


@settings(max_examples=300, deadline=None)
@given(valid_ids)
def test_generated_valid_ids_parse(text: str) -> None:
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert "/".join(("", *sid.segments)) == sid.path


@settings(max_examples=200, deadline=None)
@given(valid_ids, st.sampled_from(["/", "//", "/.", "/..", "?", "#", "%20", ":1", "/ "]))
def test_appending_forbidden_parts_breaks_a_valid_id(text: str, suffix: str) -> None:
    assert _parse_or_reject(text + suffix) is None
