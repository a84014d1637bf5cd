"""Parse a TLS ClientHello without terminating TLS: its SNI, from the bytes read so far.

Why here, under ``overlay``: two readers need it.  The SNI listener (``gateway.listener``)
routes a caller's TLS connection by the name it asked for, and a worker's east-west listener
tells a worker link (SNI ``worker-link.isthmus.invalid``) from every other link before TLS
(:mod:`overlay.link.handoff`).  Dependencies point ``gateway -> overlay``, so the pure parser
lives here and ``gateway.listener.sni_peek`` keeps the stream adapter.

Theory of operation
-------------------
``ClientHelloReader.feed`` (and ``peek_sni`` for one buffer) is pure and incremental. It
walks TLS records (type 22, version 3.x, 1..2^14 bytes each), concatenates their fragments (a
ClientHello may span records, and records may span reads), and once the whole ClientHello
handshake message is present parses it (RFC 8446 section 4.1.2, RFC 6066 section 3). It
returns None while more bytes are needed and raises a typed ``ClientHelloError`` for garbage,
a hello over ``max_bytes``, a hello without a host_name, or a malformed name. Every length is
checked against what remains before it is used, so no input can make it read out of bounds.
Errors carry ``.data`` (the bytes read so far, set by the adapter that read them) so a caller
may still forward a hello without SNI to a default route.
"""

from __future__ import annotations

import re

from foundation.errors import DownstreamError

MAX_CLIENT_HELLO_BYTES = 16 * 1024
CLIENT_HELLO_TIMEOUT_S = 10.0

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_HOST_NAME = 0
_MAX_RECORD = 1 << 14
_LABEL_RE = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class ClientHelloError(DownstreamError):
    """The connection did not open with a usable TLS ClientHello; it is closed."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


class NotTls(ClientHelloError):
    """The first bytes are not a TLS handshake record carrying a ClientHello."""


class MalformedClientHello(ClientHelloError):
    """A length or field in the records or the ClientHello is inconsistent."""


class TruncatedClientHello(ClientHelloError):
    """The peer closed the connection before the ClientHello was complete."""


class ClientHelloTooLarge(ClientHelloError):
    """The ClientHello (with record headers) exceeds the byte limit."""


class ClientHelloTimeout(ClientHelloError):
    """The ClientHello did not arrive within the handshake timeout."""

    http_status = 408


class NoSni(ClientHelloError):
    """A complete ClientHello without a server_name host_name."""


class InvalidSni(ClientHelloError):
    """A server_name that is not a DNS host name (RFC 6066: no trailing dot, no IP literal)."""


class _Cursor:
    """Bounds-checked reads over one buffer; any overrun is a MalformedClientHello."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise MalformedClientHello(f"ClientHello {what} overruns its enclosing length")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, len_size: int, what: str) -> _Cursor:
        n = self.uint(len_size, f"{what} length")
        start = self.pos
        self.take(n, what)
        return _Cursor(self.data, start, start + n)

    def take_all(self) -> bytes:
        return self.take(self.remaining, "vector")

    @property
    def remaining(self) -> int:
        return self.end - self.pos


class ClientHelloReader:
    """Incremental, pure: ``feed`` bytes as they arrive; each byte is examined once.

    ``feed`` returns the SNI once the ClientHello is complete, None while more is needed.
    """

    def __init__(self, *, max_bytes: int = MAX_CLIENT_HELLO_BYTES) -> None:
        self.max_bytes = max_bytes
        self._seen = 0  # bytes fed so far
        self._pending = bytearray()  # bytes of the current, incomplete record
        self._handshake = bytearray()  # concatenated handshake fragments
        self._result: str | None = None

    def feed(self, data: bytes) -> str | None:
        if self._result is not None:
            return self._result
        if self._seen + len(data) > self.max_bytes:
            data = data[: self.max_bytes - self._seen]
            over = True
        else:
            over = False
        self._seen += len(data)
        self._pending += data
        while self._pending:
            header = self._pending[:5]
            if header[0] != _HANDSHAKE:
                raise NotTls("not a TLS handshake record")
            if len(header) >= 2 and header[1] != 3:
                raise NotTls("not a TLS record version (3.x)")
            if len(header) < 5:
                break
            length = int.from_bytes(header[3:5], "big")
            if length == 0 or length > _MAX_RECORD:
                raise MalformedClientHello(f"TLS record length {length} out of range")
            if self._seen - len(self._pending) + 5 + length > self.max_bytes:
                raise ClientHelloTooLarge(f"ClientHello larger than {self.max_bytes} bytes")
            if len(self._pending) < 5 + length:
                break
            self._handshake += self._pending[5 : 5 + length]
            del self._pending[: 5 + length]
            hello = self._complete_hello()
            if hello is not None:
                # What follows (a 0-RTT ChangeCipherSpec or early data) is not ours to
                # judge; it is forwarded untouched.
                self._result = _parse_client_hello(_Cursor(hello, 4))
                return self._result
        if self._handshake[:1] and self._handshake[0] != _CLIENT_HELLO:
            raise NotTls("first handshake message is not a ClientHello")
        if over or self._seen >= self.max_bytes:
            raise ClientHelloTooLarge(f"ClientHello larger than {self.max_bytes} bytes")
        return None

    def _complete_hello(self) -> bytes | None:
        shake = self._handshake
        if shake[0] != _CLIENT_HELLO:
            raise NotTls("first handshake message is not a ClientHello")
        if len(shake) < 4:
            return None
        body_len = int.from_bytes(shake[1:4], "big")
        if body_len + 4 > self.max_bytes:
            raise ClientHelloTooLarge(f"ClientHello of {body_len} bytes exceeds {self.max_bytes}")
        if len(shake) < 4 + body_len:
            return None
        return bytes(shake[: 4 + body_len])


def peek_sni(data: bytes, *, max_bytes: int = MAX_CLIENT_HELLO_BYTES) -> str | None:
    """The ClientHello's SNI host name (lowercase), or None if more bytes are needed.

    Raises a ``ClientHelloError`` subclass for everything else; never reads past ``data``.
    """
    return ClientHelloReader(max_bytes=max_bytes).feed(data)


def _parse_client_hello(hello: _Cursor) -> str:
    version = hello.uint(2, "legacy_version")
    if version >> 8 != 3:
        raise NotTls(f"ClientHello version {version:#06x} is not TLS")
    hello.take(32, "random")
    session_id = hello.vector(1, "legacy_session_id")
    if session_id.remaining > 32:
        raise MalformedClientHello("legacy_session_id longer than 32 bytes")
    suites = hello.vector(2, "cipher_suites")
    if suites.remaining < 2 or suites.remaining % 2:
        raise MalformedClientHello("cipher_suites length must be even and non-zero")
    if hello.vector(1, "legacy_compression_methods").remaining < 1:
        raise MalformedClientHello("no compression method")
    if hello.remaining == 0:
        raise NoSni("ClientHello has no extensions, so no server_name")
    extensions = hello.vector(2, "extensions")
    if hello.remaining:
        raise MalformedClientHello("bytes after the ClientHello extensions")
    seen: set[int] = set()
    sni: str | None = None
    while extensions.remaining:
        ext_type = extensions.uint(2, "extension type")
        ext = extensions.vector(2, "extension data")
        if ext_type in seen:
            raise MalformedClientHello(f"duplicate extension {ext_type}")
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            sni = _parse_server_name(ext)
    if sni is None:
        raise NoSni("ClientHello has no server_name host_name")
    return sni


def _parse_server_name(ext: _Cursor) -> str | None:
    names = ext.vector(2, "server_name_list")
    if ext.remaining:
        raise MalformedClientHello("bytes after server_name_list")
    if names.remaining == 0:
        raise MalformedClientHello("empty server_name_list")
    host: bytes | None = None
    while names.remaining:
        name_type = names.uint(1, "name_type")
        name = names.vector(2, "host_name").take_all()
        if name_type == _HOST_NAME:
            if host is not None:
                raise MalformedClientHello("more than one host_name in server_name")
            host = name
    if host is None:
        return None
    return _check_host_name(host)


def _check_host_name(host: bytes) -> str:
    if not 0 < len(host) <= 253 or host.endswith(b"."):
        raise InvalidSni("SNI must be 1..253 bytes without a trailing dot")
    labels = host.split(b".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise InvalidSni(f"SNI {host[:100]!r} is not a DNS host name")
    if labels[-1].isdigit():
        raise InvalidSni("SNI must not be an IP address literal")
    return host.decode("ascii").lower()
