"""The inbound layer (preface, frames, header blocks) against h2's FrameBuffer, any split.

The frames generated here are ones where hyperframe reads as RFC 9113 does (its deviations are
covered frame by frame in test_frames.py); what is under test is the preface check, the
assembly of HEADERS/PUSH_PROMISE + CONTINUATION into one block, the refusals of anything else
inside a block, and the bound on CONTINUATION frames, whatever the split of the bytes.
"""

from __future__ import annotations

import itertools

import pytest
from h2.exceptions import ProtocolError
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import ContinuationFrame as HfContinuation
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.h2.codec import frames as fr
from overlay.h2.codec.errors import CodecError
from overlay.h2.codec.inbound import PREFACE, BadPreface, HeaderBlockFlood, InboundFrames
from tests.overlay.h2.codec.test_frames import _as_dict_settings, _from_hyperframe, raw

REFUSED = "refused"


@st.composite
def block_frames(draw: st.DrawFn) -> tuple[int, int, int, bytes]:
    """Frames around header blocks, in forms hyperframe reads as the RFC does."""
    kind = draw(st.sampled_from(["headers", "continuation", "continuation", "other", "push"]))
    stream = draw(st.sampled_from([1, 1, 1, 3]))
    end_headers = fr.FLAG_END_HEADERS if draw(st.booleans()) else 0
    fragment = draw(st.binary(max_size=20))
    if kind == "headers":
        flags = end_headers | draw(st.sampled_from([0, fr.FLAG_END_STREAM]))
        if draw(st.booleans()):
            flags |= fr.FLAG_PRIORITY
            fragment = draw(st.binary(min_size=5, max_size=5)) + fragment
        return fr.HEADERS, flags, stream, fragment
    if kind == "continuation":
        return fr.CONTINUATION, end_headers, stream, fragment
    if kind == "push":
        promised = (2 * draw(st.integers(1, 50))).to_bytes(4, "big")
        return fr.PUSH_PROMISE, end_headers, stream, promised + fragment
    return draw(
        st.sampled_from(
            [
                (fr.DATA, fr.FLAG_END_STREAM, 1, b"body"),
                (fr.PING, 0, 0, b"12345678"),
                (fr.SETTINGS, 0, 0, b"\x00\x04\x00\x00\xff\xff"),
                (fr.SETTINGS, fr.FLAG_ACK, 0, b""),
                (fr.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01\x00"),
                (fr.RST_STREAM, 0, 1, b"\x00\x00\x00\x08"),
                (0x20, 0xFF, 1, b"extension"),
            ]
        )
    )


@st.composite
def whole_blocks(draw: st.DrawFn) -> list[tuple[int, int, int, bytes]]:
    """A well-formed block: HEADERS or PUSH_PROMISE, then CONTINUATIONs, the last with
    END_HEADERS (the single frames above break such blocks in every way)."""
    stream = draw(st.sampled_from([1, 3]))
    count = draw(st.integers(0, 5))
    if draw(st.booleans()):
        first = (fr.HEADERS, draw(st.sampled_from([0, fr.FLAG_END_STREAM])), stream, b"h")
    else:
        first = (fr.PUSH_PROMISE, 0, stream, b"\x00\x00\x00\x02p")
    if not count:
        return [(first[0], first[1] | fr.FLAG_END_HEADERS, first[2], first[3])]
    tail = [
        (fr.CONTINUATION, fr.FLAG_END_HEADERS if i == count - 1 else 0, stream, bytes([65 + i]))
        for i in range(count)
    ]
    return [first, *tail]


_SEQUENCE = st.lists(whole_blocks() | block_frames().map(lambda f: [f]), min_size=1, max_size=8)


def h2_reads(data: bytes, bounds: list[int], server: bool, max_size: int) -> tuple[list, bool]:
    buffer = FrameBuffer(server=server)
    buffer.max_frame_size = max_size
    got: list[fr.Frame] = []
    try:
        for start, stop in itertools.pairwise(bounds):
            buffer.add_data(data[start:stop])
            for f in buffer:
                if isinstance(f, HfContinuation):
                    # Yielded outside a block; h2's connection always refuses it
                    # (H2Connection._receive_naked_continuation).
                    return got, True
                got.append(_from_hyperframe(f, f.body_len))
    except ProtocolError:
        return got, True
    return got, False


def our_reads(data: bytes, bounds: list[int], server: bool, max_size: int) -> tuple[list, bool]:
    inbound = InboundFrames(server=server, max_frame_size=max_size, max_block_bytes=1 << 20)
    got: list[fr.Frame] = []
    try:
        for start, stop in itertools.pairwise(bounds):
            inbound.receive_data(data[start:stop])
            while (frame := inbound.next_frame()) is not None:
                got.append(_as_dict_settings(frame))
    except CodecError:
        return got, True
    return got, False


@settings(max_examples=600, deadline=None)
@given(
    _SEQUENCE,
    st.lists(st.integers(0, 10_000), max_size=10),
    st.booleans(),
    st.sampled_from([None, None, None, 0, 5, 23]),
    st.sampled_from([fr.DEFAULT_MAX_FRAME_SIZE, 24]),
)
def test_same_as_h2_frame_buffer_under_any_split(
    units: list[list[tuple[int, int, int, bytes]]],
    cuts: list[int],
    server: bool,
    corrupt: int | None,
    max_size: int,
) -> None:
    body = b"".join(raw(*f) for unit in units for f in unit)
    preface = bytearray(PREFACE)
    if corrupt is not None:
        preface[corrupt] ^= 0x20
    data = bytes(preface) + body if server else body
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    assert our_reads(data, bounds, server, max_size) == h2_reads(data, bounds, server, max_size)


def test_header_block_assembled() -> None:
    inbound = InboundFrames(server=False)
    inbound.receive_data(
        raw(fr.HEADERS, fr.FLAG_END_STREAM, 1, b"ab")
        + raw(fr.CONTINUATION, 0, 1, b"cd")
        + raw(fr.CONTINUATION, fr.FLAG_END_HEADERS, 1, b"ef")
    )
    assert inbound.next_frame() == fr.HeadersFrame(1, b"abcdef", True, True, None)
    assert not inbound.in_header_block


def test_continuation_count_bound() -> None:
    def block(n: int) -> bytes:
        parts = [raw(fr.HEADERS, 0, 1, b"")]
        parts += [raw(fr.CONTINUATION, 0, 1, b"") for _ in range(n - 1)]
        return b"".join([*parts, raw(fr.CONTINUATION, fr.FLAG_END_HEADERS, 1, b"")])

    inbound = InboundFrames(server=False, max_continuations=3)
    inbound.receive_data(block(3))
    assert inbound.next_frame() == fr.HeadersFrame(1, b"", False, True, None)
    inbound = InboundFrames(server=False, max_continuations=3)
    inbound.receive_data(block(4))
    with pytest.raises(HeaderBlockFlood) as info:
        inbound.next_frame()
    assert info.value.h2_error_code == 0xB


def test_block_bytes_bound_checked_as_frames_arrive() -> None:
    inbound = InboundFrames(server=False, max_block_bytes=10)
    inbound.receive_data(raw(fr.HEADERS, 0, 1, b"x" * 6))
    assert inbound.next_frame() is None
    inbound.receive_data(raw(fr.CONTINUATION, 0, 1, b"x" * 4))  # 10: at the bound
    assert inbound.next_frame() is None
    inbound.receive_data(raw(fr.CONTINUATION, 0, 1, b"x"))  # 11, END_HEADERS not even sent
    with pytest.raises(HeaderBlockFlood):
        inbound.next_frame()
    inbound = InboundFrames(server=False, max_block_bytes=10)
    inbound.receive_data(raw(fr.HEADERS, fr.FLAG_END_HEADERS, 1, b"x" * 11))
    with pytest.raises(HeaderBlockFlood):
        inbound.next_frame()


def test_bad_preface_refused_at_first_wrong_byte() -> None:
    inbound = InboundFrames(server=True)
    inbound.receive_data(PREFACE[:10])
    with pytest.raises(BadPreface):
        inbound.receive_data(b"X")
    inbound = InboundFrames(server=True)
    with pytest.raises(BadPreface):
        inbound.receive_data(b"GET / HTTP/1.1\r\n")


def test_frame_inside_block_refused() -> None:
    inbound = InboundFrames(server=False)
    inbound.receive_data(raw(fr.HEADERS, 0, 1, b"") + raw(fr.PING, 0, 0, b"x" * 8))
    with pytest.raises(fr.FrameError):
        inbound.next_frame()
    inbound = InboundFrames(server=False)
    inbound.receive_data(raw(fr.HEADERS, 0, 1, b"") + raw(fr.CONTINUATION, 4, 3, b""))
    with pytest.raises(fr.FrameError):
        inbound.next_frame()
