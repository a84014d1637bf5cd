"""Downstream TLS: the server context for local callers and the caller's identity.

Why this shape: a local caller's client certificate is *optional*, but one that is presented
must pass the SPIFFE per-trust-domain check (else the connection is closed) and becomes
``ctx.caller_id``; routing is never authorization, so nothing else (Host, SNI, a header) can
set it.  The context is rebuilt when the identity rotates; live connections keep theirs.
"""

from __future__ import annotations

import logging
import ssl

import trio

from foundation.errors import IsthmusError
from foundation.log_limit import LogLimiter
from foundation.spiffe_id import SpiffeId
from gateway.listener.caller_stream import CallerStream
from gateway.listener.detect import ALPN_PROTOCOLS
from overlay.identity.rotation import Identity
from overlay.identity.state import IdentityState
from overlay.identity.tls_context import load_cert_chain
from overlay.link.link import tls_rejection_cause
from overlay.link.tls_stream import TLSStream

# The listener's logger: rejected callers are logged under the listener's name.
log = logging.getLogger("isthmus.listener.http")


def build_downstream_context(state: IdentityState) -> ssl.SSLContext:
    """TLS 1.2+ server context for local callers: our SVID, optional client certificates
    anchored in any trusted bundle (then re-checked per trust domain), ALPN h2/http1.1, no
    session tickets (a resumed session carries no client chain to re-verify)."""
    from cryptography.hazmat.primitives import serialization

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.check_hostname = False
    anchors = state.bundles.all_anchors()
    if anchors:
        pem = "".join(a.public_bytes(serialization.Encoding.PEM).decode() for a in anchors)
        ctx.load_verify_locations(cadata=pem)
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    load_cert_chain(ctx, state.svid, state.key)
    return ctx


class DownstreamTls:
    """The downstream TLS context, rebuilt when the identity rotates (live connections keep
    the one they started with), and the log budget of rejected callers."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._cached: tuple[IdentityState, ssl.SSLContext] | None = None
        # A caller whose certificate is refused is logged once per cause per minute: a client
        # in a retry loop must neither flood the log nor be invisible.
        self.rejections = LogLimiter(window_s=60.0)

    def log_rejected(self, tcp: trio.SocketStream | CallerStream, exc: BaseException) -> None:
        cause, certificate = tls_rejection_cause(exc)
        try:
            host, port = tcp.socket.getpeername()[:2]
            addr = f"{host}:{port}"
        except OSError:
            addr = "?"
        level = logging.WARNING if certificate else logging.INFO
        what = "rejected TLS caller" if certificate else "TLS caller dropped"
        self.rejections.log(
            log, level, cause, "%s from %s: %s", what, addr, cause, now=trio.current_time()
        )

    def context(self) -> tuple[IdentityState, ssl.SSLContext]:
        state = self.identity.state
        if self._cached is None or self._cached[0] is not state:
            self._cached = (state, build_downstream_context(state))
        return self._cached


def caller_identity(stream: TLSStream[CallerStream], state: IdentityState) -> SpiffeId | None:
    """The SPIFFE ID of a caller that presented a certificate; raises PeerRejected if it does
    not verify against its own trust domain's bundle."""
    return state.handshake_peer_id(stream.ssl_object)


async def accept_tls(
    tcp: CallerStream, tls: DownstreamTls, *, timeout_s: float
) -> tuple[TLSStream[CallerStream], SpiffeId | None, str | None] | None:
    """The server handshake (bounded by ``timeout_s``) and the caller's identity: the TLS
    stream, the caller ID and the ALPN choice, or None when the caller was rejected (logged
    within its budget, connection closed)."""
    state, context = tls.context()
    ssl_stream = TLSStream(tcp, context, server_side=True)
    try:
        with trio.fail_after(timeout_s):
            await ssl_stream.do_handshake()
        caller_id = caller_identity(ssl_stream, state)
    except (trio.TooSlowError, trio.BrokenResourceError, IsthmusError) as exc:
        tls.log_rejected(tcp, exc)
        await trio.aclose_forcefully(ssl_stream)
        return None
    return ssl_stream, caller_id, ssl_stream.selected_alpn_protocol()
