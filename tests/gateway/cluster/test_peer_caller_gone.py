"""The origin's side of a link: a caller that resets while its request crosses is the
caller's failure, not the peer's.

Real HTTP/2 link over loopback to a peer that reads the request body and answers only once
it has all of it.  The caller's body is a reset HTTP/2 stream (it raises what ``H2Stream``
raises then).  The forward ends with :class:`CallerGone` -- no ``UpstreamError``, so the
retry layer neither retries it nor counts it against the peer -- whatever the reset's code
(a ``NO_ERROR`` reset from the caller is not the peer's "answered, stop sending").
"""

from __future__ import annotations

import pytest
import trio

from discovery.model import ServiceName
from foundation.errors import H2_CANCEL, H2_NO_ERROR, UpstreamError
from gateway.cluster.peer import PeerCluster
from gateway.http.caller_side import CallerGone
from gateway.http.exchange import Request
from gateway.http.message import Headers
from overlay.address import parse_authority
from overlay.h2.stream import H2Stream, StreamReset
from tests.gateway.router.router_kit import Collect, ctx, peer

SERVICE = ServiceName("api", "default")


class ResetAfterOnePiece:
    """A caller's request body: one piece, then its stream is reset with ``code``."""

    trailers: Headers = ()

    def __init__(self, code: int) -> None:
        self.code = code
        self.sent = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.sent:
            self.sent = True
            return b"piece"
        raise StreamReset(self.code, remote=True)


async def _answers_after_the_whole_body(stream: H2Stream) -> None:
    while await stream.receive_some(65536):
        pass
    await stream.send_headers([(b":status", b"200")], end_stream=True)


@pytest.mark.parametrize("code", [H2_CANCEL, H2_NO_ERROR])
async def test_a_caller_reset_while_its_body_crosses_the_link_is_caller_gone(code: int) -> None:
    request = Request(b"POST", b"http", b"api.default.isthmus", b"/", ())
    address, _port = parse_authority("api.default.isthmus", mesh_domain="isthmus")
    with trio.fail_after(30):
        async with peer(_answers_after_the_whole_body) as link:
            cluster = PeerCluster(link, address=address, port=None, local_site="a")
            out = Collect()
            with pytest.raises(CallerGone) as caught:
                await cluster.forward(
                    request, ResetAfterOnePiece(code), out, ctx(), service=SERVICE
                )
            assert not isinstance(caught.value, UpstreamError)
            assert not out.head_sent
