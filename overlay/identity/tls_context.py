"""``ssl.SSLContext`` for links: TLS 1.3 only, mutual auth, ALPN ``h2``, no session tickets.

Why each setting:

* **TLS 1.3 only** - one protocol to reason about; links are gateway-to-gateway, both ours.
* **CERT_REQUIRED both ways** - a link is mutual TLS or nothing.
* **All bundles' anchors in one store** - Python 3.11's ``ssl`` can only verify against one
  pooled store.  That check is necessary but not sufficient (it cannot tell trust domains
  apart); :mod:`overlay.identity.verify` re-checks every chain against the bundle of the
  peer's own trust domain after the handshake.
* **check_hostname off** - SPIFFE identities are not host names; the post-handshake check with
  an explicitly expected SPIFFE ID replaces it.
* **No session tickets on servers** (``num_tickets = 0`` and ``OP_NO_TICKET``) - a resumed
  session carries no peer chain, so it could not be re-verified per trust domain.
* **ALPN ``h2``** - links carry HTTP/2; the handshake offers only ``h2`` and the post-check
  rejects a peer that did not select it.

Python's ``ssl`` loads certificates and keys only from files, so the validated bytes are written
to a private temporary file (mode 0600), loaded, and unlinked at once: the context gets exactly
the bytes that were checked, even if the watched files change meanwhile.
"""

from __future__ import annotations

import _ssl
import contextlib
import os
import ssl
import tempfile
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization

from overlay.identity.bundle import BundleSet
from overlay.identity.errors import IdentityLoadError
from overlay.identity.svid import PrivateKey, X509Svid

__all__ = [
    "ALPN_H2",
    "build_client_context",
    "build_server_context",
    "load_cert_chain",
    "peer_chain_der",
]

ALPN_H2 = "h2"
_SHM = "/dev/shm"
_ENCODING_DER: int = getattr(_ssl, "ENCODING_DER", 2)  # not re-exported by ``ssl`` in 3.11


def _base(
    purpose: ssl.Purpose, svid: X509Svid, key: PrivateKey, bundles: BundleSet
) -> ssl.SSLContext:
    side = (
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols([ALPN_H2])
    anchors = bundles.all_anchors()
    if anchors:
        pem = "".join(a.public_bytes(serialization.Encoding.PEM).decode() for a in anchors)
        ctx.load_verify_locations(cadata=pem)
    # With no anchors at all, CERT_REQUIRED makes every handshake fail: the right answer.
    load_cert_chain(ctx, svid, key)
    return ctx


def load_cert_chain(ctx: ssl.SSLContext, svid: X509Svid, key: PrivateKey) -> None:
    """Load ``svid`` and ``key`` into ``ctx`` (links here, downstream callers in the gateway):
    the exact validated bytes, through a private file that is unlinked at once."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="isthmus-svid-", suffix=".pem", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(svid.chain_pem() + key_pem)
        ctx.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise IdentityLoadError(f"OpenSSL refused the SVID and key: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def build_server_context(svid: X509Svid, key: PrivateKey, bundles: BundleSet) -> ssl.SSLContext:
    """The context an accepting gateway wraps inbound links with."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH, svid, key, bundles)
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def build_client_context(svid: X509Svid, key: PrivateKey, bundles: BundleSet) -> ssl.SSLContext:
    """The context a dialing gateway wraps outbound links with."""
    return _base(ssl.Purpose.SERVER_AUTH, svid, key, bundles)


def peer_chain_der(ssl_object: ssl.SSLObject) -> tuple[list[bytes], list[bytes] | None]:
    """The peer's chain as presented (leaf first) and as OpenSSL verified it (or ``None``).

    ``get_verified_chain``/``get_unverified_chain`` are public on ``SSLObject`` from Python 3.13
    and exist privately on ``SSLObject._sslobj`` since 3.10; older or stranger runtimes fall
    back to the leaf alone (``getpeercert(binary_form=True)``), which still verifies a leaf
    signed directly by an anchor and fails closed otherwise.
    """
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return [], None
    impl: object = ssl_object
    if not hasattr(impl, "get_verified_chain"):
        impl = getattr(ssl_object, "_sslobj", None)
    verified = _chain(impl, "get_verified_chain")
    presented = _chain(impl, "get_unverified_chain") or [leaf]
    if presented[0] != leaf:  # some builds omit the peer's own leaf on the server side
        presented = [leaf, *presented]
    return presented, verified


def _chain(impl: object, name: str) -> list[bytes] | None:
    fn = getattr(impl, name, None)
    if fn is None:
        return None
    certs: Sequence[object] | None = fn()
    if not certs:
        return None
    out: list[bytes] = []
    for c in certs:
        if isinstance(c, bytes):
            out.append(c)
        else:  # _ssl.Certificate (3.10+); public_bytes defaults to PEM
            out.append(c.public_bytes(_ENCODING_DER))  # type: ignore[attr-defined]
    return out
