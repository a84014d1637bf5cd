"""HPACK Huffman decoding (RFC 7541 section 5.2 and Appendix B), table-driven, one byte a step.

Why we decode but do not encode: a link's encoder may choose its own representation, and the
cheapest for the CPU is a plain literal (Huffman saves ~30 % of header bytes on a link that
already carries few of them after indexing).  A peer, however, may Huffman-code every string,
so the decoder must accept it -- and must refuse what RFC 7541 forbids: the EOS symbol inside a
string, padding longer than 7 bits, and padding that is not the most significant bits of EOS
(that is, not all ones).

Theory of operation
-------------------
The code of Appendix B (transcribed below, symbol by symbol) is a complete prefix code, so it is
a binary tree with 257 leaves and 256 internal nodes.  A decoder that has read part of a code is
*at* an internal node; the root means "between symbols".  At import we compute, for every
internal node and every input byte, the node reached after the byte's eight bits and the
symbols completed on the way (at most two: the shortest code has five bits).  Reaching the EOS
leaf sends the decoder to a sink state that it never leaves, so the hot loop has no branch: it
is one list lookup and one append per input byte, and the verdict comes once, at the end.

A string is valid iff it ends at the root or at one of the nodes reached from the root by one
to seven 1-bits: those are exactly "fewer than eight bits of padding, all of them a prefix of
EOS" (EOS is thirty 1-bits, and no shorter code is all ones).

States are stored pre-multiplied by 256 so the table index is ``state | byte``.
"""

from __future__ import annotations

# RFC 7541 Appendix B: (code, length in bits) for symbols 0..255 and EOS (256), in order.
# fmt: off
CODES: tuple[tuple[int, int], ...] = (
    # 0 - 31: control characters
    (0x1FF8, 13), (0x7FFFD8, 23), (0xFFFFFE2, 28), (0xFFFFFE3, 28),
    (0xFFFFFE4, 28), (0xFFFFFE5, 28), (0xFFFFFE6, 28), (0xFFFFFE7, 28),
    (0xFFFFFE8, 28), (0xFFFFEA, 24), (0x3FFFFFFC, 30), (0xFFFFFE9, 28),
    (0xFFFFFEA, 28), (0x3FFFFFFD, 30), (0xFFFFFEB, 28), (0xFFFFFEC, 28),
    (0xFFFFFED, 28), (0xFFFFFEE, 28), (0xFFFFFEF, 28), (0xFFFFFF0, 28),
    (0xFFFFFF1, 28), (0xFFFFFF2, 28), (0x3FFFFFFE, 30), (0xFFFFFF3, 28),
    (0xFFFFFF4, 28), (0xFFFFFF5, 28), (0xFFFFFF6, 28), (0xFFFFFF7, 28),
    (0xFFFFFF8, 28), (0xFFFFFF9, 28), (0xFFFFFFA, 28), (0xFFFFFFB, 28),
    # 32 - 63: ' ' ! " # $ % & ' ( ) * + , - . / 0-9 : ; < = > ?
    (0x14, 6), (0x3F8, 10), (0x3F9, 10), (0xFFA, 12),
    (0x1FF9, 13), (0x15, 6), (0xF8, 8), (0x7FA, 11),
    (0x3FA, 10), (0x3FB, 10), (0xF9, 8), (0x7FB, 11),
    (0xFA, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),
    (0x1A, 6), (0x1B, 6), (0x1C, 6), (0x1D, 6),
    (0x1E, 6), (0x1F, 6), (0x5C, 7), (0xFB, 8),
    (0x7FFC, 15), (0x20, 6), (0xFFB, 12), (0x3FC, 10),
    # 64 - 95: @ A-Z [ \ ] ^ _
    (0x1FFA, 13), (0x21, 6), (0x5D, 7), (0x5E, 7),
    (0x5F, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6A, 7),
    (0x6B, 7), (0x6C, 7), (0x6D, 7), (0x6E, 7),
    (0x6F, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    (0xFC, 8), (0x73, 7), (0xFD, 8), (0x1FFB, 13),
    (0x7FFF0, 19), (0x1FFC, 13), (0x3FFC, 14), (0x22, 6),
    # 96 - 127: ` a-z { | } ~ DEL
    (0x7FFD, 15), (0x3, 5), (0x23, 6), (0x4, 5),
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2A, 6), (0x7, 5),
    (0x2B, 6), (0x76, 7), (0x2C, 6), (0x8, 5),
    (0x9, 5), (0x2D, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7A, 7), (0x7B, 7), (0x7FFE, 15),
    (0x7FC, 11), (0x3FFD, 14), (0x1FFD, 13), (0xFFFFFFC, 28),
    # 128 - 159
    (0xFFFE6, 20), (0x3FFFD2, 22), (0xFFFE7, 20), (0xFFFE8, 20),
    (0x3FFFD3, 22), (0x3FFFD4, 22), (0x3FFFD5, 22), (0x7FFFD9, 23),
    (0x3FFFD6, 22), (0x7FFFDA, 23), (0x7FFFDB, 23), (0x7FFFDC, 23),
    (0x7FFFDD, 23), (0x7FFFDE, 23), (0xFFFFEB, 24), (0x7FFFDF, 23),
    (0xFFFFEC, 24), (0xFFFFED, 24), (0x3FFFD7, 22), (0x7FFFE0, 23),
    (0xFFFFEE, 24), (0x7FFFE1, 23), (0x7FFFE2, 23), (0x7FFFE3, 23),
    (0x7FFFE4, 23), (0x1FFFDC, 21), (0x3FFFD8, 22), (0x7FFFE5, 23),
    (0x3FFFD9, 22), (0x7FFFE6, 23), (0x7FFFE7, 23), (0xFFFFEF, 24),
    # 160 - 191
    (0x3FFFDA, 22), (0x1FFFDD, 21), (0xFFFE9, 20), (0x3FFFDB, 22),
    (0x3FFFDC, 22), (0x7FFFE8, 23), (0x7FFFE9, 23), (0x1FFFDE, 21),
    (0x7FFFEA, 23), (0x3FFFDD, 22), (0x3FFFDE, 22), (0xFFFFF0, 24),
    (0x1FFFDF, 21), (0x3FFFDF, 22), (0x7FFFEB, 23), (0x7FFFEC, 23),
    (0x1FFFE0, 21), (0x1FFFE1, 21), (0x3FFFE0, 22), (0x1FFFE2, 21),
    (0x7FFFED, 23), (0x3FFFE1, 22), (0x7FFFEE, 23), (0x7FFFEF, 23),
    (0xFFFEA, 20), (0x3FFFE2, 22), (0x3FFFE3, 22), (0x3FFFE4, 22),
    (0x7FFFF0, 23), (0x3FFFE5, 22), (0x3FFFE6, 22), (0x7FFFF1, 23),
    # 192 - 223
    (0x3FFFFE0, 26), (0x3FFFFE1, 26), (0xFFFEB, 20), (0x7FFF1, 19),
    (0x3FFFE7, 22), (0x7FFFF2, 23), (0x3FFFE8, 22), (0x1FFFFEC, 25),
    (0x3FFFFE2, 26), (0x3FFFFE3, 26), (0x3FFFFE4, 26), (0x7FFFFDE, 27),
    (0x7FFFFDF, 27), (0x3FFFFE5, 26), (0xFFFFF1, 24), (0x1FFFFED, 25),
    (0x7FFF2, 19), (0x1FFFE3, 21), (0x3FFFFE6, 26), (0x7FFFFE0, 27),
    (0x7FFFFE1, 27), (0x3FFFFE7, 26), (0x7FFFFE2, 27), (0xFFFFF2, 24),
    (0x1FFFE4, 21), (0x1FFFE5, 21), (0x3FFFFE8, 26), (0x3FFFFE9, 26),
    (0xFFFFFFD, 28), (0x7FFFFE3, 27), (0x7FFFFE4, 27), (0x7FFFFE5, 27),
    # 224 - 255
    (0xFFFEC, 20), (0xFFFFF3, 24), (0xFFFED, 20), (0x1FFFE6, 21),
    (0x3FFFE9, 22), (0x1FFFE7, 21), (0x1FFFE8, 21), (0x7FFFF3, 23),
    (0x3FFFEA, 22), (0x3FFFEB, 22), (0x1FFFFEE, 25), (0x1FFFFEF, 25),
    (0xFFFFF4, 24), (0xFFFFF5, 24), (0x3FFFFEA, 26), (0x7FFFF4, 23),
    (0x3FFFFEB, 26), (0x7FFFFE6, 27), (0x3FFFFEC, 26), (0x3FFFFED, 26),
    (0x7FFFFE7, 27), (0x7FFFFE8, 27), (0x7FFFFE9, 27), (0x7FFFFEA, 27),
    (0x7FFFFEB, 27), (0xFFFFFFE, 28), (0x7FFFFEC, 27), (0x7FFFFED, 27),
    (0x7FFFFEE, 27), (0x7FFFFEF, 27), (0x7FFFFF0, 27), (0x3FFFFEE, 26),
    # 256: EOS
    (0x3FFFFFFF, 30),
)
# fmt: on
EOS = 256

_LEAF = 1 << 16  # child values at or above this are leaves: _LEAF + symbol


class HuffmanError(ValueError):
    """A Huffman string RFC 7541 refuses: EOS inside it, or padding that is not 0-7 one-bits."""


def _build_tree() -> list[list[int]]:
    """The code as a tree: ``tree[node] = [child for bit 0, child for bit 1]``, node 0 the root."""
    tree: list[list[int]] = [[-1, -1]]
    for symbol, (code, length) in enumerate(CODES):
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = (code >> shift) & 1
            child = tree[node][bit]
            if child == -1:
                child = len(tree)
                tree.append([-1, -1])
                tree[node][bit] = child
            if child >= _LEAF:
                raise AssertionError(f"code of symbol {symbol} extends another code")
            node = child
        bit = code & 1
        if tree[node][bit] != -1:
            raise AssertionError(f"code of symbol {symbol} is a prefix of another code")
        tree[node][bit] = _LEAF + symbol
    if any(-1 in children for children in tree):
        raise AssertionError("the Huffman code is not complete")
    return tree


def _build_tables() -> tuple[list[int], list[bytes], frozenset[int]]:
    tree = _build_tree()
    sink = len(tree)  # reached by decoding EOS; every byte keeps it there

    # Nibble step first (16 inputs per node), then compose two nibbles into a byte step.
    nib_next: list[int] = []
    nib_emit: list[bytes] = []
    for node in range(len(tree)):
        for nibble in range(16):
            at = node
            out = bytearray()
            for shift in (3, 2, 1, 0):
                child = tree[at][(nibble >> shift) & 1]
                if child >= _LEAF:
                    symbol = child - _LEAF
                    if symbol == EOS:
                        at = sink
                        break
                    out.append(symbol)
                    at = 0
                else:
                    at = child
            nib_next.append(at)
            nib_emit.append(bytes(out))
    nib_next.extend([sink] * 16)
    nib_emit.extend([b""] * 16)

    interned: dict[bytes, bytes] = {}
    next_state: list[int] = []
    emit: list[bytes] = []
    for node in range(sink + 1):
        for byte in range(256):
            i = node * 16 + (byte >> 4)
            mid = nib_next[i]
            j = mid * 16 + (byte & 15)
            both = nib_emit[i] + nib_emit[j] if mid != sink else b""
            next_state.append(nib_next[j] << 8)
            emit.append(interned.setdefault(both, both))

    accepting = {0}
    node = 0
    for _ in range(7):
        node = tree[node][1]
        accepting.add(node << 8)
    return next_state, emit, frozenset(accepting)


_NEXT, _EMIT, _ACCEPTING = _build_tables()


def decode_huffman(data: bytes) -> bytes:
    """Decode one Huffman-coded string literal, or raise :class:`HuffmanError`."""
    next_state = _NEXT
    emit = _EMIT
    state = 0
    out: list[bytes] = []
    append = out.append
    for byte in data:
        i = state | byte
        state = next_state[i]
        append(emit[i])
    if state not in _ACCEPTING:
        raise HuffmanError("Huffman string with EOS, or with padding that is not 0-7 one-bits")
    return b"".join(out)


def encode_huffman(data: bytes) -> bytes:
    """Huffman-code ``data`` (padding with the EOS prefix).

    The link encoder does not use it (see the module docstring); it exists so tests and
    benchmarks can produce Huffman strings from this module's own table as well as hpack's.
    """
    acc = 0
    bits = 0
    for byte in data:
        code, length = CODES[byte]
        acc = (acc << length) | code
        bits += length
    pad = -bits % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    return acc.to_bytes((bits + pad) // 8, "big")
