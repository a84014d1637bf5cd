"""HTTP/1.1 <-> HTTP/2 header conversion and HTTP proxy targets, pure and sans-IO.

Why this is strict: an L7 tunnel turns an HTTP/1.1 message into HTTP/2 at the first gateway
and back at the last. HTTP/2 delimits fields with HPACK, not CRLF, so an HTTP/2 field can hold
bytes (CR, LF, NUL, a leading space, an uppercase name, a ``transfer-encoding``) that would
change the meaning of an HTTP/1.1 message once written out. RFC 9113 section 8.2 calls such a
message *malformed*; we refuse it (typed error, never forwarded) rather than repair it.

Theory of operation
-------------------
* 1 -> 2 (``h1_request_to_h2``, ``h1_response_to_h2``): the input is already a head validated
  by ``headers.py``. Drop the connection-specific fields (RFC 9110 section 7.6.1 and every field
  named in ``Connection``), keep ``te`` only as ``trailers``, move ``Host`` (or an absolute-form
  target's authority) into ``:authority``, and build ``:method :scheme :path`` (CONNECT: only
  ``:method :authority``, RFC 9113 section 8.5). Pseudo-headers always come first.
* 2 -> 1 (``h2_request_to_h1``, ``h2_response_to_h1``): validate everything, then produce a head
  that our own strict HTTP/1.1 parser accepts unchanged (the property tests check exactly
  that). Split ``cookie`` fields are joined with ``"; "`` (RFC 9113 section 8.2.3).
* Trailers: carried as HTTP/2 trailers; on HTTP/1.1 they become chunked trailers. Fields that
  must not be trailers (framing, routing, auth, ...; RFC 9110 section 6.5.1) are dropped.
* ``ContentLengthCounter`` detects a body that does not add up to its Content-Length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from foundation.errors import IsthmusError
from gateway.http.errors import (
    BadRequest,
    ContentLengthMismatch,
    MalformedHeaders,
    UpstreamProtocolError,
)
from gateway.http.headers import CONNECTION_SPECIFIC, is_field_value, strip_connection_specific
from gateway.http.message import Headers, RequestHead, ResponseHead, comma_tokens
from overlay.h2.field_rules import is_name as is_h2_name

DEFAULT_MAX_METHOD_BYTES = 64
DEFAULT_MAX_PATH_BYTES = 16 * 1024

_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
_METHOD_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH_RE = re.compile(rb"[\x21-\x7e]+")
_HOST_RE = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])")
_STATUS_RE = re.compile(rb"[1-5][0-9]{2}")
_DIGITS_RE = re.compile(rb"[0-9]{1,18}")

# RFC 9110 section 6.5.1: fields a sender must not put in (or a recipient must not trust from)
# a trailer section.
TRAILER_PROHIBITED = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"te",
        b"trailer",
        b"content-type",
        b"content-encoding",
        b"content-range",
        b"cache-control",
        b"expect",
        b"max-forwards",
        b"pragma",
        b"range",
        b"authorization",
        b"proxy-authorization",
        b"www-authenticate",
        b"proxy-authenticate",
        b"set-cookie",
        b"cookie",
        b"age",
        b"date",
        b"expires",
        b"location",
        b"retry-after",
        b"vary",
    }
)


# ---------------------------------------------------------------------------------------------
# HTTP proxy targets (RFC 9112 section 3.2)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """Where a proxy-form request goes. ``path`` is origin-form (``b""`` for CONNECT)."""

    scheme: bytes
    host: bytes
    port: int | None
    path: bytes

    @property
    def authority(self) -> bytes:
        return self.host if self.port is None else b"%s:%d" % (self.host, self.port)


def _split_authority(authority: bytes, *, require_port: bool) -> tuple[bytes, int | None]:
    if not authority or b"@" in authority:
        raise BadRequest("authority must be host[:port] without userinfo")
    if authority.startswith(b"["):
        close = authority.find(b"]")
        host, rest = authority[: close + 1], authority[close + 1 :]
        if close < 0 or (rest and not rest.startswith(b":")):
            raise BadRequest(f"invalid IPv6 authority {authority[:100]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_part = authority.partition(b":")
        port_text = port_part if colon else None
    if not host or _HOST_RE.fullmatch(host) is None:
        raise BadRequest(f"invalid host in authority {authority[:100]!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) < 65536:
            raise BadRequest(f"invalid port in authority {authority[:100]!r}")
        port = int(port_text)
    if require_port and port is None:
        raise BadRequest("CONNECT needs host:port")
    return host.lower(), port


def parse_proxy_target(method: bytes, target: bytes) -> ProxyTarget | None:
    """Parse an absolute-form (``GET http://api.default.isthmus/p``) or CONNECT target.

    Returns None for origin-form and asterisk-form targets (not a proxy request). Raises
    BadRequest for userinfo, fragments, bad ports or an unsupported scheme.
    """
    if method == b"CONNECT":
        host, port = _split_authority(target, require_port=True)
        return ProxyTarget(scheme=b"", host=host, port=port, path=b"")
    if target.startswith(b"/") or target == b"*":
        return None
    scheme, sep, rest = target.partition(b"://")
    scheme = scheme.lower()
    if not sep or scheme not in (b"http", b"https"):
        raise BadRequest(f"unsupported request target {target[:100]!r}")
    if b"#" in rest:
        raise BadRequest("a request target must not contain a fragment")
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    host, port = _split_authority(authority, require_port=False)
    if not path.startswith(b"/"):
        path = b"/" + path
    return ProxyTarget(scheme=scheme, host=host, port=port, path=path)


def request_authority(head: RequestHead) -> bytes | None:
    """The authority a request names: absolute-form target first, else Host (RFC 9112 3.2.2)."""
    target = parse_proxy_target(head.method, head.target)
    if target is not None:
        return target.authority
    host = head.get(b"host")
    if not host:
        return None
    name, port = _split_authority(host, require_port=False)
    return name if port is None else b"%s:%d" % (name, port)


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 -> HTTP/2
# ---------------------------------------------------------------------------------------------


def _h2_regular(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Regular fields as HTTP/2 may carry them: no hop-by-hop, te only as trailers."""
    out = [(n, v) for n, v in strip_connection_specific(headers) if n != b"host"]
    if b"trailers" in comma_tokens(headers, b"te"):
        out.append((b"te", b"trailers"))
    return out


def h1_request_to_h2(head: RequestHead, *, scheme: bytes = b"http") -> Headers:
    """An HTTP/2 header list for a validated HTTP/1.1 request head."""
    target = parse_proxy_target(head.method, head.target)
    if head.method == b"CONNECT":
        assert target is not None
        pseudo = [(b":method", b"CONNECT"), (b":authority", target.authority)]
    else:
        if target is not None:
            authority: bytes | None = target.authority
            path, scheme = target.path, target.scheme
        else:
            authority, path = request_authority(head), head.target
        if not authority:
            raise BadRequest("the request names no authority (Host header)")
        pseudo = [
            (b":method", head.method),
            (b":scheme", scheme),
            (b":authority", authority),
            (b":path", path),
        ]
    return tuple(pseudo + _h2_regular(head.headers))


def h1_response_to_h2(head: ResponseHead) -> Headers:
    """An HTTP/2 header list for a validated HTTP/1.1 response head."""
    regular = [(n, v) for n, v in strip_connection_specific(head.headers)]
    return ((b":status", b"%d" % head.status), *regular)


def h1_trailers_to_h2(trailers: Headers) -> Headers:
    return tuple((n, v) for n, v in trailers if n not in TRAILER_PROHIBITED)


# ---------------------------------------------------------------------------------------------
# HTTP/2 -> HTTP/1.1
# ---------------------------------------------------------------------------------------------


def _split_pseudo(
    headers: Iterable[tuple[bytes, bytes]],
    allowed: frozenset[bytes],
    error: type[IsthmusError],
) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise error("header names and values must be bytes")
        if name.startswith(b":"):
            if regular:
                raise error(f"pseudo-header {name[:32]!r} after a regular field")
            if name not in allowed:
                raise error(f"unknown or misplaced pseudo-header {name[:32]!r}")
            if name in pseudo:
                raise error(f"duplicate pseudo-header {name[:32]!r}")
            if not is_field_value(value):
                raise error(f"invalid value for {name.decode()}")
            pseudo[name] = value
            continue
        if not is_h2_name(name):
            raise error(f"invalid field name {name[:64]!r} (HTTP/2 names are lowercase tokens)")
        if not is_field_value(value):
            raise error(f"CR, LF, NUL, control byte or edge whitespace in {name[:64]!r}")
        if name in CONNECTION_SPECIFIC and name != b"te":
            raise error(f"connection-specific field {name.decode()!r} in HTTP/2")
        if name == b"te" and value.lower() != b"trailers":
            raise error("te other than 'trailers' in HTTP/2")
        regular.append((name, value))
    return pseudo, regular


def declared_content_length(
    headers: Iterable[tuple[bytes, bytes]], error: type[IsthmusError]
) -> int | None:
    """The single valid Content-Length, None if absent; raises ``error`` if ambiguous."""
    values = [v for n, v in headers if n == b"content-length"]
    if not values:
        return None
    if len(set(values)) != 1 or _DIGITS_RE.fullmatch(values[0]) is None:
        raise error(f"invalid or conflicting content-length {values[0][:32]!r}")
    return int(values[0])


def _h1_fields(
    regular: list[tuple[bytes, bytes]], error: type[IsthmusError]
) -> list[tuple[bytes, bytes]]:
    """Join split cookies; collapse repeated identical Content-Length; drop te."""
    length = declared_content_length(regular, error)
    cookies = [v for n, v in regular if n == b"cookie" and v]
    out = [(n, v) for n, v in regular if n not in (b"cookie", b"te", b"content-length")]
    if cookies:
        out.append((b"cookie", b"; ".join(cookies)))
    if length is not None:
        out.append((b"content-length", b"%d" % length))
    return out


def h2_request_to_h1(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    max_method_bytes: int = DEFAULT_MAX_METHOD_BYTES,
    max_path_bytes: int = DEFAULT_MAX_PATH_BYTES,
) -> RequestHead:
    """An HTTP/1.1 request head for an HTTP/2 request; raises MalformedHeaders (never
    forwards) for anything RFC 9113 section 8.3 calls malformed."""
    error = MalformedHeaders
    pseudo, regular = _split_pseudo(headers, _REQUEST_PSEUDO, error)
    method = pseudo.get(b":method")
    if method is None or _METHOD_RE.fullmatch(method) is None:
        raise error("missing or invalid :method")
    if len(method) > max_method_bytes:
        raise error(f":method longer than {max_method_bytes} bytes")
    authority = pseudo.get(b":authority")
    hosts = [v for n, v in regular if n == b"host"]
    if len(hosts) > 1:
        raise error("more than one host field")
    try:
        if method == b"CONNECT":
            if set(pseudo) != {b":method", b":authority"}:
                raise error("CONNECT carries exactly :method and :authority")
            assert authority is not None
            host, port = _split_authority(authority, require_port=True)
            target = b"%s:%d" % (host, port or 0)
            authority = target
        else:
            path, scheme = pseudo.get(b":path"), pseudo.get(b":scheme")
            if scheme is None or scheme.lower() not in (b"http", b"https"):
                raise error("missing or unsupported :scheme")
            if not path or _PATH_RE.fullmatch(path) is None:
                raise error("missing :path, or :path with bytes an HTTP/1.1 target cannot hold")
            if len(path) > max_path_bytes:
                raise error(f":path longer than {max_path_bytes} bytes")
            if not (path.startswith(b"/") or (path == b"*" and method == b"OPTIONS")):
                raise error(":path must be origin-form (or '*' for OPTIONS)")
            target = path
            if authority is None:
                if not hosts:
                    raise error("neither :authority nor host")
                authority = hosts[0]
            host, port = _split_authority(authority, require_port=False)
            authority = host if port is None else b"%s:%d" % (host, port)
    except BadRequest as exc:
        raise error(str(exc)) from None
    if hosts and hosts[0].lower() != authority:
        raise error("host field differs from :authority")
    fields = [(b"host", authority)] + [
        (n, v) for n, v in _h1_fields(regular, error) if n != b"host"
    ]
    return RequestHead(method=method, target=target, http_version=b"1.1", headers=tuple(fields))


def h1_head_for_transcoded(
    method: bytes,
    authority: bytes,
    path: bytes,
    regular: Headers,
    *,
    max_method_bytes: int = DEFAULT_MAX_METHOD_BYTES,
    max_path_bytes: int = DEFAULT_MAX_PATH_BYTES,
) -> RequestHead | None:
    """The head :func:`h2_request_to_h1` derives for a request that
    :func:`h1_request_to_h2` made from a head our HTTP/1.1 parser validated, without
    validating its fields a second time; None when that function would refuse it (an
    over-long method or path), so whoever needs the head runs the full check and its error.

    Why: a local HTTP/1.1 caller's request to a local HTTP/1.1 endpoint was transcoded to
    HTTP/2 fields at the listener and, at the endpoint, validated field by field back into
    HTTP/1.1 -- about a tenth of the CPU of such a request for nothing: every field already
    passed the stricter HTTP/1.1 rules (lowercase token names, trimmed values without control
    bytes), the authority was normalised by ``request_authority`` and the hop-by-hop fields
    dropped.  What the round trip still changes is applied here the same way (``host`` first,
    split cookies joined, Content-Length collapsed, ``te`` dropped); the tests check that both
    ways give the same head.
    """
    if len(method) > max_method_bytes or len(path) > max_path_bytes:
        return None
    fields = [(b"host", authority)] + [
        (n, v) for n, v in _h1_fields(list(regular), MalformedHeaders) if n != b"host"
    ]
    return RequestHead(method=method, target=path, http_version=b"1.1", headers=tuple(fields))


def h2_response_to_h1(headers: Iterable[tuple[bytes, bytes]]) -> ResponseHead:
    """An HTTP/1.1 response head for an HTTP/2 response; raises UpstreamProtocolError."""
    error = UpstreamProtocolError
    pseudo, regular = _split_pseudo(headers, frozenset({b":status"}), error)
    status = pseudo.get(b":status")
    if status is None or _STATUS_RE.fullmatch(status) is None:
        raise error("missing or invalid :status")
    return ResponseHead(status=int(status), headers=tuple(_h1_fields(regular, error)))


def h2_trailers_to_h1(trailers: Iterable[tuple[bytes, bytes]], *, from_upstream: bool) -> Headers:
    """Chunked trailers for an HTTP/2 trailer block. Pseudo-headers make it malformed."""
    error: type[IsthmusError] = UpstreamProtocolError if from_upstream else MalformedHeaders
    _, regular = _split_pseudo(trailers, frozenset(), error)
    return tuple((n, v) for n, v in regular if n not in TRAILER_PROHIBITED)


class ContentLengthCounter:
    """Checks DATA against a declared Content-Length (RFC 9113 section 8.1.1).

    Call ``data(n)`` per DATA frame and ``end()`` at END_STREAM; both raise ``error``
    on a mismatch so the stream is reset instead of forwarding a short or long body.
    """

    def __init__(
        self, declared: int | None, error: type[IsthmusError] = ContentLengthMismatch
    ) -> None:
        self.declared = declared
        self.received = 0
        self._error = error

    def data(self, n: int) -> None:
        self.received += n
        if self.declared is not None and self.received > self.declared:
            raise self._error(f"body longer than content-length {self.declared}")

    def end(self) -> None:
        if self.declared is not None and self.received != self.declared:
            raise self._error(
                f"body of {self.received} bytes does not match content-length {self.declared}"
            )
