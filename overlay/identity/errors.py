"""Typed identity errors: every way a certificate, bundle or peer can fail us, by reason.

All of them are :class:`~foundation.errors.IdentityError` (HTTP 403, HTTP/2 INADEQUATE_SECURITY),
so the one place per listener that maps errors to responses needs no identity knowledge.  The
message is the precise reason, written for an operator reading a log line.
"""

from __future__ import annotations

from foundation.errors import IdentityError


class SvidError(IdentityError):
    """A certificate breaks the X509-SVID rules (leaf or signing CA); ``reason`` says which."""

    def __init__(self, reason: str, *, subject: str = "") -> None:
        self.reason = reason
        self.subject = subject
        super().__init__(f"{subject}: {reason}" if subject else reason)


class BundleError(IdentityError):
    """A trust bundle file or document cannot be used (unreadable, malformed, too large)."""


class PeerRejected(IdentityError):
    """A peer's chain did not verify against the bundle of the trust domain its SVID names."""


class NotAuthorized(IdentityError):
    """A peer proved an identity, but not one this link is allowed to talk to."""


class IdentityLoadError(IdentityError):
    """This gateway's own SVID, key or bundles could not be loaded into a usable state."""
