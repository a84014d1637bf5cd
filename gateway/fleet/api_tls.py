"""mTLS for the control site's fleet API: contexts from an SVID, and the peer's verified ID.

Why not the link contexts: those offer ALPN ``h2`` only (a link is HTTP/2), while the fleet
API speaks HTTP/1.1 to a command-line client.  Same rules otherwise: TLS 1.3 only, a client
certificate required, no session tickets, OpenSSL checks the chain against every trusted
anchor, and then :func:`~overlay.identity.verify.verify_peer` checks it again strictly against
the bundle of the peer's *own* trust domain and the X509-SVID rules (exactly one SPIFFE ID URI
SAN, not a CA, key usage, validity).  The key goes into OpenSSL through the same private,
at-once-unlinked file as the gateway's own contexts; it is never logged.
"""

from __future__ import annotations

import ssl
from typing import Any, cast

from cryptography.hazmat.primitives import serialization

from foundation.spiffe_id import SpiffeId
from overlay.identity.errors import PeerRejected
from overlay.identity.state import IdentityState
from overlay.identity.tls_context import load_cert_chain

ALPN = "http/1.1"


def _context(state: IdentityState, *, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the peer is named by its SPIFFE ID, checked after
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols([ALPN])
    anchors = state.bundles.all_anchors()
    if anchors:
        ctx.load_verify_locations(
            cadata="".join(a.public_bytes(serialization.Encoding.PEM).decode() for a in anchors)
        )
    load_cert_chain(ctx, state.svid, state.key)
    if server:
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def server_context(state: IdentityState) -> ssl.SSLContext:
    return _context(state, server=True)


def client_context(state: IdentityState) -> ssl.SSLContext:
    return _context(state, server=False)


def verified_peer_id(ssl_object: Any, state: IdentityState) -> SpiffeId:
    """The SPIFFE ID of the peer of a finished handshake, verified per trust domain
    (:class:`~overlay.identity.errors.PeerRejected` when it does not hold or is missing)."""
    peer = state.handshake_peer_id(cast(ssl.SSLObject, ssl_object))
    if peer is None:
        raise PeerRejected("the peer presented no certificate")
    return peer
