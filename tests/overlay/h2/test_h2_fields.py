"""The outbound header-block check that replaces h2's: what it lets through and what not."""

from __future__ import annotations

import pytest

from overlay.h2.fields import HeaderBlockError, check_block

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"api.default.isthmus"),
    (b":path", b"/x?y=1"),
    (b"accept", b"*/*"),
    (b"te", b"trailers"),
    (b"x-empty", b""),
]


def test_a_valid_request_block_passes_unchanged() -> None:
    assert check_block(REQUEST) == REQUEST


def test_str_fields_are_encoded() -> None:
    assert check_block([(":status", "200"), ("server", "isthmus")]) == [
        (b":status", b"200"),
        (b"server", b"isthmus"),
    ]


def test_te_trailers_is_case_insensitive_as_in_rfc_9110() -> None:
    # Transfer-coding names are case-insensitive (RFC 9110 section 10.1.4); h2 agrees.
    block = [(b":status", b"200"), (b"te", b"Trailers")]
    assert check_block(block) == block


def test_trailers_take_regular_fields_only() -> None:
    assert check_block([(b"x-sum", b"42")], trailers=True) == [(b"x-sum", b"42")]
    with pytest.raises(HeaderBlockError, match="trailers"):
        check_block([(b":status", b"200")], trailers=True)


@pytest.mark.parametrize(
    "block",
    [
        [(b"Accept", b"*/*")],  # uppercase name
        [(b"", b"x")],  # empty name
        [(b":", b"x")],  # empty pseudo-header
        [(b"bad name", b"x")],  # space in a name
        [(b"x\x00", b"y")],  # NUL in a name
        [(b":bogus", b"x")],  # not an RFC 9113 pseudo-header
        [(b"accept", b"*/*"), (b":path", b"/")],  # pseudo after regular
        [(b"connection", b"close")],
        [(b"keep-alive", b"timeout=5")],
        [(b"proxy-connection", b"keep-alive")],
        [(b"transfer-encoding", b"chunked")],
        [(b"upgrade", b"h2c")],
        [(b"te", b"gzip")],
        [(b"x-a", b"one\r\ntwo")],
        [(b"x-a", b"one\ntwo")],
        [(b"x-a", b"nul\x00")],
        [(b"x-a", b" leading")],
        [(b"x-a", b"trailing\t")],
    ],
)
def test_unsendable_blocks_are_refused(block: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(HeaderBlockError):
        check_block([(b":status", b"200"), *block] if block[0][0][:1] != b":" else block)


def test_a_name_seen_valid_does_not_excuse_its_bad_value() -> None:
    check_block([(b"x-seen", b"fine")])  # the name is now known
    with pytest.raises(HeaderBlockError):
        check_block([(b"x-seen", b"bad\r\n")])
