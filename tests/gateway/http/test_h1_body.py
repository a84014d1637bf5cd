"""The sans-IO HTTP/1.1 body core: framing, strict chunked decoding, encoding, keep-alive."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import IsthmusError
from gateway.http.errors import BadFraming, UpstreamProtocolError
from gateway.http.framing import Framing, FramingKind
from gateway.http.h1_body import (
    MAX_CHUNK_LINE,
    BodyDecoder,
    body_decoder,
    expects_continue,
    keeps_alive,
    request_body_framing,
    response_body_framing,
)
from gateway.http.h1_encode import (
    CHUNKED,
    CLOSE_DELIMITED,
    NO_BODY,
    LengthEncoder,
    LocalFramingError,
    encode_request_head,
    encode_response_head,
)
from gateway.http.h1_server import H1ServerConnection
from gateway.http.headers import parse_request_head, parse_response_head
from gateway.http.message import Headers, RequestHead, ResponseHead

NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"


def _decoder(
    kind: FramingKind, length: int = 0, *, error: type[IsthmusError] = BadFraming
) -> BodyDecoder:
    return body_decoder(Framing(kind, length), error, max_headers=10, max_trailer_bytes=1024)


def _decode(
    decoder: BodyDecoder, pieces: list[bytes], max_bytes: int = 1 << 20
) -> tuple[bytes, bytes]:
    """Feed ``pieces`` one at a time as a connection would; returns (body data, leftover)."""
    buf = bytearray()
    out = b""
    for piece in pieces:
        buf += piece
        for _ in range(len(buf) + 2):
            data = decoder.decode(buf, max_bytes)
            assert len(data) <= max_bytes
            out += data
            if not data:
                break
    return out, bytes(buf)


# ------------------------------------------------------------------------------------------
# chunked round trip
# ------------------------------------------------------------------------------------------

NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12)
VALUES = st.binary(max_size=20).map(
    lambda b: bytes(c for c in b if c == 9 or 0x20 <= c != 0x7F).strip(b" \t")
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=0, max_size=300), max_size=8),
    trailers=st.lists(st.tuples(NAMES.map(str.encode), VALUES), max_size=5),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    max_bytes=st.integers(1, 500),
)
def test_chunked_round_trip_under_any_rechunking(
    pieces: list[bytes], trailers: list[tuple[bytes, bytes]], cuts: list[int], max_bytes: int
) -> None:
    wire = b"".join(CHUNKED.data(p) for p in pieces) + CHUNKED.end(tuple(trailers)) + NEXT
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    split = [wire[a:b] for a, b in itertools.pairwise(bounds)]
    decoder = _decoder(FramingKind.CHUNKED)
    assert _decode(decoder, split, max_bytes) == (b"".join(pieces), NEXT)
    assert decoder.done
    assert decoder.trailers == tuple(trailers)


def test_chunked_extensions_are_ignored_and_pieces_are_joined() -> None:
    decoder = _decoder(FramingKind.CHUNKED)
    wire = b'5;name=value;flag\r\nhello\r\n1 ; q = "a \\" b"\r\n!\r\n0;last\r\nX-Sum: 1\r\n\r\n'
    wire += NEXT
    assert _decode(decoder, [wire]) == (b"hello!", NEXT)
    assert decoder.trailers == ((b"x-sum", b"1"),)


def test_chunked_decode_with_zero_room_takes_only_the_framing() -> None:
    # What the server does after answering: an unread last chunk completes the body...
    decoder = _decoder(FramingKind.CHUNKED)
    buf = bytearray(b"0\r\n\r\n" + NEXT)
    assert decoder.decode(buf, 0) == b"" and decoder.done and bytes(buf) == NEXT
    # ...but unread data is never skipped.
    decoder = _decoder(FramingKind.CHUNKED)
    buf = bytearray(b"3\r\nabc\r\n0\r\n\r\n")
    assert decoder.decode(buf, 0) == b"" and not decoder.done
    assert decoder.decode(buf, 2) == b"ab" and decoder.decode(buf, 9) == b"c"
    assert decoder.done and not buf


# ------------------------------------------------------------------------------------------
# malformed chunked framing
# ------------------------------------------------------------------------------------------

MALFORMED: list[tuple[str, bytes]] = [
    ("bad-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("hex-prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("underscore", b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"),
    ("plus", b"+5\r\nhello\r\n0\r\n\r\n"),
    ("negative", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("leading-space", b" 5\r\nhello\r\n0\r\n\r\n"),
    ("trailing-space", b"5 \r\nhello\r\n0\r\n\r\n"),
    ("empty-size", b"\r\nhello\r\n0\r\n\r\n"),
    ("overflow-17-digits", b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n"),
    ("size-lf-only", b"5\nhello\r\n0\r\n\r\n"),
    ("size-lf-only-fails-before-a-crlf", b"5\nhello"),
    ("size-bare-cr", b"5\rX\r\nhello\r\n0\r\n\r\n"),
    ("ext-ctl", b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
    ("ext-nul", b"5;a\x00\r\nhello\r\n0\r\n\r\n"),
    ("ext-unterminated-quote", b'5;a="\r\nhello\r\n0\r\n\r\n'),
    ("ext-quote-spans-the-crlf", b'5;a="x\r\n"\r\nhello\r\n0\r\n\r\n'),
    ("ext-no-name", b"5;\r\nhello\r\n0\r\n\r\n"),
    ("ext-no-value", b"5;a=\r\nhello\r\n0\r\n\r\n"),
    ("ext-space-in-token", b"5;a=b c\r\nhello\r\n0\r\n\r\n"),
    ("ext-too-long", b"5;" + b"a" * MAX_CHUNK_LINE + b"\r\nhello\r\n0\r\n\r\n"),
    ("data-missing-crlf", b"5\r\nhelloXX0\r\n\r\n"),
    ("data-lf-only", b"5\r\nhello\n0\r\n\r\n"),
    ("data-cr-only", b"5\r\nhello\r0\r\n\r\n"),
    ("size-understates", b"3\r\nhello\r\n0\r\n\r\n"),
    ("trailer-ctl", b"0\r\nX-T: a\x01b\r\n\r\n"),
    ("trailer-no-colon", b"0\r\nJunk\r\n\r\n"),
    ("trailer-space-before-colon", b"0\r\nX : y\r\n\r\n"),
    ("trailer-obs-fold", b"0\r\nX: y\r\n z\r\n\r\n"),
    ("trailer-lf-only", b"0\r\nX: y\n\r\n"),
    ("trailer-bare-cr", b"0\r\nX: y\rZ: 1\r\n\r\n"),
    ("trailer-nul", b"0\r\nX: a\x00b\r\n\r\n"),
    ("trailers-too-many", b"0\r\n" + b"X: 1\r\n" * 11 + b"\r\n"),
    ("trailers-too-large", b"0\r\nX: " + b"v" * 1100 + b"\r\n\r\n"),
]


@pytest.mark.parametrize(("name", "wire"), MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("error", [BadFraming, UpstreamProtocolError])
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_malformed_chunked_raises_the_callers_error(
    name: str, wire: bytes, error: type[IsthmusError], bytewise: bool
) -> None:
    decoder = _decoder(FramingKind.CHUNKED, error=error)
    pieces = [wire[i : i + 1] for i in range(len(wire))] if bytewise else [wire]
    with pytest.raises(error):
        _decode(decoder, pieces)


def test_incomplete_chunked_body_is_not_done_and_eof_does_not_end_it() -> None:
    for wire in (b"5\r\nhel", b"5\r\nhello\r\n", b"0\r\nX: y\r\n", b"5;ext", b"5\r\nhello\r"):
        decoder = _decoder(FramingKind.CHUNKED)
        _decode(decoder, [wire])
        assert not decoder.done, wire
        assert decoder.finish_at_eof() is False


# ------------------------------------------------------------------------------------------
# Content-Length and close-delimited bodies
# ------------------------------------------------------------------------------------------


def test_length_decoder_stops_at_the_length_and_leaves_the_rest() -> None:
    decoder = _decoder(FramingKind.LENGTH, 5)
    assert _decode(decoder, [b"hel", b"lo" + NEXT]) == (b"hello", NEXT)
    assert decoder.done


def test_length_decoder_short_body_is_incomplete_at_eof() -> None:
    decoder = _decoder(FramingKind.LENGTH, 10)
    assert _decode(decoder, [b"abc"]) == (b"abc", b"")
    assert not decoder.done and decoder.finish_at_eof() is False


def test_length_decoder_bounds_pieces() -> None:
    decoder = _decoder(FramingKind.LENGTH, 10)
    buf = bytearray(b"0123456789")
    assert decoder.decode(buf, 4) == b"0123" and not decoder.done
    assert decoder.decode(buf, 100) == b"456789" and decoder.done


def test_close_delimited_ends_only_at_eof() -> None:
    decoder = _decoder(FramingKind.CLOSE)
    assert _decode(decoder, [b"until ", b"close"]) == (b"until close", b"")
    assert not decoder.done
    assert decoder.finish_at_eof() and decoder.done


def test_no_body_decoder_is_done_and_takes_nothing() -> None:
    decoder = _decoder(FramingKind.NONE)
    buf = bytearray(NEXT)
    assert decoder.done and decoder.decode(buf, 100) == b"" and bytes(buf) == NEXT


def test_length_encoder_refuses_overrun_and_early_end() -> None:
    encoder = LengthEncoder(5)
    assert encoder.data(b"abc") == b"abc"
    with pytest.raises(LocalFramingError):
        encoder.data(b"def")
    short = LengthEncoder(5)
    short.data(b"abc")
    with pytest.raises(LocalFramingError):
        short.end()
    exact = LengthEncoder(3)
    assert exact.data(b"abc") == b"abc" and exact.end() == b""


def test_other_encoders() -> None:
    with pytest.raises(LocalFramingError):
        NO_BODY.data(b"x")
    assert CLOSE_DELIMITED.data(b"raw") == b"raw" and CLOSE_DELIMITED.end() == b""
    assert CHUNKED.data(b"") == b""  # never a premature last-chunk
    assert CHUNKED.data(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert CHUNKED.end(((b"x-a", b"1"),)) == b"0\r\nx-a: 1\r\n\r\n"
    with pytest.raises(ValueError):
        CHUNKED.end(((b"x-a", b"1\r\nTransfer-Encoding: chunked"),))


# ------------------------------------------------------------------------------------------
# framing and keep-alive decisions
# ------------------------------------------------------------------------------------------


def _request(raw: bytes) -> RequestHead:
    return parse_request_head(raw)


def _response(raw: bytes) -> ResponseHead:
    return parse_response_head(raw)


def test_request_framing() -> None:
    assert request_body_framing(_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")).kind is (
        FramingKind.NONE
    )
    cl = request_body_framing(_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n"))
    assert cl == Framing(FramingKind.LENGTH, 7)
    te = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert request_body_framing(_request(te)).kind is FramingKind.CHUNKED


@pytest.mark.parametrize(
    ("method", "raw", "kind"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", FramingKind.NONE),
        (b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", FramingKind.NONE),
        (
            b"GET",
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            FramingKind.NONE,
        ),
        (b"GET", b"HTTP/1.1 103 Early Hints\r\n\r\n", FramingKind.NONE),
        (b"CONNECT", b"HTTP/1.1 200 OK\r\n\r\n", FramingKind.NONE),
        (b"CONNECT", b"HTTP/1.1 407 Auth\r\nContent-Length: 2\r\n\r\n", FramingKind.LENGTH),
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", FramingKind.LENGTH),
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", FramingKind.NONE),
        (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", FramingKind.CHUNKED),
        (b"GET", b"HTTP/1.1 200 OK\r\n\r\n", FramingKind.CLOSE),
        (b"GET", b"HTTP/1.0 200 OK\r\n\r\n", FramingKind.CLOSE),
    ],
)
def test_response_framing(method: bytes, raw: bytes, kind: FramingKind) -> None:
    assert response_body_framing(method, _response(raw)).kind is kind


def test_keep_alive_and_continue_rules() -> None:
    assert keeps_alive(b"1.1", ((b"host", b"a"),))
    assert not keeps_alive(b"1.1", ((b"connection", b"Keep-Alive, CLOSE"),))
    assert not keeps_alive(b"1.0", ((b"connection", b"keep-alive"),))
    assert expects_continue(_request(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n"))
    assert not expects_continue(_request(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"))


# ------------------------------------------------------------------------------------------
# head serialisation
# ------------------------------------------------------------------------------------------


def _send_response(
    request: bytes, status: int = 200, content_length: int | None = None, keep: bool = True
) -> tuple[bytes, object, bool]:
    req = _request(request)
    return encode_response_head(
        ResponseHead(status, ((b"x", b"y"),), b"OK"),
        [(b"x", b"y")],
        request_method=req.method,
        request_version=req.http_version,
        keep_alive=keep,
        content_length=content_length,
    )


GET11 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def test_response_head_framing_choices() -> None:
    out, encoder, keep = _send_response(GET11)
    assert out == b"HTTP/1.1 200 OK\r\nx: y\r\ntransfer-encoding: chunked\r\n\r\n"
    assert encoder is CHUNKED and keep
    out, encoder, keep = _send_response(GET11, content_length=3)
    assert out == b"HTTP/1.1 200 OK\r\nx: y\r\ncontent-length: 3\r\n\r\n"
    assert isinstance(encoder, LengthEncoder) and keep
    out, encoder, keep = _send_response(b"GET / HTTP/1.0\r\n\r\n", keep=False)
    assert out == b"HTTP/1.1 200 OK\r\nx: y\r\nconnection: close\r\n\r\n"
    assert encoder is CLOSE_DELIMITED and not keep
    out, encoder, keep = _send_response(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", content_length=9)
    assert out.endswith(b"content-length: 9\r\n\r\n") and encoder is NO_BODY and keep
    out, encoder, keep = _send_response(GET11, status=204)
    assert out == b"HTTP/1.1 204 OK\r\nx: y\r\n\r\n" and encoder is NO_BODY
    out, _, keep = _send_response(GET11, content_length=0, keep=False)
    assert out.endswith(b"content-length: 0\r\nconnection: close\r\n\r\n") and not keep
    with pytest.raises(ValueError):
        _send_response(GET11, status=101)


@pytest.mark.parametrize(
    "fields",
    [
        ((b"x", b"a\r\nContent-Length: 0"),),
        ((b"x", b"a\nb"),),
        ((b"x", b"a\x00b"),),
        ((b"x", b"a\x7fb"),),
        ((b"transfer-encoding: chunked", b"x"),),
        ((b"x y", b"1"),),
        ((b"", b"1"),),
    ],
)
def test_heads_with_injection_are_refused(fields: Headers) -> None:
    with pytest.raises(ValueError):
        encode_response_head(
            ResponseHead(200, fields),
            list(fields),
            request_method=b"GET",
            request_version=b"1.1",
            keep_alive=True,
            content_length=0,
        )


def test_request_head_host_first_and_framing() -> None:
    head = RequestHead(b"POST", b"/p", b"1.1", ((b"x-a", b"1"), (b"host", b"h")))
    out, encoder = encode_request_head(
        head, list(head.headers), content_length=None, has_body=True, trailing=((b"te", b"t"),)
    )
    assert out == (
        b"POST /p HTTP/1.1\r\nhost: h\r\nx-a: 1\r\ntransfer-encoding: chunked\r\nte: t\r\n\r\n"
    )
    assert encoder is CHUNKED
    out, encoder = encode_request_head(head, [(b"host", b"h")], content_length=4, has_body=True)
    assert out == b"POST /p HTTP/1.1\r\nhost: h\r\ncontent-length: 4\r\n\r\n"
    assert isinstance(encoder, LengthEncoder)
    _, encoder = encode_request_head(head, [(b"host", b"h")], content_length=None, has_body=False)
    assert encoder is NO_BODY
    with pytest.raises(ValueError):
        encode_request_head(
            RequestHead(b"GET", b"/a b", b"1.1", ()), [], content_length=None, has_body=False
        )


# ------------------------------------------------------------------------------------------
# through a connection: what the framing makes the codec refuse or send
# ------------------------------------------------------------------------------------------


async def _server_with(raw: bytes) -> tuple[H1ServerConnection, trio.abc.Stream]:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(raw)
    conn = H1ServerConnection(server)
    assert await conn.next_request() is not None
    return conn, client


async def test_sending_past_content_length_is_refused_and_closes() -> None:
    conn, _ = await _server_with(GET11)
    await conn.send_response(ResponseHead(200, ()), content_length=3)
    await conn.send_body(b"abc")
    with pytest.raises(LocalFramingError):
        await conn.send_body(b"d")
    assert not conn.keep_alive


async def test_ending_short_of_content_length_is_refused_and_closes() -> None:
    conn, _ = await _server_with(GET11 + GET11)
    await conn.send_response(ResponseHead(200, ()), content_length=3, body=b"ab")
    with pytest.raises(LocalFramingError):
        await conn.end_response()
    assert not conn.keep_alive
    assert await conn.next_request() is None  # the pipelined request is never answered


async def test_no_100_continue_when_the_body_is_already_here() -> None:
    conn, client = await _server_with(
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok"
    )
    assert await conn.receive_body() == b"ok"
    await conn.send_response(ResponseHead(200, ()), content_length=0, end=True)
    assert (await client.receive_some(65536)).startswith(b"HTTP/1.1 200 ")


async def test_http10_response_of_unknown_length_is_close_delimited() -> None:
    conn, client = await _server_with(b"GET / HTTP/1.0\r\n\r\n")
    await conn.send_response(ResponseHead(200, ()))
    await conn.send_body(b"raw")
    await conn.end_response()
    assert await client.receive_some(65536) == b"HTTP/1.1 200 \r\nconnection: close\r\n\r\nraw"
    assert not conn.keep_alive
