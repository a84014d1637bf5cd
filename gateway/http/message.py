"""HTTP message heads as every module passes them around: frozen, validated, lowercase names.

Why apart from the parser (``headers.py``): the heads and their field lookups are the common
currency of the codecs, the framing rules (``framing.py``), the transcoder and the router;
keeping them in a module that imports nothing of ours lets the parser depend on the framing
rules and the framing rules on the heads without a cycle.

A head is only ever built from bytes a strict parser accepted or by our own code: names are
lowercase tokens, values have their optional whitespace trimmed.  ``Headers`` is a tuple of
``(name, value)`` pairs in wire order, repeated names kept (RFC 9110 section 5.3).
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = tuple[tuple[bytes, bytes], ...]

#: RFC 9110 section 9.2.2: repeating these has the effect of sending them once, so an upstream
#: that may not have acted on one (a reused connection that closed, a link that died) may be
#: sent it again.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A validated request head. Header names are lowercase; values have OWS trimmed."""

    method: bytes
    target: bytes
    http_version: bytes
    headers: Headers

    def get(self, name: bytes) -> bytes | None:
        """The first value of ``name`` (lowercase), or None."""
        return header_value(self.headers, name)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A validated response head. Header names are lowercase; values have OWS trimmed."""

    status: int
    headers: Headers
    reason: bytes = b""
    http_version: bytes = b"1.1"

    def get(self, name: bytes) -> bytes | None:
        """The first value of ``name`` (lowercase), or None."""
        return header_value(self.headers, name)


def header_value(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def comma_tokens(headers: Headers, name: bytes) -> list[bytes]:
    """Lowercased, trimmed, non-empty elements of a comma-list header such as Connection."""
    out: list[bytes] = []
    for value in header_values(headers, name):
        for item in value.split(b","):
            item = item.strip(b" \t").lower()
            if item:
                out.append(item)
    return out
