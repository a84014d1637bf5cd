"""HPACK (RFC 7541) for links: a full decoder and a cheap encoder, sans-IO, bytes in and out.

Why our own: both ends of a link are Isthmus gateways and python-hyper's hpack spends most of
its time on generality we do not need (str/bytes coercion, logging, per-field Huffman).  The
decoder must still accept *any* valid encoding a peer may choose, and refuse everything
RFC 7541 forbids, with a bound on every buffer:

* the decoded header list is bounded *while* decoding (``max_header_list_size``, counted as
  RFC 9113 6.5.2 does: name + value + 32 per field), so a block of one-byte references to a
  large table entry (an HPACK bomb) stops at the bound instead of filling memory;
* the dynamic table never grows past our SETTINGS_HEADER_TABLE_SIZE
  (``max_allowed_table_size``): an update above it is refused, and so is a block that leaves
  the table above it (the peer ignored our smaller setting);
* integers are at most six octets (a prefix and five continuation octets, as hpack bounds
  them), so a run of 0x80 octets cannot grow an integer without bound;
* index 0 and indexes past the tables are refused, and so are Huffman strings that RFC 7541
  5.2 forbids (see ``huffman.py``).

The encoder chooses representations that are cheap to produce: no Huffman coding; a field in
the static or dynamic table is one index; other fields are literals that go into the dynamic
table, except sensitive ones (never indexed, RFC 7541 7.1.3, so a peer or a forwarding hop
cannot probe them through the table) and volatile ones whose value changes with every message
(indexing them would only evict fields that do repeat).

Theory of operation (dynamic table)
-----------------------------------
Both sides keep the table newest first (a deque with ``appendleft``); HPACK index 62 is the
newest entry.  The encoder also maps each field and each name to the insertion number of its
newest copy, so a lookup is one dict probe and the index is ``61 + inserted - number + 1``;
eviction pops the oldest entry and drops the map entries that still point at it.

A size change of the peer's SETTINGS_HEADER_TABLE_SIZE takes effect in our encoder at once
(shrinking evicts) and is signalled at the start of the next block; when the size went down and
up again in between, the smallest value is signalled first, then the final one (RFC 7541 4.2).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from overlay.h2.codec.errors import (
    HeaderListTooLarge,
    HpackBadHuffman,
    HpackBadIndex,
    HpackIntegerTooLong,
    HpackMisplacedSizeUpdate,
    HpackTableSizeError,
    HpackTruncated,
)
from overlay.h2.codec.huffman import HuffmanError, decode_huffman

Header = tuple[bytes, bytes]

DEFAULT_TABLE_SIZE = 4096
"""SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 9113 6.5.2); both tables start at it."""

DEFAULT_MAX_HEADER_LIST_SIZE = 64 * 1024

MAX_INTEGER_CONTINUATIONS = 5
"""Continuation octets an integer may use: values up to 2**35, far past any bound of ours."""

ENTRY_OVERHEAD = 32

# RFC 7541 Appendix A.
STATIC_TABLE: tuple[Header, ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)
STATIC_LEN = len(STATIC_TABLE)

# Exact fields with a value (an empty value in the static table means "name only").
_STATIC_FIELDS: dict[Header, int] = {
    field: i for i, field in enumerate(STATIC_TABLE, 1) if field[1]
}
_STATIC_NAMES: dict[bytes, int] = {}
for _i, (_name, _) in enumerate(STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name, _i)

SENSITIVE_NAMES = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})
"""Never indexed: credentials a peer sharing the table must not be able to guess at."""

VOLATILE_NAMES = frozenset(
    {b"content-length", b"date", b"etag", b"x-request-id", b"x-isthmus-deadline-ms"}
)
"""Not indexed: values that differ in almost every message would only churn the table."""


def _entry_size(name: bytes, value: bytes) -> int:
    return ENTRY_OVERHEAD + len(name) + len(value)


# --------------------------------------------------------------------------------------------
# Decoder


def _integer(data: bytes, pos: int, value: int) -> tuple[int, int]:
    """Continue an integer whose prefix was all ones (``value``); ``pos`` is the first
    continuation octet.  Returns the integer and the position after it."""
    end = len(data)
    shift = 0
    for _ in range(MAX_INTEGER_CONTINUATIONS):
        if pos >= end:
            raise HpackTruncated("header block ends inside an integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise HpackIntegerTooLong(f"integer longer than {1 + MAX_INTEGER_CONTINUATIONS} octets")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """Decode the string literal at ``pos``; returns it and the position after it."""
    if pos >= len(data):
        raise HpackTruncated("header block ends before a string literal")
    first = data[pos]
    length = first & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _integer(data, pos, 0x7F)
    end = pos + length
    if end > len(data):
        raise HpackTruncated("string literal runs past the end of the header block")
    if first & 0x80:
        try:
            return decode_huffman(data[pos:end]), end
        except HuffmanError as exc:
            raise HpackBadHuffman(str(exc)) from None
    return data[pos:end], end


class Decoder:
    """Decodes header blocks of one connection (the peer's encoder's dynamic table state).

    ``max_allowed_table_size`` is our SETTINGS_HEADER_TABLE_SIZE; the connection updates it
    when the peer acknowledges a new value.  After an error the decoder's state is unknown and
    the connection must end (RFC 9113 4.3).
    """

    __slots__ = (
        "_entries",
        "_size",
        "_table_size",
        "list_size",
        "max_allowed_table_size",
        "max_header_list_size",
        "never_indexed",
    )

    def __init__(
        self,
        *,
        max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE,
        max_allowed_table_size: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        self._entries: deque[Header] = deque()
        self._size = 0
        self._table_size = DEFAULT_TABLE_SIZE
        self.max_allowed_table_size = max_allowed_table_size
        self.max_header_list_size = max_header_list_size
        self.list_size = 0
        """The size of the last decoded list as RFC 9113 6.5.2 counts it (name + value + 32
        per field): an owner may refuse a list over its advertised limit."""
        self.never_indexed: list[int] = []
        """Positions, in the last decoded list, of the fields sent as never indexed: a hop that
        forwards them must keep that representation (RFC 7541 7.1.3)."""

    @property
    def table_size(self) -> int:
        """The dynamic table's maximum size as the peer's encoder last set it."""
        return self._table_size

    @property
    def table_entries(self) -> tuple[Header, ...]:
        """The dynamic table, newest first (for tests and diagnostics)."""
        return tuple(self._entries)

    def _field(self, index: int) -> Header:
        if 0 < index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        d = index - STATIC_LEN - 1
        if 0 <= d < len(self._entries):
            return self._entries[d]
        raise HpackBadIndex(f"index {index} is not in the table")

    def _add(self, name: bytes, value: bytes) -> None:
        size = _entry_size(name, value)
        if size > self._table_size:
            self._entries.clear()
            self._size = 0
            return
        entries = self._entries
        entries.appendleft((name, value))
        total = self._size + size
        limit = self._table_size
        while total > limit:
            old_name, old_value = entries.pop()
            total -= ENTRY_OVERHEAD + len(old_name) + len(old_value)
        self._size = total

    def _resize(self, size: int) -> None:
        self._table_size = size
        entries = self._entries
        total = self._size
        while total > size:
            old_name, old_value = entries.pop()
            total -= ENTRY_OVERHEAD + len(old_name) + len(old_value)
        self._size = total

    def decode(self, block: bytes) -> list[Header]:
        """Decode one complete header block into ``(name, value)`` pairs, in order."""
        data = bytes(block)
        end = len(data)
        pos = 0
        headers: list[Header] = []
        never: list[int] = []
        self.never_indexed = never
        listed = 0
        limit = self.max_header_list_size
        field = self._field
        while pos < end:
            first = data[pos]
            pos += 1
            if first & 0x80:  # indexed field (6.1)
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _integer(data, pos, 0x7F)
                name, value = field(index)
            elif first & 0x40:  # literal with incremental indexing (6.2.1)
                index = first & 0x3F
                if index == 0x3F:
                    index, pos = _integer(data, pos, 0x3F)
                if index:
                    name = field(index)[0]
                else:
                    name, pos = _string(data, pos)
                value, pos = _string(data, pos)
                self._add(name, value)
            elif first & 0x20:  # dynamic table size update (6.3)
                if headers:
                    raise HpackMisplacedSizeUpdate("table size update after a field")
                size = first & 0x1F
                if size == 0x1F:
                    size, pos = _integer(data, pos, 0x1F)
                if size > self.max_allowed_table_size:
                    raise HpackTableSizeError(
                        f"table size update to {size} above our limit of "
                        f"{self.max_allowed_table_size}"
                    )
                self._resize(size)
                continue
            else:  # literal without indexing (6.2.2) or never indexed (6.2.3)
                index = first & 0x0F
                if index == 0x0F:
                    index, pos = _integer(data, pos, 0x0F)
                if index:
                    name = field(index)[0]
                else:
                    name, pos = _string(data, pos)
                value, pos = _string(data, pos)
                if first & 0x10:
                    never.append(len(headers))
            headers.append((name, value))
            listed += ENTRY_OVERHEAD + len(name) + len(value)
            if listed > limit:
                raise HeaderListTooLarge(f"header list larger than {limit} bytes")
        if self._table_size > self.max_allowed_table_size:
            raise HpackTableSizeError(
                f"the peer left its table at {self._table_size}, above our limit of "
                f"{self.max_allowed_table_size}"
            )
        self.list_size = listed
        return headers


# --------------------------------------------------------------------------------------------
# Encoder


def _encode_integer(out: bytearray, flags: int, prefix_max: int, value: int) -> None:
    if value < prefix_max:
        out.append(flags | value)
        return
    out.append(flags | prefix_max)
    value -= prefix_max
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _encode_string(out: bytearray, data: bytes) -> None:
    n = len(data)
    if n < 0x7F:
        out.append(n)
    else:
        _encode_integer(out, 0, 0x7F, n)
    out += data


class Encoder:
    """Encodes header blocks for one connection (our side of the peer's decoder's table).

    ``table_size_cap`` bounds the table we use whatever the peer allows: the memory a
    connection spends on HPACK is ours to choose.
    """

    __slots__ = (
        "_entries",
        "_fields",
        "_inserted",
        "_names",
        "_pending",
        "_size",
        "_table_size",
        "sensitive",
        "table_size_cap",
        "volatile",
    )

    def __init__(
        self,
        *,
        table_size_cap: int = DEFAULT_TABLE_SIZE,
        sensitive: frozenset[bytes] = SENSITIVE_NAMES,
        volatile: frozenset[bytes] = VOLATILE_NAMES,
    ) -> None:
        self._entries: deque[tuple[bytes, bytes, int]] = deque()  # oldest first, with number
        self._fields: dict[Header, int] = {}
        self._names: dict[bytes, int] = {}
        self._inserted = 0
        self._size = 0
        self._table_size = DEFAULT_TABLE_SIZE
        self._pending: list[int] = []
        self.table_size_cap = table_size_cap
        self.sensitive = sensitive
        self.volatile = volatile
        if table_size_cap < DEFAULT_TABLE_SIZE:
            self._set_size(table_size_cap)

    @property
    def table_size(self) -> int:
        return self._table_size

    def set_peer_table_size(self, setting: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE changed (we received it in SETTINGS)."""
        self._set_size(min(setting, self.table_size_cap))

    def _set_size(self, size: int) -> None:
        if size == self._table_size and not self._pending:
            return
        self._pending.append(size)
        self._table_size = size
        self._evict(size)

    def _evict(self, limit: int) -> None:
        entries = self._entries
        total = self._size
        fields = self._fields
        names = self._names
        while total > limit:
            name, value, number = entries.popleft()
            total -= ENTRY_OVERHEAD + len(name) + len(value)
            if fields.get((name, value)) == number:
                del fields[name, value]
            if names.get(name) == number:
                del names[name]
        self._size = total

    def _add(self, name: bytes, value: bytes, size: int) -> None:
        self._inserted += 1
        number = self._inserted
        self._entries.append((name, value, number))
        self._fields[name, value] = number
        self._names[name] = number
        self._size += size
        if self._size > self._table_size:
            self._evict(self._table_size)

    def encode(self, headers: Iterable[Header]) -> bytes:
        """Encode one header block.  Names must already be lowercase (RFC 9113 8.2.1); the
        encoder does not check fields, it only represents them."""
        out = bytearray()
        if self._pending:
            low = min(self._pending)
            if low < self._table_size:
                _encode_integer(out, 0x20, 0x1F, low)
            _encode_integer(out, 0x20, 0x1F, self._table_size)
            self._pending.clear()
        static_fields = _STATIC_FIELDS
        fields = self._fields
        base = STATIC_LEN + 1
        for name, value in headers:
            key = (name, value)
            index = static_fields.get(key)
            if index is not None:
                out.append(0x80 | index)
                continue
            number = fields.get(key)
            if number is not None:
                _encode_integer(out, 0x80, 0x7F, base + self._inserted - number)
                continue
            index = _STATIC_NAMES.get(name)
            if index is None:
                number = self._names.get(name)
                index = 0 if number is None else base + self._inserted - number
            size = ENTRY_OVERHEAD + len(name) + len(value)
            if name in self.sensitive:
                _encode_integer(out, 0x10, 0x0F, index)
            elif name in self.volatile or size > self._table_size // 2:
                _encode_integer(out, 0x00, 0x0F, index)
            else:
                _encode_integer(out, 0x40, 0x3F, index)
                self._add(name, value, size)
            if not index:
                _encode_string(out, name)
            _encode_string(out, value)
        return bytes(out)
