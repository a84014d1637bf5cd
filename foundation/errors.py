"""The root of Isthmus's typed errors.

Why here: ``foundation`` sits under the one-way dependency graph
(``gateway`` -> ``overlay`` -> ``discovery`` -> ``foundation``), so every package can import
this module.

Errors are grouped by *who is at fault* -- the downstream caller, an upstream (endpoint or peer),
the operator's configuration, an identity check, or a discovery input -- and each carries the
HTTP status and the HTTP/2 error code it maps to.  One place per listener turns them into
responses; nothing else inspects exception types to pick a status.
"""

from __future__ import annotations

# HTTP/2 error codes (RFC 9113 section 7); kept here so this module has no h2 dependency.
H2_NO_ERROR = 0x0
H2_PROTOCOL_ERROR = 0x1
H2_INTERNAL_ERROR = 0x2
H2_FLOW_CONTROL_ERROR = 0x3
H2_REFUSED_STREAM = 0x7
H2_CANCEL = 0x8
H2_ENHANCE_YOUR_CALM = 0xB
H2_INADEQUATE_SECURITY = 0xC
H2_CONNECT_ERROR = 0xA


class IsthmusError(Exception):
    """Root of every error Isthmus raises on purpose."""

    http_status: int = 500
    h2_error_code: int = H2_INTERNAL_ERROR


class DownstreamError(IsthmusError):
    """The caller sent something we refuse (bad request, too large, too slow)."""

    http_status = 400
    h2_error_code = H2_PROTOCOL_ERROR


class UpstreamError(IsthmusError):
    """An endpoint or a peer gateway failed us."""

    http_status = 502
    h2_error_code = H2_CONNECT_ERROR


class ConfigError(IsthmusError):
    """The operator's configuration is invalid."""

    http_status = 500
    h2_error_code = H2_INTERNAL_ERROR


class IdentityError(IsthmusError):
    """An identity (SPIFFE ID, SVID, bundle) failed validation or authorization."""

    http_status = 403
    h2_error_code = H2_INADEQUATE_SECURITY


class DiscoveryError(IsthmusError):
    """A discovery source delivered input we cannot use (malformed, hostile, or unreachable)."""

    http_status = 503
    h2_error_code = H2_REFUSED_STREAM


def first_leaf(
    exc: BaseException, *, skip: tuple[type[BaseException], ...] = ()
) -> BaseException | None:
    """The first leaf of ``exc`` (depth first) that is not an instance of ``skip``, or None.

    Why one helper: a nursery raises a group, but a caller matches on the error itself
    (``StreamReset``, ``IncompleteBody``...) and a log line should name the real cause.  Pure
    (no trio import): a Trio adapter passes ``skip=(trio.Cancelled,)`` so that a group of only
    cancellations is left for the cancel scope that owns it.
    """
    pending: list[BaseException] = [exc]
    while pending:
        leaf = pending.pop(0)
        if isinstance(leaf, BaseExceptionGroup):
            pending[:0] = leaf.exceptions
        elif not isinstance(leaf, skip):
            return leaf
    return None
