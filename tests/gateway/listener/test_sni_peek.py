"""SNI peeking against real ClientHellos from Python's ssl, split and fuzzed."""

from __future__ import annotations

import contextlib
import ssl
from functools import partial

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.listener.sni_peek import (
    ClientHelloError,
    ClientHelloReader,
    ClientHelloTimeout,
    ClientHelloTooLarge,
    InvalidSni,
    MalformedClientHello,
    NoSni,
    NotTls,
    TruncatedClientHello,
    peek_sni,
    read_client_hello,
)


def client_hello(
    server_hostname: str | None,
    *,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    alpn: list[str] | None = None,
) -> bytes:
    """The exact bytes Python's ssl sends first (no network involved)."""
    ctx = ssl.create_default_context()
    if server_hostname is None:
        ctx.check_hostname = False
    ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def refragment(hello: bytes, size: int) -> bytes:
    """Re-split a single-record ClientHello into records of ``size`` payload bytes (legal)."""
    assert hello[0] == 22
    payload = hello[5:]
    out = b""
    for i in range(0, len(payload), size):
        part = payload[i : i + size]
        out += hello[:3] + len(part).to_bytes(2, "big") + part
    return out


HELLO = client_hello("api.default.isthmus")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("api.default.isthmus", {}),
        ("API.Default.Isthmus", {}),
        ("db.payments.aws-east.isthmus", {"max_version": ssl.TLSVersion.TLSv1_2}),
        ("x.y.isthmus", {"alpn": ["h2", "http/1.1"]}),
        ("a" * 63 + "." + "b" * 63 + ".isthmus", {}),
    ],
)
def test_real_client_hellos(name: str, kwargs: dict[str, object]) -> None:
    hello = client_hello(name, **kwargs)  # type: ignore[arg-type]
    assert peek_sni(hello) == name.lower()


def test_no_sni_from_real_client() -> None:
    with pytest.raises(NoSni):
        peek_sni(client_hello(None))


def test_ip_literal_is_never_sent_as_sni_but_is_rejected_if_forged() -> None:
    # Python's ssl omits SNI for IP addresses (RFC 6066), so no SNI:
    with pytest.raises(NoSni):
        peek_sni(client_hello("127.0.0.1"))
    forged = HELLO.replace(b"api.default.isthmus", b"10.0.0.1.1.2.3.44.1")
    with pytest.raises(InvalidSni):
        peek_sni(forged)


def test_every_split_point_needs_more_then_succeeds() -> None:
    for cut in range(len(HELLO)):
        reader = ClientHelloReader()
        assert reader.feed(HELLO[:cut]) is None, cut
        assert reader.feed(HELLO[cut:]) == "api.default.isthmus", cut


@pytest.mark.parametrize("size", [1, 7, 100, 511])
def test_hello_spread_over_many_records(size: int) -> None:
    data = refragment(HELLO, size)
    assert peek_sni(data) == "api.default.isthmus"
    reader = ClientHelloReader()
    results = [reader.feed(data[i : i + 3]) for i in range(0, len(data), 3)]
    assert results[-1] == "api.default.isthmus"
    assert all(r is None for r in results[:-1])


def test_bytes_after_hello_are_ignored() -> None:
    # A 0-RTT client may send ChangeCipherSpec and early data right after its hello.
    assert peek_sni(HELLO + b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05hello") == (
        "api.default.isthmus"
    )


BAD: list[tuple[str, bytes, type[ClientHelloError]]] = [
    ("http", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", NotTls),
    ("sslv2", b"\x80\x2e\x01\x00\x02" + b"\x00" * 40, NotTls),
    ("alert-record", b"\x15\x03\x01\x00\x02\x02\x28", NotTls),
    ("bad-record-version", b"\x16\x04\x01\x00\x05" + b"\x01" * 5, NotTls),
    ("server-hello", HELLO[:5] + b"\x02" + HELLO[6:], NotTls),
    ("zero-length-record", b"\x16\x03\x01\x00\x00", MalformedClientHello),
    ("oversize-record", b"\x16\x03\x01\x40\x01", MalformedClientHello),
    ("hello-length-huge", HELLO[:6] + b"\xff\xff\xff" + HELLO[9:], ClientHelloTooLarge),
    (
        "hello-length-short",
        HELLO[:6] + (int.from_bytes(HELLO[6:9], "big") - 5).to_bytes(3, "big") + HELLO[9:],
        MalformedClientHello,
    ),
    ("bad-hello-version", HELLO[:9] + b"\x02\x00" + HELLO[11:], NotTls),
]


@pytest.mark.parametrize(("name", "data", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(name: str, data: bytes, error: type[ClientHelloError]) -> None:
    with pytest.raises(error):
        peek_sni(data)


def _mutate_sni(hello: bytes, new: bytes) -> bytes:
    """Replace the host name inside a real hello, fixing every enclosing length."""
    old = b"api.default.isthmus"
    i = hello.index(old)
    delta = len(new) - len(old)
    out = bytearray(hello[:i] + new + hello[i + len(old) :])

    def bump(pos: int, size: int) -> None:
        value = int.from_bytes(out[pos : pos + size], "big") + delta
        out[pos : pos + size] = value.to_bytes(size, "big")

    bump(i - 2, 2)  # host_name length
    bump(i - 5, 2)  # server_name_list length
    bump(i - 7, 2)  # extension length
    # extensions block length: walk the hello to find it
    pos = 9 + 2 + 32
    pos += 1 + out[pos]
    pos += 2 + int.from_bytes(out[pos : pos + 2], "big")
    pos += 1 + out[pos]
    bump(pos, 2)
    bump(6, 3)  # handshake length (after the 1-byte type)
    bump(3, 2)  # record length
    return bytes(out)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        (b"api.default.isthmus.", InvalidSni),
        (b"-bad.isthmus", InvalidSni),
        (b"bad_.isthmus", InvalidSni),
        (b"a..b", InvalidSni),
        (b"a b.isthmus", InvalidSni),
        (b"\xff\xfe.isthmus", InvalidSni),
        (b"a\x00.isthmus", InvalidSni),
        (b"a" * 64 + b".isthmus", InvalidSni),
    ],
)
def test_invalid_host_names(name: bytes, error: type[ClientHelloError]) -> None:
    assert peek_sni(_mutate_sni(HELLO, b"ok.default.isthmus")) == "ok.default.isthmus"
    with pytest.raises(error):
        peek_sni(_mutate_sni(HELLO, name))


def test_duplicate_host_name_and_extension_rejected() -> None:
    i = HELLO.index(b"api.default.isthmus")
    # duplicate the whole server_name extension
    ext_start = i - 9
    ext = HELLO[ext_start : i + len(b"api.default.isthmus")]
    assert ext[:2] == b"\x00\x00"
    doubled = bytearray(HELLO[: i + 19] + ext + HELLO[i + 19 :])
    n = len(ext)
    pos = 9 + 2 + 32
    pos += 1 + doubled[pos]
    pos += 2 + int.from_bytes(doubled[pos : pos + 2], "big")
    pos += 1 + doubled[pos]
    for at, size in ((pos, 2), (6, 3), (3, 2)):
        value = int.from_bytes(doubled[at : at + size], "big") + n
        doubled[at : at + size] = value.to_bytes(size, "big")
    with pytest.raises(MalformedClientHello):
        peek_sni(bytes(doubled))


# ---------------------------------------------------------------------------------------------
# The trio helper
# ---------------------------------------------------------------------------------------------


async def test_helper_returns_exact_bytes_read_from_trickled_input() -> None:
    client, server = trio.testing.memory_stream_pair()
    data = refragment(HELLO, 50) + b"\x17\x03\x03\x00\x01X"

    async def trickle() -> None:
        for i in range(0, len(data), 13):
            await client.send_all(data[i : i + 13])
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        sni, raw = await read_client_hello(server)
    assert sni == "api.default.isthmus"
    assert data.startswith(raw) and len(raw) >= len(refragment(HELLO, 50))


async def test_helper_stalled_hello_times_out(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(HELLO[:100])
    start = trio.current_time()
    with pytest.raises(ClientHelloTimeout) as info:
        await read_client_hello(server, timeout_s=10)
    assert 10 <= trio.current_time() - start < 10.1
    assert info.value.data == HELLO[:100]
    assert info.value.http_status == 408


async def test_helper_truncated_and_no_sni_carry_data() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(HELLO[:50])
    await client.send_eof()
    with pytest.raises(TruncatedClientHello) as info:
        await read_client_hello(server)
    assert info.value.data == HELLO[:50]

    client, server = trio.testing.memory_stream_pair()
    plain = client_hello(None)
    await client.send_all(plain)
    with pytest.raises(NoSni) as no_sni:
        await read_client_hello(server)
    assert no_sni.value.data == plain


async def test_helper_never_reads_past_its_limit() -> None:
    # A record that claims to be a huge hello, followed by endless bytes.
    client, server = trio.testing.memory_stream_pair()
    flood = b"\x16\x03\x01\x40\x00\x01\x00\x3f\xfc" + b"\x03\x03" + b"A" * 70000
    await client.send_all(flood)
    await client.send_eof()
    with pytest.raises(ClientHelloTooLarge) as info:
        await read_client_hello(server, max_bytes=4096)
    assert len(info.value.data) <= 4096
    rest = b""
    for _ in range(100):
        more = await server.receive_some(1 << 20)
        if not more:
            break
        rest += more
    assert len(info.value.data) + len(rest) == len(flood)


async def test_forwarded_bytes_complete_a_real_tls_handshake() -> None:
    """An SNI relay on loopback: peek, connect to a real TLS server, forward bytes untouched,
    then splice. The client's handshake must succeed end to end (nothing was altered)."""
    ca = trustme.CA()
    cert = ca.issue_cert("api.default.isthmus")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    seen: list[str] = []

    async def tls_origin(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        data = await tls.receive_some(100)
        await tls.send_all(b"origin got " + data)
        await tls.aclose()

    async def relay(stream: trio.SocketStream, origin_port: int) -> None:
        sni, raw = await read_client_hello(stream)
        seen.append(sni)
        upstream = await trio.open_tcp_stream("127.0.0.1", origin_port)

        async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            for _ in range(1000):
                try:
                    chunk = await src.receive_some(65536)
                except trio.BrokenResourceError:
                    chunk = b""
                if not chunk:
                    break
                await dst.send_all(chunk)
            await dst.aclose()

        await upstream.send_all(raw)
        async with trio.open_nursery() as inner:
            inner.start_soon(pump, stream, upstream)
            inner.start_soon(pump, upstream, stream)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            origin = (
                await nursery.start(partial(trio.serve_tcp, tls_origin, 0, host="127.0.0.1"))
            )[0]
            origin_port = origin.socket.getsockname()[1]
            listeners = await nursery.start(
                partial(
                    trio.serve_tcp, partial(relay, origin_port=origin_port), 0, host="127.0.0.1"
                )
            )
            port = listeners[0].socket.getsockname()[1]
            raw = await trio.open_tcp_stream("127.0.0.1", port)
            tls = trio.SSLStream(raw, client_ctx, server_hostname="api.default.isthmus")
            await tls.send_all(b"ping")
            reply = await tls.receive_some(100)
            nursery.cancel_scope.cancel()
    assert reply == b"origin got ping"
    assert seen == ["api.default.isthmus"]


# ---------------------------------------------------------------------------------------------
# Fuzzing
# ---------------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(ClientHelloError):
        peek_sni(data, max_bytes=512)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(HELLO) - 1), st.integers(0, 255)), max_size=6),
    st.integers(1, 64),
)
def test_mutated_real_hellos_never_crash(flips: list[tuple[int, int]], chunk: int) -> None:
    data = bytearray(HELLO)
    for pos, value in flips:
        data[pos] = value
    reader = ClientHelloReader(max_bytes=len(HELLO) + 16)
    try:
        for i in range(0, len(data), chunk):
            result = reader.feed(bytes(data[i : i + chunk]))
            if result is not None:
                assert result == result.lower() and len(result) <= 253
                break
    except ClientHelloError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(16, 256))
def test_reader_never_accepts_more_than_limit(data: bytes, limit: int) -> None:
    reader = ClientHelloReader(max_bytes=limit)
    prefix = b"\x16\x03\x01\x40\x00\x01\x00\x3f\xfc"
    with pytest.raises(ClientHelloTooLarge):
        for i in range(0, len(prefix + data), 7):
            reader.feed((prefix + data)[i : i + 7])
    assert reader._seen <= limit
