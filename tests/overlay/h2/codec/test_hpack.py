"""HPACK: RFC 7541 Appendix C both ways, then python-hyper's hpack as the oracle.

* whatever ``hpack.Encoder`` produces (with and without Huffman, with table size changes),
  across a sequence of blocks, our decoder decodes to the same lists and the same table;
* whatever our encoder produces, ``hpack.Decoder`` decodes to the same lists, and sensitive
  fields arrive as never indexed;
* on damaged or arbitrary blocks, our decoder refuses exactly when hpack does, with the same
  kind of error, and otherwise decodes the same list and leaves the same table;
* the limits: the HPACK bomb stops at the list bound, table size updates above our setting,
  a table left above it, over-long integers, bad indexes.
"""

from __future__ import annotations

from collections.abc import Callable

import hpack
import pytest
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndexError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.struct import NeverIndexedHeaderTuple
from hpack.table import HeaderTable
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.h2.codec import errors
from overlay.h2.codec.hpack import STATIC_TABLE, Decoder, Encoder, Header

# --------------------------------------------------------------------------------------------
# RFC 7541 Appendix C

_C3 = [
    (
        "828684410f7777772e6578616d706c652e636f6d",
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"www.example.com"),
        ],
    ),
    (
        "828684be58086e6f2d6361636865",
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"www.example.com"),
            (b"cache-control", b"no-cache"),
        ],
    ),
    (
        "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":path", b"/index.html"),
            (b":authority", b"www.example.com"),
            (b"custom-key", b"custom-value"),
        ],
    ),
]
_C4 = [
    "828684418cf1e3c2e5f23a6ba0ab90f4ff",
    "828684be5886a8eb10649cbf",
    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
]
_DATE1 = b"Mon, 21 Oct 2013 20:13:21 GMT"
_DATE2 = b"Mon, 21 Oct 2013 20:13:22 GMT"
_LOC = b"https://www.example.com"
_C5 = [
    (
        "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120"
        "474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
        [
            (b":status", b"302"),
            (b"cache-control", b"private"),
            (b"date", _DATE1),
            (b"location", _LOC),
        ],
    ),
    (
        "4803333037c1c0bf",
        [
            (b":status", b"307"),
            (b"cache-control", b"private"),
            (b"date", _DATE1),
            (b"location", _LOC),
        ],
    ),
    (
        "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738"
        "666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d33"
        "3630303b2076657273696f6e3d31",
        [
            (b":status", b"200"),
            (b"cache-control", b"private"),
            (b"date", _DATE2),
            (b"location", _LOC),
            (b"content-encoding", b"gzip"),
            (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
        ],
    ),
]
_C6 = [
    "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad1718"
    "63c78f0b97c8e9ae82ae43d3",
    "4883640effc1c0bf",
    "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7"
    "b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
]


def _hpack_decode(decoder: hpack.Decoder, block: bytes) -> list[Header]:
    return [(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)]


@pytest.mark.parametrize("huffman", [False, True])
def test_c3_c4_requests(huffman: bool) -> None:
    ours = Decoder()
    oracle = hpack.Decoder()
    for i, (plain, expected) in enumerate(_C3):
        block = bytes.fromhex(_C4[i] if huffman else plain)
        assert _hpack_decode(oracle, block) == expected  # the vector is transcribed right
        assert ours.decode(block) == expected
    assert ours.table_entries == (
        (b"custom-key", b"custom-value"),
        (b"cache-control", b"no-cache"),
        (b":authority", b"www.example.com"),
    )


@pytest.mark.parametrize("huffman", [False, True])
def test_c5_c6_responses_evict(huffman: bool) -> None:
    ours = Decoder()
    ours.max_allowed_table_size = 256
    oracle = hpack.Decoder()
    oracle.header_table_size = 256
    # The RFC sets the 256-byte table out of band; so do we (a table size update would do it
    # on the wire).
    ours.decode(b"\x3f\xe1\x01")
    for i, (plain, expected) in enumerate(_C5):
        block = bytes.fromhex(_C6[i] if huffman else plain)
        assert _hpack_decode(oracle, block) == expected
        assert ours.decode(block) == expected
    assert ours.table_entries == (
        (b"set-cookie", b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
        (b"content-encoding", b"gzip"),
        (b"date", _DATE2),
    )


def test_c2_literal_representations() -> None:
    d = Decoder()
    assert d.decode(bytes.fromhex("400a637573746f6d2d6b65790d637573746f6d2d686561646572")) == [
        (b"custom-key", b"custom-header")
    ]
    assert d.table_entries == ((b"custom-key", b"custom-header"),)
    d = Decoder()
    assert d.decode(bytes.fromhex("040c2f73616d706c652f70617468")) == [(b":path", b"/sample/path")]
    assert d.table_entries == ()
    assert d.never_indexed == []
    assert d.decode(bytes.fromhex("100870617373776f726406736563726574")) == [
        (b"password", b"secret")
    ]
    assert d.never_indexed == [0]
    assert d.table_entries == ()
    assert d.decode(b"\x82") == [(b":method", b"GET")]


def test_encoder_c3_byte_exact() -> None:
    e = Encoder()
    for plain, headers in _C3:
        assert e.encode(headers) == bytes.fromhex(plain)


def test_encoder_c5_byte_exact_after_size_update() -> None:
    # With nothing held back from the table, our choices are the RFC's (no Huffman); the
    # 256-byte table is announced by a size update at the start of the first block.
    e = Encoder(table_size_cap=256, sensitive=frozenset(), volatile=frozenset())
    for i, (plain, headers) in enumerate(_C5):
        prefix = b"\x3f\xe1\x01" if i == 0 else b""
        assert e.encode(headers) == prefix + bytes.fromhex(plain)


def test_static_table_is_hpacks() -> None:
    assert STATIC_TABLE == HeaderTable.STATIC_TABLE


# --------------------------------------------------------------------------------------------
# hpack as the oracle, across sequences of blocks

_NAMES = st.sampled_from(
    [
        b":method",
        b":path",
        b":authority",
        b":status",
        b"content-type",
        b"authorization",
        b"cookie",
        b"x-isthmus-caller-id",
        b"content-length",
        b"custom-key",
        b"date",
        b"accept",
    ]
)
_NAME = _NAMES | st.binary(min_size=1, max_size=20)
_VALUE = st.sampled_from([b"", b"GET", b"/", b"200", b"text/plain", b"v" * 40]) | st.binary(
    max_size=300
)
_HEADERS = st.lists(st.tuples(_NAME, _VALUE), max_size=12)
# A step is a header list, or a new table size (hpack: setting; ours: the peer's SETTINGS).
_STEPS = st.lists(_HEADERS | st.integers(0, 8192), min_size=1, max_size=8)


def _oracle_table(decoder: hpack.Decoder) -> tuple[Header, ...]:
    return tuple((bytes(n), bytes(v)) for n, v in decoder.header_table.dynamic_entries)


@settings(max_examples=300, deadline=None)
@given(_STEPS, st.booleans(), st.data())
def test_we_decode_what_hpack_encodes(
    steps: list[list[Header] | int], huffman: bool, data: st.DataObject
) -> None:
    encoder = hpack.Encoder()
    ours = Decoder(max_header_list_size=1 << 20, max_allowed_table_size=8192)
    for step in steps:
        if isinstance(step, int):
            # hpack's encoder forgets a pending update when set twice to the same size (its
            # ``resized`` flag is overwritten), so only real changes are made.
            if step != encoder.header_table_size:
                encoder.header_table_size = step
            continue
        use_huffman = huffman and data.draw(st.booleans())
        block = encoder.encode(step, huffman=use_huffman)
        assert ours.decode(block) == step
        assert ours.table_entries == tuple(
            (bytes(n), bytes(v)) for n, v in encoder.header_table.dynamic_entries
        )


@settings(max_examples=300, deadline=None)
@given(_STEPS, st.integers(0, 8192))
def test_hpack_decodes_what_we_encode(steps: list[list[Header] | int], cap: int) -> None:
    ours = Encoder(table_size_cap=cap)
    oracle = hpack.Decoder(max_header_list_size=1 << 20)
    oracle.max_allowed_table_size = min(cap, 4096)
    for step in steps:
        if isinstance(step, int):
            # The peer advertised a new size and we acknowledged it; its decoder enforces it.
            ours.set_peer_table_size(step)
            oracle.max_allowed_table_size = step
            continue
        block = ours.encode(step)
        decoded = oracle.decode(block, raw=True)
        assert [(bytes(n), bytes(v)) for n, v in decoded] == step
        for (name, _), field in zip(step, decoded, strict=True):
            assert isinstance(field, NeverIndexedHeaderTuple) == (name in ours.sensitive)
        assert oracle.header_table_size == ours.table_size
        assert oracle.header_table_size <= min(cap, oracle.max_allowed_table_size)


@settings(max_examples=200, deadline=None)
@given(st.lists(_HEADERS, min_size=1, max_size=6))
def test_our_encoder_and_decoder_agree(blocks: list[list[Header]]) -> None:
    encoder = Encoder()
    decoder = Decoder(max_header_list_size=1 << 20)
    for headers in blocks:
        block = encoder.encode(headers)
        assert decoder.decode(block) == headers
        assert [i for i, (n, _) in enumerate(headers) if n in encoder.sensitive] == (
            decoder.never_indexed
        )


# --------------------------------------------------------------------------------------------
# Refusals: the same as hpack's on damaged and arbitrary input

# Each kind of refusal: hpack's exception, and ours.  Order matters: hpack's classes are
# subclasses of HPACKDecodingError, the catch-all for the last kind.
_KINDS: list[tuple[type[Exception], tuple[type[Exception], ...]]] = [
    (InvalidTableIndexError, (errors.HpackBadIndex,)),
    (OversizedHeaderListError, (errors.HeaderListTooLarge,)),
    (InvalidTableSizeError, (errors.HpackTableSizeError,)),
    (
        HPACKDecodingError,
        (
            errors.HpackTruncated,
            errors.HpackIntegerTooLong,
            errors.HpackBadHuffman,
            errors.HpackMisplacedSizeUpdate,
        ),
    ),
]


def _kind(exc: Exception) -> int:
    for i, (theirs, ours) in enumerate(_KINDS):
        if isinstance(exc, (theirs, *ours)):
            return i
    raise AssertionError(f"unexpected error {exc!r}")


def _verdict(decode: Callable[[bytes], list[Header]], block: bytes) -> object:
    try:
        return decode(block)
    except (HPACKDecodingError, errors.HpackError) as exc:
        return ("refused", _kind(exc))


def _pair(limit: int, table: int) -> tuple[Decoder, hpack.Decoder]:
    ours = Decoder(max_header_list_size=limit, max_allowed_table_size=table)
    oracle = hpack.Decoder(max_header_list_size=limit)
    oracle.max_allowed_table_size = table
    return ours, oracle


def _same_verdict(ours: Decoder, oracle: hpack.Decoder, block: bytes) -> None:
    mine = _verdict(ours.decode, block)
    theirs = _verdict(lambda b: _hpack_decode(oracle, b), block)
    assert mine == theirs, block.hex()
    if not isinstance(mine, tuple):
        assert ours.table_entries == _oracle_table(oracle)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(_HEADERS, min_size=1, max_size=4),
    st.booleans(),
    st.data(),
    st.integers(100, 4000),
    st.sampled_from([0, 256, 4096]),
)
def test_damaged_blocks_same_verdict(
    blocks: list[list[Header]],
    huffman: bool,
    data: st.DataObject,
    limit: int,
    table: int,
) -> None:
    encoder = hpack.Encoder()
    encoded = [encoder.encode(headers, huffman=huffman) for headers in blocks]
    ours, oracle = _pair(limit, table)
    for block in encoded:
        damaged = bytearray(block)
        if damaged and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(damaged) - 1))
            damaged[i] ^= data.draw(st.integers(1, 255))
        if data.draw(st.booleans()):
            damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
        if data.draw(st.booleans()):
            damaged[0:0] = data.draw(st.binary(max_size=6))
        mine = _verdict(ours.decode, bytes(damaged))
        theirs = _verdict(lambda b: _hpack_decode(oracle, b), bytes(damaged))
        assert mine == theirs, bytes(damaged).hex()
        if isinstance(mine, tuple):
            return  # after a refusal the connection ends; the tables are undefined
        assert ours.table_entries == _oracle_table(oracle)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([0, 256, 4096]))
def test_arbitrary_blocks_same_verdict(block: bytes, table: int) -> None:
    ours, oracle = _pair(2000, table)
    _same_verdict(ours, oracle, block)


# --------------------------------------------------------------------------------------------
# Limits


def test_hpack_bomb_stops_at_the_list_bound() -> None:
    # One 4000-byte entry, then 10 000 one-byte references to it: 40 MB if decoded.
    ours, oracle = _pair(65536, 4096)
    add = b"\x40\x01a" + b"\x7f\xa1\x1e" + b"v" * 4000  # name "a", value of 4000 bytes
    bomb = add + b"\xbe" * 10000
    with pytest.raises(errors.HeaderListTooLarge):
        ours.decode(bomb)
    with pytest.raises(OversizedHeaderListError):
        oracle.decode(bomb, raw=True)


def test_list_at_the_bound_is_accepted() -> None:
    d = Decoder(max_header_list_size=32 + 1 + 3)
    assert d.decode(b"\x00\x01a\x03bcd") == [(b"a", b"bcd")]
    d = Decoder(max_header_list_size=32 + 1 + 2)
    with pytest.raises(errors.HeaderListTooLarge):
        d.decode(b"\x00\x01a\x03bcd")


def test_table_size_update_above_our_setting_refused() -> None:
    d = Decoder(max_allowed_table_size=4096)
    assert d.decode(b"\x3f\xe1\x1f") == []  # 4096 exactly
    with pytest.raises(errors.HpackTableSizeError):
        Decoder(max_allowed_table_size=4096).decode(b"\x3f\xe2\x1f")  # 4097


def test_table_left_above_our_lowered_setting_refused() -> None:
    d = Decoder()
    d.max_allowed_table_size = 100  # we lowered SETTINGS_HEADER_TABLE_SIZE; the peer ACKed
    with pytest.raises(errors.HpackTableSizeError):
        d.decode(b"\x82")
    d = Decoder()
    d.max_allowed_table_size = 100
    assert d.decode(b"\x3f\x45\x82") == [(b":method", b"GET")]  # update to 100, then a field
    assert d.table_size == 100


def test_table_size_update_after_a_field_refused() -> None:
    with pytest.raises(errors.HpackMisplacedSizeUpdate):
        Decoder().decode(b"\x82\x20")


def test_integer_length_is_bounded() -> None:
    # Index 127 + 0 in five continuation octets is accepted; a sixth octet is refused, even
    # though the value stays small (zero padding must not grow without bound).
    assert Decoder().decode(b"\x3f\x80\x80\x80\x80\x00") == []  # size 31 in 6 octets
    with pytest.raises(errors.HpackIntegerTooLong):
        Decoder().decode(b"\x3f\x80\x80\x80\x80\x80\x00")
    with pytest.raises(errors.HpackIntegerTooLong):
        Decoder().decode(b"\xff" + b"\xff" * 100)


@pytest.mark.parametrize("block", [b"\x80", b"\xbe", b"\xff\x80\x01", b"\x7e\x00", b"\x0f\x30"])
def test_bad_indexes_refused(block: bytes) -> None:
    with pytest.raises(errors.HpackBadIndex):
        Decoder().decode(block)


@pytest.mark.parametrize(
    "block",
    [b"\x40", b"\x40\x01", b"\x40\x01a", b"\x40\x01a\x05abc", b"\x7f", b"\x00\x7f\x80", b"\x3f"],
)
def test_truncated_blocks_refused(block: bytes) -> None:
    with pytest.raises(errors.HpackTruncated):
        Decoder().decode(block)


def test_bad_huffman_refused() -> None:
    with pytest.raises(errors.HpackBadHuffman):
        Decoder().decode(b"\x00\x81\x00\x00")  # name "0" with zero padding
    with pytest.raises(errors.HpackBadHuffman):
        Decoder().decode(b"\x00\x81\x1f\x82\x1f\xff")  # value: padding of 11 bits


def test_encoder_signals_smallest_then_final_size() -> None:
    e = Encoder()
    e.set_peer_table_size(100)
    e.set_peer_table_size(2000)
    block = e.encode([(b"custom-key", b"x")])
    assert block.startswith(b"\x3f\x45" + b"\x3f\xb1\x0f")  # 100, then 2000
    d = Decoder()
    assert d.decode(block) == [(b"custom-key", b"x")]
    assert d.table_size == 2000


def test_encoder_evicts_when_the_peer_shrinks_its_table() -> None:
    e = Encoder()
    d = Decoder()
    assert d.decode(e.encode([(b"custom-key", b"x" * 50)])) == [(b"custom-key", b"x" * 50)]
    e.set_peer_table_size(50)  # the entry (92 bytes) no longer fits
    d.max_allowed_table_size = 50
    block = e.encode([(b"custom-key", b"x" * 50)])
    assert d.decode(block) == [(b"custom-key", b"x" * 50)]
    assert d.table_entries == ()


def test_every_block_of_up_to_two_octets_same_verdict_as_hpack() -> None:
    # Exhaustive: every first octet (each representation and prefix value) with every second.
    for n in (1, 2):
        for value in range(256**n):
            ours, oracle = _pair(2000, 4096)
            _same_verdict(ours, oracle, value.to_bytes(n, "big"))
