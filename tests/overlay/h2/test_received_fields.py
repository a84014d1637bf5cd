"""The lean engine's rules for received header blocks refuse exactly what h2 refuses.

h2 is the oracle: ``h2.utilities.validate_headers`` (what h2 applies to every received block)
on generated blocks of fields chosen to hit each rule -- pseudo-headers in and out of order,
CONNECT forms, host and :authority, connection-specific fields, names and values with bad
octets -- as a request, a response and trailers.
"""

from __future__ import annotations

import h2.exceptions
import h2.utilities
from hypothesis import example, given, settings
from hypothesis import strategies as st

from overlay.h2.received_fields import check_received

NAMES = [
    b":method", b":scheme", b":path", b":authority", b":status", b":protocol", b":bogus",
    b"host", b"te", b"connection", b"upgrade", b"cookie", b"x-a", b"X-Up", b"", b"a:b",
    b"sp ace", b"\x7fdel", b"content-length",
]  # fmt: skip
VALUES = [
    b"", b"GET", b"CONNECT", b"a.b", b"x.y", b"/", b"https", b"200", b"trailers", b"Trailers",
    b"gzip", b" lead", b"trail\t", b"cr\rlf", b"nul\x00", b"websocket", b"a=1",
]  # fmt: skip

GOOD = [
    (b"x-a", b"1"), (b"te", b"trailers"), (b"te", b"Trailers"), (b"host", b"a.b"),
    (b"cookie", b"a=1"), (b"content-length", b"5"), (b":protocol", b"websocket"),
    (b":method", b"CONNECT"), (b"host", b"x.y"), (b"x-a", b""), (b":scheme", b"https"),
    (b":path", b""), (b":path", b"/"),
]  # fmt: skip
# Mostly fields that are fine alone, so that the rules about combinations get exercised.
fields = st.one_of(
    st.sampled_from(GOOD),
    st.sampled_from(GOOD),
    st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)),
)
REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a.b")]


def h2_verdict(headers: list[tuple[bytes, bytes]], kind: str) -> bool:
    flags = h2.utilities.HeaderValidationFlags(
        is_client=kind != "request",
        is_trailer=kind == "trailers",
        is_response_header=kind == "response",
        is_push_promise=False,
    )
    try:
        list(h2.utilities.validate_headers(headers, flags))
    except h2.exceptions.ProtocolError:
        return False
    return True


@settings(max_examples=3000, deadline=None)
@example(kind="request", base=REQUEST, extra=[(b"te", b"Trailers")], at=4)
@example(kind="request", base=REQUEST, extra=[(b"host", b"a.b"), (b"host", b"a.b")], at=4)
@example(kind="request", base=[*REQUEST[:2], (b":path", b""), REQUEST[3]], extra=[], at=0)
@given(
    kind=st.sampled_from(["request", "response", "trailers"]),
    base=st.sampled_from([[], REQUEST, [(b":status", b"200")], REQUEST[:1] + REQUEST[3:]]),
    extra=st.lists(fields, max_size=5),
    at=st.integers(0, 5),
)
def test_same_verdict_as_h2(
    kind: str, base: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]], at: int
) -> None:
    headers = [*base[:at], *extra, *base[at:]]
    _, why = check_received(list(headers), kind=kind)
    assert (why is None) == h2_verdict(headers, kind), (kind, headers, why)


def test_cookies_are_joined_as_h2_joins_them() -> None:
    block = [*REQUEST, (b"cookie", b"a=1"), (b"x-a", b"1"), (b"cookie", b"b=2")]
    joined, why = check_received(block, kind="request")
    assert why is None
    assert joined == [*REQUEST, (b"x-a", b"1"), (b"cookie", b"a=1; b=2")]
    flags = h2.utilities.HeaderValidationFlags(False, False, False, False)
    assert joined == [tuple(f) for f in h2.utilities.normalize_inbound_headers(block, flags)]
