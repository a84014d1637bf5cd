"""gateway.http.rescue: the one rule that turns an error into a response, per wire."""

from __future__ import annotations

import trio
import trio.testing

from foundation.errors import (
    H2_CANCEL,
    H2_CONNECT_ERROR,
    H2_INTERNAL_ERROR,
    H2_PROTOCOL_ERROR,
    H2_REFUSED_STREAM,
)
from gateway.http.caller_side import CallerGone
from gateway.http.errors import (
    BadRequest,
    RateLimited,
    ResetInstead,
    UnknownAddress,
    UpstreamProtocolError,
)
from gateway.http.h1_server import H1ServerConnection
from gateway.http.rescue import Answer, Close, Reset, rescue, rescue_h1
from gateway.upstream.pool import EndpointConnectFailed


def test_before_the_head_the_error_is_the_answer() -> None:
    for wire in ("h1", "h2"):
        action = rescue(UnknownAddress("nothing here"), head_sent=False, wire=wire)
        assert isinstance(action, Answer)
        assert action.head.status == 404
        assert b"nothing here" in action.body


def test_a_bug_is_an_opaque_500() -> None:
    action = rescue(RuntimeError("secret detail"), head_sent=False, wire="h2")
    assert isinstance(action, Answer)
    assert action.head.status == 500
    assert b"secret" not in action.body


def test_after_the_head_http1_closes_and_http2_resets_with_the_errors_code() -> None:
    assert isinstance(rescue(BadRequest("x"), head_sent=True, wire="h1"), Close)
    assert rescue(BadRequest("x"), head_sent=True, wire="h2") == Reset(H2_PROTOCOL_ERROR)
    assert rescue(UpstreamProtocolError("x"), head_sent=True, wire="h2") == Reset(H2_CONNECT_ERROR)
    assert rescue(RuntimeError("x"), head_sent=True, wire="h2") == Reset(H2_INTERNAL_ERROR)


def test_to_a_peer_only_the_callers_fault_keeps_its_code() -> None:
    def peer(exc: BaseException) -> object:
        return rescue(exc, head_sent=True, wire="h2", to_peer=True)

    assert peer(BadRequest("x")) == Reset(H2_PROTOCOL_ERROR)
    assert peer(UpstreamProtocolError("x")) == Reset(H2_INTERNAL_ERROR)


def test_a_site_that_did_no_work_refuses_a_peers_stream_but_answers_a_caller() -> None:
    exc = EndpointConnectFailed("connect refused")
    assert rescue(exc, head_sent=False, wire="h2", to_peer=True) == Reset(H2_REFUSED_STREAM)
    answer = rescue(exc, head_sent=False, wire="h2")
    assert isinstance(answer, Answer) and answer.head.status == 503


def test_an_injected_reset_resets_or_closes_instead_of_answering() -> None:
    exc = ResetInstead("fault injected")
    assert rescue(exc, head_sent=False, wire="h2") == Reset(H2_INTERNAL_ERROR)
    assert rescue(exc, head_sent=False, wire="h2", to_peer=True) == Reset(H2_INTERNAL_ERROR)
    assert isinstance(rescue(exc, head_sent=False, wire="h1"), Close)


async def test_an_injected_reset_closes_an_http1_caller_without_an_answer() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server)
    await client.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert await conn.next_request() is not None
    await rescue_h1(conn, server, ResetInstead("fault injected"), head_sent=False)
    assert await client.receive_some(1024) == b""  # closed, not a 502


def test_rate_limited_is_a_429_with_retry_after() -> None:
    action = rescue(RateLimited("over", retry_after_s=2.2), head_sent=False, wire="h1")
    assert isinstance(action, Answer) and action.head.status == 429
    assert action.head.get(b"retry-after") == b"3"


def test_a_caller_that_is_gone_gets_no_answer_only_a_reset_or_a_close() -> None:
    """Before the head too: nobody is left to read an error response (and the access line's
    status stays null: the caller got none)."""
    gone = CallerGone("the caller reset its stream")
    for head_sent in (False, True):
        assert rescue(gone, head_sent=head_sent, wire="h1") == Close()
        assert rescue(gone, head_sent=head_sent, wire="h2") == Reset(H2_CANCEL)
        assert rescue(gone, head_sent=head_sent, wire="h2", to_peer=True) == Reset(H2_CANCEL)
