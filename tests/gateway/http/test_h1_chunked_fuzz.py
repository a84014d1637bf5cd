"""The chunked decoder against a grammar-exact reference decoder written here, under hypothesis.

Why: the body's end is where request smuggling lives.  If the gateway takes a body as complete
where a parser that follows RFC 9112 section 7.1 would not (or the other way round), the bytes
between the two readings reach the upstream as a second request.  So for any byte stream the
decoder must give the same verdict (complete / malformed / needs more bytes), the same body,
the same trailers and the same leftover bytes (the next message) as the reference, however the
bytes are split across reads and however little room each read has.

The reference is written from the ABNF, independently of ``gateway/http/h1_body.py``
(a hand-written recursive descent instead of a regular expression):

    chunked-body   = *chunk last-chunk trailer-section CRLF
    chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
    chunk-size     = 1*HEXDIG
    last-chunk     = 1*("0") [ chunk-ext ] CRLF
    chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    chunk-ext-name = token
    chunk-ext-val  = token / quoted-string
    trailer-section = *( field-line CRLF )

plus the gateway's documented bounds, which are policy rather than grammar: at most 16 hex
digits, a chunk-size line of at most ``MAX_CHUNK_LINE`` bytes, a trailer section of at most
``max_trailer_bytes`` bytes and ``max_headers`` fields.  A line is judged once its CRLF has
arrived; before that only what can never become valid is rejected early (a line already over
its bound, a LF without its CR, and in the trailer section a NUL or a stray CR).
"""

from __future__ import annotations

import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st

from foundation.errors import IsthmusError
from gateway.http.errors import BadFraming
from gateway.http.framing import Framing, FramingKind
from gateway.http.h1_body import MAX_CHUNK_LINE, MAX_CHUNK_SIZE_DIGITS, body_decoder

MAX_HEADERS = 3
MAX_TRAILER_BYTES = 80

HEXDIG = b"0123456789abcdefABCDEF"
TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = bytes(range(0x21, 0x7F))
OBS_TEXT = bytes(range(0x80, 0x100))
QDTEXT = b"\t !" + bytes(range(0x23, 0x5C)) + bytes(range(0x5D, 0x7F)) + OBS_TEXT
FIELD_VCHAR = VCHAR + OBS_TEXT

Verdict = tuple[str, bytes, bytes, tuple[tuple[bytes, bytes], ...]]


class Malformed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------


def _bws(line: bytes, i: int) -> int:
    while i < len(line) and line[i] in b" \t":
        i += 1
    return i


def _token(line: bytes, i: int) -> int:
    j = i
    while j < len(line) and line[j] in TCHAR:
        j += 1
    if j == i:
        raise Malformed("token expected")
    return j


def _quoted_string(line: bytes, i: int) -> int:
    if line[i : i + 1] != b'"':
        raise Malformed("quoted-string expected")
    i += 1
    while i < len(line):
        c = line[i]
        if c == 0x22:
            return i + 1
        if c == 0x5C:  # quoted-pair
            if i + 1 >= len(line) or line[i + 1] not in b"\t " + VCHAR + OBS_TEXT:
                raise Malformed("bad quoted-pair")
            i += 2
        elif c in QDTEXT:
            i += 1
        else:
            raise Malformed("byte not allowed in a quoted-string")
    raise Malformed("unterminated quoted-string")


def _chunk_size_line(line: bytes) -> int:
    """The chunk size of ``chunk-size [ chunk-ext ]``; raises ``Malformed``."""
    i = 0
    while i < len(line) and line[i] in HEXDIG:
        i += 1
    if i == 0 or i > MAX_CHUNK_SIZE_DIGITS:
        raise Malformed("chunk-size")
    size = int(line[:i], 16)
    while i < len(line):  # each round: BWS ";" BWS name [ BWS "=" BWS value ]
        i = _bws(line, i)
        if line[i : i + 1] != b";":
            raise Malformed("';' expected")
        i = _token(line, _bws(line, i + 1))
        j = _bws(line, i)
        if line[j : j + 1] == b"=":
            j = _bws(line, j + 1)
            i = _quoted_string(line, j) if line[j : j + 1] == b'"' else _token(line, j)
    return size


def _field_line(line: bytes) -> tuple[bytes, bytes]:
    """``field-name ":" OWS field-value OWS`` (RFC 9110 section 5.5, no obs-fold)."""
    name_end = _token(line, 0)
    if line[name_end : name_end + 1] != b":":
        raise Malformed("':' expected right after the field name")
    value = line[name_end + 1 :].strip(b" \t")
    if any(c not in FIELD_VCHAR + b" \t" for c in value):
        raise Malformed("byte not allowed in a field value")
    return line[:name_end].lower(), value


def _has_stray_line_byte(region: bytes) -> bool:
    """A NUL, a LF not after a CR, or a CR not before a LF (a final CR may get its LF)."""
    for i, c in enumerate(region):
        if c == 0:
            return True
        if c == 0x0A and (i == 0 or region[i - 1] != 0x0D):
            return True
        if c == 0x0D and i + 1 < len(region) and region[i + 1] != 0x0A:
            return True
    return False


def reference(data: bytes) -> Verdict:
    """("accept", body, leftover, trailers), ("reject", ...) or ("incomplete", body so far)."""
    body = b""
    pos = 0
    try:
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:  # the size line has not ended yet
                rest = data[pos:]
                if len(rest) > MAX_CHUNK_LINE or b"\n" in rest:
                    raise Malformed("size line too long or ended by a bare LF")
                return ("incomplete", body, b"", ())
            if eol - pos > MAX_CHUNK_LINE:
                raise Malformed("size line too long")
            size = _chunk_size_line(data[pos:eol])
            pos = eol + 2
            if size == 0:
                break
            if len(data) - pos < size:  # what has arrived of the data is delivered
                return ("incomplete", body + data[pos:], b"", ())
            body += data[pos : pos + size]
            pos += size
            tail = data[pos : pos + 2]
            if tail != b"\r\n"[: len(tail)]:
                raise Malformed("chunk data not followed by CRLF")
            if len(tail) < 2:
                return ("incomplete", body, b"", ())
            pos += 2
        rest = data[pos:]
        if rest.startswith(b"\r\n"):
            return ("accept", body, rest[2:], ())
        end = rest.find(b"\r\n\r\n")
        if end < 0 or end + 4 > MAX_TRAILER_BYTES:
            if len(rest) >= MAX_TRAILER_BYTES or _has_stray_line_byte(rest):
                raise Malformed("trailer section too large or with a stray CR/LF/NUL")
            return ("incomplete", body, b"", ())
        section = rest[:end]
        if _has_stray_line_byte(section):
            raise Malformed("stray CR/LF/NUL in the trailer section")
        lines = section.split(b"\r\n")
        if len(lines) > MAX_HEADERS:
            raise Malformed("too many trailer fields")
        trailers = tuple(_field_line(line) for line in lines)
        return ("accept", body, rest[end + 4 :], trailers)
    except Malformed:
        return ("reject", b"", b"", ())


# ---------------------------------------------------------------------------------------------
# The decoder under test, fed as a connection feeds it
# ---------------------------------------------------------------------------------------------


def decode(pieces: list[bytes], max_bytes: int) -> Verdict:
    decoder = body_decoder(
        Framing(FramingKind.CHUNKED),
        BadFraming,
        max_headers=MAX_HEADERS,
        max_trailer_bytes=MAX_TRAILER_BYTES,
    )
    buf = bytearray()
    body = b""
    try:
        for piece in pieces:
            buf += piece
            for _ in range(len(buf) + 3):  # each round takes data or framing, or stops
                if decoder.done:
                    break
                data = decoder.decode(buf, max_bytes)
                assert len(data) <= max_bytes
                body += data
                if not data:
                    break
    except IsthmusError as exc:
        assert isinstance(exc, BadFraming)
        return ("reject", b"", b"", ())
    if decoder.done:
        return ("accept", body, bytes(buf), decoder.trailers)
    return ("incomplete", body, b"", ())


# ---------------------------------------------------------------------------------------------
# Inputs: mostly well-formed messages with grammar-aware damage, some plain noise
# ---------------------------------------------------------------------------------------------

NASTY = [b";", b"=", b'"', b"\\", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00", b"\x01", b"\x7f"]
NASTY += [b"\x80", b"\xff", b",", b"(", b"@", b"a", b"Z", b"9", b"-", b"~", b"0"]
BITS = st.sampled_from(NASTY)
TOKENS = st.binary(min_size=1, max_size=4).map(lambda b: bytes(TCHAR[c % len(TCHAR)] for c in b))
QUOTED = st.lists(
    st.one_of(
        st.sampled_from([b"a", b" ", b"\t", b";", b"=", b"\x80", b"'"]),
        st.sampled_from([b'\\"', b"\\\\", b"\\a", b"\\ "]),
    ),
    max_size=5,
).map(lambda parts: b'"' + b"".join(parts) + b'"')
BWS = st.sampled_from([b"", b"", b"", b" ", b"\t", b"  "])


@st.composite
def good_ext(draw: st.DrawFn) -> bytes:
    out = draw(BWS) + b";" + draw(BWS) + draw(TOKENS)
    if draw(st.booleans()):
        out += draw(BWS) + b"=" + draw(BWS) + draw(st.one_of(TOKENS, QUOTED))
    return out


def _damage(draw: st.DrawFn, good: bytes) -> bytes:
    """Insert, replace or cut at a random point (a quote left open, a CR in a value...)."""
    at = draw(st.integers(0, len(good)))
    how = draw(st.sampled_from(["insert", "replace", "cut"]))
    if how == "cut":
        return good[:at]
    bit = draw(BITS)
    return good[:at] + bit + good[at + (how == "replace") :]


@st.composite
def extensions(draw: st.DrawFn) -> bytes:
    exts = b"".join(draw(st.lists(good_ext(), max_size=3)))
    if draw(st.integers(0, 5)) == 0:
        exts = _damage(draw, exts)
    return exts


@st.composite
def size_text(draw: st.DrawFn, size: int) -> bytes:
    text = format(size, "x").encode()
    if draw(st.booleans()):
        text = text.upper()
    text = b"0" * draw(st.sampled_from([0, 0, 0, 1, 3, 16 - len(text), 17 - len(text)])) + text
    if draw(st.integers(0, 9)) == 0:
        text = _damage(draw, text)
    return text


@st.composite
def chunk(draw: st.DrawFn) -> bytes:
    data = draw(st.binary(max_size=12))
    size = len(data) + draw(st.sampled_from([0] * 18 + [-1, 1]))
    end = draw(st.sampled_from([b"\r\n"] * 30 + [b"\n", b"\r", b"", b"\r\r\n", b"x\r\n"]))
    return draw(size_text(max(size, 0))) + draw(extensions()) + b"\r\n" + data + end


GOOD_FIELDS = [b"X: 1", b"x-a: b c", b"X:", b"X:  v\t", b"Y: \x80", b'X: "q"']
BAD_FIELDS = [b"Junk", b"X : 1", b" X: 1", b"X: a\x01", b"X: a\rb", b"X: a\nb", b"X: \x00"]
FIELDS = st.sampled_from(GOOD_FIELDS * 4 + BAD_FIELDS + [b"X: " + b"v" * 70])


@st.composite
def chunked_message(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # plain noise from the characters that matter
        return b"".join(
            draw(
                st.lists(
                    st.one_of(BITS, st.sampled_from(list(b"05;\r\n")).map(lambda c: bytes([c]))),
                    max_size=30,
                )
            )
        )
    wire = b"".join(draw(st.lists(chunk(), max_size=3)))
    wire += draw(size_text(0)) + draw(extensions()) + b"\r\n"
    trailers = draw(st.lists(FIELDS, max_size=4)) if draw(st.booleans()) else []
    wire += b"".join(t + b"\r\n" for t in trailers)
    wire += draw(st.sampled_from([b"\r\n"] * 20 + [b"\n", b"\r", b"", b"\r\r\n"]))
    wire += draw(st.sampled_from([b"", b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n", b"\r\n", b"X"]))
    if draw(st.integers(0, 7)) == 0:
        wire = wire[: draw(st.integers(0, len(wire)))]
    return wire


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


@settings(max_examples=1000, deadline=None)
@given(
    wire=chunked_message(),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    max_bytes=st.integers(1, 40),
)
@example(wire=b'5;a="\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n', cuts=[], max_bytes=9)
@example(wire=b'5;a="x\r\n"\r\nhello\r\n0\r\n\r\n', cuts=[], max_bytes=9)
@example(wire=b'5 ;a = "x\\"y" ; b\r\nhello\r\n0\r\n\r\n', cuts=[3], max_bytes=9)
@example(wire=b"5;\r\nhello\r\n0\r\n\r\n", cuts=[], max_bytes=9)
@example(wire=b"5;a=\r\nhello\r\n0\r\n\r\n", cuts=[], max_bytes=9)
@example(wire=b"5;a b\r\nhello\r\n0\r\n\r\n", cuts=[], max_bytes=9)
def test_decoder_agrees_with_the_grammar(wire: bytes, cuts: list[int], max_bytes: int) -> None:
    assert decode(_split(wire, cuts), max_bytes) == reference(wire)


def test_the_reference_itself_on_known_lines() -> None:
    """The reference is only as good as its grammar: pin it on lines whose verdict is known."""
    good = [b"5", b"05", b"5;a", b"5;a=b", b'5;a="x y"', b'5 ; a = "\\""', b"5;a;b=c\t;d"]
    bad = [b"", b" 5", b"5 ", b"5;", b"5;a=", b'5;a="', b'5;a="\\', b"5;a b", b"5;=b", b"5,a"]
    bad += [b'5;a="\r"', b"5;a=b c", b"0x5", b"1" + b"0" * 16]
    for line in good:
        assert reference(line + b"\r\nhello\r\n0\r\n\r\n")[0] == "accept", line
    for line in bad:
        assert reference(line + b"\r\nhello\r\n0\r\n\r\n")[0] == "reject", line
