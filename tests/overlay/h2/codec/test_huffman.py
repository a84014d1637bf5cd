"""The Huffman decoder: our transcription of RFC 7541 Appendix B checked against hpack's table,
then decoding checked against hpack's decoder on valid strings, on the refusals RFC 7541 5.2
names, and on arbitrary bytes (same output, or both refuse)."""

from __future__ import annotations

import pytest
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as hpack_decode
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.h2.codec.huffman import CODES, EOS, HuffmanError, decode_huffman, encode_huffman

_HPACK_ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def _hpack_verdict(data: bytes) -> bytes | None:
    try:
        return hpack_decode(data)
    except HPACKDecodingError:
        return None


def _our_verdict(data: bytes) -> bytes | None:
    try:
        return decode_huffman(data)
    except HuffmanError:
        return None


def test_code_table_is_hpacks() -> None:
    assert len(CODES) == 257
    assert [code for code, _ in CODES] == REQUEST_CODES
    assert [length for _, length in CODES] == REQUEST_CODES_LENGTH


def test_code_is_complete_prefix_code() -> None:
    # Kraft's sum is exactly 1 for a complete prefix code (the import-time tree build also
    # refuses gaps and overlaps; this checks the lengths independently).
    assert sum(2 ** (30 - length) for _, length in CODES) == 2**30


def test_rfc_7541_c4_strings() -> None:
    assert decode_huffman(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    assert decode_huffman(bytes.fromhex("a8eb10649cbf")) == b"no-cache"
    assert decode_huffman(bytes.fromhex("25a849e95ba97d7f")) == b"custom-key"
    assert decode_huffman(bytes.fromhex("25a849e95bb8e8b4bf")) == b"custom-value"
    assert encode_huffman(b"www.example.com") == bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")


def test_empty_string() -> None:
    assert decode_huffman(b"") == b""


def test_padding_of_eight_bits_refused() -> None:
    # "a" is 00011 + 3 bits of padding; one more all-ones byte makes 11 bits of padding.
    valid = encode_huffman(b"a")
    assert decode_huffman(valid) == b"a"
    with pytest.raises(HuffmanError):
        decode_huffman(valid + b"\xff")
    assert _hpack_verdict(valid + b"\xff") is None


def test_padding_not_eos_prefix_refused() -> None:
    # "0" is 00000: with padding 111 it is valid; with 000 or 110 it is not.
    assert decode_huffman(bytes([0b00000111])) == b"0"
    for bad in (0b00000000, 0b00000110):
        with pytest.raises(HuffmanError):
            decode_huffman(bytes([bad]))
        assert _hpack_verdict(bytes([bad])) is None


def test_eos_symbol_refused() -> None:
    code, length = CODES[EOS]
    # EOS (30 ones) followed by two ones of padding: a whole EOS inside the string.
    data = ((code << 2) | 0b11).to_bytes(4, "big")
    assert length == 30
    with pytest.raises(HuffmanError):
        decode_huffman(data)
    assert _hpack_verdict(data) is None
    # "a" then EOS then padding.
    acc = (CODES[ord("a")][0] << 30 | code) << 5 | 0b11111
    with pytest.raises(HuffmanError):
        decode_huffman(acc.to_bytes(5, "big"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decodes_what_hpack_encodes(data: bytes) -> None:
    encoded = _HPACK_ENCODER.encode(data)
    assert decode_huffman(encoded) == data
    assert encode_huffman(data) == encoded


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_arbitrary_bytes_same_verdict_as_hpack(data: bytes) -> None:
    assert _our_verdict(data) == _hpack_verdict(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.data())
def test_mutated_strings_same_verdict_as_hpack(text: bytes, draw: st.DataObject) -> None:
    encoded = bytearray(_HPACK_ENCODER.encode(text))
    i = draw.draw(st.integers(0, len(encoded) - 1))
    encoded[i] ^= draw.draw(st.integers(1, 255))
    cut = draw.draw(st.integers(0, len(encoded) + 1))
    mutated = bytes(encoded[:cut])
    assert _our_verdict(mutated) == _hpack_verdict(mutated)


def test_every_string_of_up_to_two_octets_same_verdict_as_hpack() -> None:
    # Exhaustive over 65 793 inputs: every state the decoder can be in after a byte, every
    # padding length 0-15, every place EOS can start.
    for n in (0, 1, 2):
        for value in range(256**n):
            data = value.to_bytes(n, "big")
            assert _our_verdict(data) == _hpack_verdict(data), data.hex()
