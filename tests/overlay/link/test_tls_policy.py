"""Link TLS policy over real handshakes: TLS 1.3 only, ALPN h2 required, no session tickets."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from overlay.link.accept import serve_links
from overlay.link.link import Link, LinkError
from tests.overlay.identity.cases import CA_A, SERVER_CHAIN, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity, make_leaf, raw_context

CLIENT_CHAIN, CLIENT_KEY = make_leaf(CA_A, uris=["spiffe://a.test/gateway/client"])


def test_context_settings() -> None:
    state = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED)).state
    for ctx in (state.server_ctx, state.client_ctx):
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert not ctx.check_hostname
    assert state.server_ctx.num_tickets == 0
    assert state.server_ctx.options & ssl.OP_NO_TICKET


@asynccontextmanager
async def server(calls: list[Link]) -> AsyncIterator[int]:
    async def handler(link: Link) -> None:
        calls.append(link)
        await link.stream.send_all(b"ok")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                serve_links,
                handler,
                host="127.0.0.1",
                port=0,
                identity=identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED)),
                authorize=lambda _sid: True,
            )
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def attempt(port: int, ctx: ssl.SSLContext) -> bytes:
    stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), ctx)
    try:
        with trio.fail_after(5):
            await stream.do_handshake()
            return await stream.receive_some(10)
    except trio.BrokenResourceError:
        return b""
    finally:
        await trio.aclose_forcefully(stream)


def client_ctx(alpn: list[str] | None = None, tls12: bool = False) -> ssl.SSLContext:
    ctx = raw_context(server=False, chain=CLIENT_CHAIN, key=CLIENT_KEY, trust=[CA_A.cert])
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if tls12:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def test_control_case_is_accepted() -> None:
    calls: list[Link] = []
    async with server(calls) as port:
        assert await attempt(port, client_ctx()) == b"ok"
    assert len(calls) == 1


async def test_client_without_h2_alpn_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="isthmus.link")
    calls: list[Link] = []
    async with server(calls) as port:
        assert await attempt(port, client_ctx(alpn=["http/1.1"])) == b""
    assert calls == []
    assert any(isinstance(getattr(r, "error", None), LinkError) for r in caplog.records)


async def test_tls12_client_is_rejected() -> None:
    calls: list[Link] = []
    async with server(calls) as port:
        assert await attempt(port, client_ctx(tls12=True)) == b""
    assert calls == []


async def test_no_session_ticket_is_issued() -> None:
    calls: list[Link] = []
    async with server(calls) as port:
        ctx = client_ctx()
        stream = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), ctx)
        with trio.fail_after(5):
            await stream.do_handshake()
            assert await stream.receive_some(10) == b"ok"  # tickets, if any, precede this
        session = stream.session
        assert session is None or not session.has_ticket
        await trio.aclose_forcefully(stream)
