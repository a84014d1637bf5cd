"""``Link``: one verified mTLS connection between two gateways, and the handshake both ends share.

A link is a :class:`overlay.link.tls_stream.TLSStream` (TLS that decrypts every buffered record
per read) whose peer has passed the per-trust-domain SPIFFE check
(:func:`overlay.identity.verify.verify_peer`), plus who that peer is.  HTTP/2 runs on
``link.stream``; this module knows nothing about it.

A link can be *revoked* from any task (rotation removed the peer's trust domain or anchor):
:meth:`Link.revoke` closes the TCP socket at once, so every pending or later send/receive on
the stream fails with ``trio.BrokenResourceError``/``ClosedResourceError``, and whoever owns the
link sees it die exactly as if the peer had gone away.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
from types import TracebackType

import trio

from foundation.errors import IdentityError, UpstreamError
from foundation.spiffe_id import SpiffeId
from overlay.identity.errors import PeerRejected
from overlay.identity.rotation import Identity
from overlay.identity.state import IdentityState
from overlay.identity.tls_context import ALPN_H2, peer_chain_der
from overlay.identity.verify import VerifiedPeer, verify_peer
from overlay.link.tls_stream import TLSStream

__all__ = [
    "CLOSE_TIMEOUT_S",
    "Link",
    "LinkError",
    "LinkTimeout",
    "handshake",
    "tls_rejection_cause",
]

CLOSE_TIMEOUT_S = 2.0  # sending close_notify must not hang on a peer that stopped reading


_NO_PEER_CERT = frozenset(
    {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"}
)


class LinkError(UpstreamError):
    """A link could not be set up for a reason other than identity (TCP, TLS, ALPN)."""


class LinkTimeout(LinkError):
    """Connecting or the TLS handshake took longer than allowed."""


class Link:
    """A verified mTLS connection: ``stream`` to talk on, ``peer_id`` of who is there."""

    def __init__(
        self,
        stream: TLSStream[trio.SocketStream],
        peer: VerifiedPeer,
        identity: Identity | None = None,
    ) -> None:
        self.stream = stream
        self._peer = peer
        self._identity = identity
        self.revoked: str | None = None

    @property
    def peer(self) -> VerifiedPeer:
        return self._peer

    @property
    def peer_id(self) -> SpiffeId:
        return self._peer.spiffe_id

    @property
    def remote_address(self) -> str:
        """``host:port`` of the other end of the TCP connection (``?`` once it is gone)."""
        try:
            host, port = self.stream.transport_stream.socket.getpeername()[:2]
        except OSError:
            return "?"
        return f"{host}:{port}"

    def __repr__(self) -> str:
        state = f" revoked={self.revoked!r}" if self.revoked else ""
        return f"<Link peer={self.peer_id}{state}>"

    def revoke(self, reason: str) -> None:
        """Cut the link now (sync, from any task): its peer is no longer trusted."""
        if self.revoked is None:
            self.revoked = reason
        self.stream.transport_stream.socket.close()

    async def aclose(self) -> None:
        """Unregister, send close_notify (bounded by :data:`CLOSE_TIMEOUT_S`), close."""
        if self._identity is not None:
            self._identity.unregister(self)
        with (
            trio.move_on_after(CLOSE_TIMEOUT_S),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await self.stream.aclose()
        if self.stream.transport_stream.socket.fileno() != -1:
            self.stream.transport_stream.socket.close()

    async def __aenter__(self) -> Link:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def handshake(
    stream: TLSStream[trio.SocketStream], state: IdentityState, *, now: dt.datetime
) -> VerifiedPeer:
    """Run the TLS handshake, require ALPN ``h2``, verify the peer per trust domain.

    The caller bounds the time and closes ``stream`` on any error.
    """
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise PeerRejected(f"TLS chain check failed: {cause.verify_message}") from exc
        if isinstance(cause, ssl.SSLError) and cause.reason in _NO_PEER_CERT:
            raise PeerRejected("peer presented no certificate") from exc
        raise LinkError(f"TLS handshake failed: {cause or exc}") from exc
    ssl_object = stream.ssl_object
    if ssl_object.selected_alpn_protocol() != ALPN_H2:
        raise LinkError(f"peer did not negotiate ALPN {ALPN_H2!r}")
    try:
        presented, verified = peer_chain_der(ssl_object)
    except (AttributeError, ValueError, ssl.SSLError) as exc:
        raise PeerRejected(f"cannot read the peer's certificate chain: {exc!r}") from exc
    return verify_peer(
        presented,
        bundles=state.bundles,
        now=now,
        openssl_chain=verified,
        cache=state.verify_cache,
    )


def tls_rejection_cause(exc: BaseException) -> tuple[str, bool]:
    """Why a TLS server side dropped a connection during its handshake, as a log cause, and
    whether it was the client's certificate (not a timeout or a caller hanging up).

    The cause text is the key of the per-cause log budget, so it never carries the address or
    anything else that differs per connection, only what went wrong.
    """
    if isinstance(exc, trio.TooSlowError):
        return "TLS handshake timed out", False
    if isinstance(exc, UpstreamError | IdentityError):  # our typed errors (PeerRejected...)
        return f"{type(exc).__name__}: {exc}", isinstance(exc, IdentityError)
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"client certificate rejected: {cause.verify_message}", True
    if isinstance(cause, ssl.SSLError):
        if cause.reason in _NO_PEER_CERT:
            return "client presented no certificate", True
        # e.g. SSLV3_ALERT_CERTIFICATE_EXPIRED: the client rejected *our* certificate
        return f"TLS handshake failed: {cause.reason or cause}", False
    return f"TLS handshake failed: {cause or exc!r}", False
