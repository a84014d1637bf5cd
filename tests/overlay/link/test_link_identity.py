"""The negative certificate suite over REAL TLS handshakes on 127.0.0.1, both directions.

* inbound: ``serve_links`` (our gateway) faces a raw OpenSSL client presenting the bad SVID;
  the handler must never run and the rejection is logged with a typed ``IdentityError``;
* outbound: ``open_link`` (our gateway) dials a raw OpenSSL server presenting the bad SVID and
  must raise a typed ``IdentityError``.

Where OpenSSL's pooled check would let the certificate through (``openssl_passes``), the error
must carry the SPIFFE layer's precise reason: that proves the post-handshake check, not OpenSSL,
did the rejecting.  The matching positive cases are accepted and carry bytes both ways.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from foundation.errors import IdentityError
from foundation.spiffe_id import SpiffeId
from overlay.identity.errors import NotAuthorized
from overlay.link.accept import serve_links
from overlay.link.dial import open_link
from overlay.link.link import Link, LinkError, LinkTimeout
from tests.overlay.identity.cases import (
    ALL_ANCHORS,
    CA_A,
    CA_B,
    NEGATIVE,
    POSITIVE,
    SERVER_CHAIN,
    SERVER_ID,
    SERVER_KEY,
    TRUSTED,
    Case,
)
from tests.overlay.identity.certfactory import identity, make_leaf, raw_context

CLIENT_ID = "spiffe://b.test/gateway/client"
CLIENT_CHAIN, CLIENT_KEY = make_leaf(CA_B, uris=[CLIENT_ID])


@asynccontextmanager
async def our_server(
    handler_calls: list[SpiffeId], *, authorize_ok: bool = True
) -> AsyncIterator[int]:
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))

    async def handler(link: Link) -> None:
        handler_calls.append(link.peer_id)
        data = await link.stream.receive_some(100)
        await link.stream.send_all(b"echo:" + data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_links(
                handler,
                host="127.0.0.1",
                port=0,
                identity=ident,
                authorize=lambda _sid: authorize_ok,
                handshake_timeout=5,
                task_status=task_status,
            )
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def raw_client(port: int, chain: Sequence[object], key: object) -> bytes:
    """An attacker: plain OpenSSL presenting ``chain``; returns what the server sent back."""
    ctx = raw_context(server=False, chain=chain, key=key, trust=[CA_A.cert])  # type: ignore[arg-type]
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=None)
    try:
        with trio.fail_after(5):
            await stream.do_handshake()
            await stream.send_all(b"hello")
            return await stream.receive_some(100)
    except trio.BrokenResourceError:
        return b""
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def raw_server(chain: Sequence[object], key: object) -> AsyncIterator[int]:
    ctx = raw_context(server=True, chain=chain, key=key, trust=ALL_ANCHORS)  # type: ignore[arg-type]

    async def handle(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, ctx, server_side=True)
        try:
            with trio.move_on_after(5):
                await stream.do_handshake()
                data = await stream.receive_some(100)
                await stream.send_all(b"echo:" + data)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def _rejections(caplog: pytest.LogCaptureFixture) -> list[BaseException]:
    return [
        r.error  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "isthmus.link" and isinstance(getattr(r, "error", None), IdentityError)
    ]


@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c.name)
async def test_inbound_bad_svid_is_rejected(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="isthmus.link")
    chain, key = case.make()
    calls: list[SpiffeId] = []
    async with our_server(calls) as port:
        reply = await raw_client(port, chain, key)
    assert reply == b""
    assert calls == []
    [err] = _rejections(caplog)
    if case.openssl_passes:
        assert case.reason in str(err)


@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c.name)
async def test_outbound_bad_svid_is_rejected(case: Case) -> None:
    chain, key = case.make()
    ident = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    uris = case.spec.uris
    expected = (
        SpiffeId.parse(uris[0])
        if uris and uris[0].startswith("spiffe://a.test/")
        else (
            SpiffeId.parse("spiffe://b.test/gateway/server")
            if case.name == "cross_trust_domain_spoof"
            else SpiffeId.parse("spiffe://a.test/workload")
        )
    )
    async with raw_server(chain, key) as port:
        with pytest.raises(IdentityError) as info:
            await open_link("127.0.0.1", port, identity=ident, expected=expected, timeout=5)
    assert not isinstance(info.value, NotAuthorized)
    if case.openssl_passes:
        assert case.reason in str(info.value)


@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
async def test_inbound_good_svid_is_accepted(case: Case) -> None:
    chain, key = case.make()
    calls: list[SpiffeId] = []
    async with our_server(calls) as port:
        reply = await raw_client(port, chain, key)
    assert reply == b"echo:hello"
    assert calls == [SpiffeId.parse(case.spec.uris[0])]


@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
async def test_outbound_good_svid_is_accepted(case: Case) -> None:
    chain, key = case.make()
    ident = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    expected = SpiffeId.parse(case.spec.uris[0])
    async with raw_server(chain, key) as port:
        link = await open_link("127.0.0.1", port, identity=ident, expected=expected, timeout=5)
        async with link:
            assert link.peer_id == expected
            assert link.stream.selected_alpn_protocol() == "h2"
            await link.stream.send_all(b"ping")
            with trio.fail_after(5):
                assert await link.stream.receive_some(100) == b"echo:ping"
        assert ident.live_links() == ()


async def test_gateway_to_gateway_link_across_trust_domains() -> None:
    """Both ends are ours: a.test server, b.test client, each trusting both domains."""
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    calls: list[SpiffeId] = []
    async with our_server(calls) as port:
        link = await open_link(
            "127.0.0.1", port, identity=client, expected=SpiffeId.parse(SERVER_ID), timeout=5
        )
        async with link:
            assert link.peer_id == SpiffeId.parse(SERVER_ID)
            assert client.live_links() == (link,)
            await link.stream.send_all(b"hi")
            with trio.fail_after(5):
                assert await link.stream.receive_some(100) == b"echo:hi"
            assert not link.stream.session_reused
    assert calls == [SpiffeId.parse(CLIENT_ID)]


async def test_dialer_requires_exactly_the_expected_id() -> None:
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    calls: list[SpiffeId] = []
    async with our_server(calls) as port:
        with pytest.raises(NotAuthorized, match=r"expected spiffe://a\.test/gateway/other"):
            await open_link(
                "127.0.0.1",
                port,
                identity=client,
                expected=SpiffeId.parse("spiffe://a.test/gateway/other"),
                timeout=5,
            )
    # The server accepted the (valid) client; the client refused the server: no link survives.
    assert client.live_links() == ()


async def test_acceptor_authorize_false_rejects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="isthmus.link")
    calls: list[SpiffeId] = []
    async with our_server(calls, authorize_ok=False) as port:
        assert await raw_client(port, CLIENT_CHAIN, CLIENT_KEY) == b""
    assert calls == []
    [err] = _rejections(caplog)
    assert isinstance(err, NotAuthorized)


async def test_no_client_certificate_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    import ssl

    caplog.set_level(logging.WARNING, logger="isthmus.link")
    calls: list[SpiffeId] = []
    async with our_server(calls) as port:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), ctx)
        with trio.fail_after(5):
            try:
                await stream.do_handshake()
                await stream.send_all(b"x")
                assert await stream.receive_some(10) == b""
            except trio.BrokenResourceError:
                pass
        await trio.aclose_forcefully(stream)
    assert calls == []
    assert len(_rejections(caplog)) == 1


async def test_handshake_timeout_on_silent_client(autojump_clock: trio.abc.Clock) -> None:
    calls: list[SpiffeId] = []
    async with our_server(calls) as port:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(60):
            # The server gives up after handshake_timeout=5 s and closes: we read EOF.
            assert await tcp.receive_some(10) == b""
        await tcp.aclose()
    assert calls == []


async def test_dial_timeout_on_silent_server(autojump_clock: trio.abc.Clock) -> None:
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))

    async def silent(tcp: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        start = trio.current_time()
        with pytest.raises(LinkTimeout):
            await open_link(
                "127.0.0.1", port, identity=client, expected=SpiffeId.parse(SERVER_ID), timeout=3
            )
        assert 3 <= trio.current_time() - start < 3.5
        nursery.cancel_scope.cancel()
    assert client.live_links() == ()


async def test_dial_refused_is_a_link_error() -> None:
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(LinkError) as info:
        await open_link(
            "127.0.0.1", port, identity=client, expected=SpiffeId.parse(SERVER_ID), timeout=5
        )
    assert not isinstance(info.value, LinkTimeout)
