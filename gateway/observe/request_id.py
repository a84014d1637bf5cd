"""The request ID: one per request, the same at every gateway it crosses (pure).

Why the W3C trace ID: a caller that already traces (``traceparent``, W3C Trace Context) gets
its own trace ID back in both gateways' access lines, so they join with its traces; any other
request gets a fresh random one at the origin.  The ID crosses a link in the internal
``isthmus-request-id`` header (:mod:`gateway.http.overlay_headers`), never trusted from a
caller: a caller can only propose one through a *valid* ``traceparent``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["from_traceparent", "is_request_id", "new_request_id", "request_id_for"]

#: version "-" trace-id "-" parent-id "-" flags; version ff is invalid (W3C Trace Context 3.2).
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE = b"0" * 32
_ZERO_PARENT = b"0" * 16


def new_request_id() -> str:
    """A fresh random ID: 128 bits as 32 lowercase hex digits (a valid W3C trace ID)."""
    return os.urandom(16).hex()


def from_traceparent(value: bytes) -> str | None:
    """The trace ID of a valid ``traceparent`` value, else None (then a new ID is made)."""
    match = _TRACEPARENT.fullmatch(value.strip(b" \t"))
    if match is None:
        return None
    version, trace, parent, _flags, rest = match.groups()
    if version == b"ff" or trace == _ZERO_TRACE or parent == _ZERO_PARENT:
        return None
    if version == b"00" and rest:
        return None  # version 00 has exactly four fields
    return trace.decode("ascii")


def request_id_for(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The request ID at the origin: the caller's valid ``traceparent`` trace ID (exactly one
    such field), else a new one."""
    found = [v for n, v in headers if n == b"traceparent"]
    if len(found) == 1:
        trace = from_traceparent(found[0])
        if trace is not None:
            return trace
    return new_request_id()


def is_request_id(text: str) -> bool:
    """Is ``text`` a request ID as gateways send them (32 lowercase hex digits)?"""
    return _REQUEST_ID.fullmatch(text) is not None
