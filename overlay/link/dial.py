"""``open_link``: dial a peer gateway and return a link only if it is exactly who we expect."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import trio

from foundation.spiffe_id import SpiffeId
from overlay.identity.errors import PeerRejected
from overlay.identity.rotation import Identity
from overlay.identity.verify import check_expected
from overlay.link.link import Link, LinkError, LinkTimeout, handshake
from overlay.link.socket_opts import tune_relay_socket
from overlay.link.tls_stream import TLSStream

__all__ = ["open_link"]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def open_link(
    host: str,
    port: int,
    *,
    identity: Identity,
    expected: SpiffeId,
    timeout: float = 10.0,  # noqa: ASYNC109 -- one budget for connect + handshake
    wall_clock: Callable[[], dt.datetime] = _utcnow,
    local_address: str | None = None,
    server_name: str | None = None,
) -> Link:
    """Connect, handshake (TLS 1.3, ALPN h2), verify the peer per trust domain, authorize it.

    ``timeout`` bounds TCP connect plus TLS handshake.  Raises ``LinkTimeout``/``LinkError``
    (UpstreamError) for transport failures, an ``IdentityError`` (``PeerRejected``,
    ``SvidError``, ``NotAuthorized``) when the peer is not exactly ``expected``.  The link uses
    the identity state current at dial time for its whole life.  ``local_address``: the
    source IP of the connection (this site's east-west address), or the kernel's choice.
    ``server_name``: the TLS SNI to send (a worker sends ``WORKER_LINK_SNI`` so the peer's
    listener keeps the link in a worker, :mod:`overlay.link.handoff`); None sends no SNI.
    It only sorts the connection: the peer is verified by its SPIFFE ID either way.
    """
    state = identity.state
    deadline = trio.current_time() + timeout  # one budget for connect and handshake together
    try:
        with trio.fail_at(deadline):
            try:
                tcp = await trio.open_tcp_stream(host, port, local_address=local_address)
            except OSError as exc:
                raise LinkError(f"cannot connect to {host}:{port}: {exc}") from exc
    except trio.TooSlowError:
        raise LinkTimeout(f"connecting to {host}:{port} took over {timeout}s") from None
    tune_relay_socket(tcp)  # small HTTP/2 frames never wait for Nagle; bulk: no low-water mark
    stream = TLSStream(tcp, state.client_ctx, server_hostname=server_name)
    try:
        with trio.fail_at(deadline):
            peer = await handshake(stream, state, now=wall_clock())
        check_expected(peer.spiffe_id, expected)
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise LinkTimeout(f"TLS handshake with {host}:{port} took over {timeout}s") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    link = Link(stream, peer, identity)
    identity.register(link)
    if link.revoked is not None:  # the bundles rotated under us during the handshake
        await link.aclose()
        raise PeerRejected(f"peer {peer.spiffe_id}: {link.revoked}")
    return link
