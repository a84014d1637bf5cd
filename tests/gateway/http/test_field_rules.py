"""The gateway's inbound HTTP/2 checks and the tunnel's outbound check share their field rules
(``overlay/h2/field_rules.py``): what the transcoder accepts from HTTP/2 is sendable on HTTP/2."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.http.errors import UpstreamProtocolError
from gateway.http.headers import CONNECTION_SPECIFIC, is_field_value
from gateway.http.transcode import h2_response_to_h1
from overlay.h2.field_rules import CONNECTION_SPECIFIC as H2_CONNECTION_SPECIFIC
from overlay.h2.field_rules import is_value
from overlay.h2.fields import check_block

_BYTES = st.sampled_from(b"aZ0-_: \t\r\n\x00\x01\x7f\x80\xff")
_NAMES = st.one_of(
    st.sampled_from([*sorted(CONNECTION_SPECIFIC - {b"te"}), b"accept", b"x-a", b":path"]),
    st.lists(_BYTES, max_size=6).map(bytes),
)
_VALUES = st.lists(_BYTES, max_size=6).map(bytes)


@given(st.binary(max_size=40))
def test_a_value_fit_for_http1_is_fit_for_http2(value: bytes) -> None:
    assert not is_field_value(value) or is_value(value)


def test_every_field_http2_forbids_is_stripped_by_the_gateway() -> None:
    assert H2_CONNECTION_SPECIFIC <= CONNECTION_SPECIFIC


# ``te`` is left out: inbound, ``te: Trailers`` is accepted (the comparison ignores case, as
# h2's own inbound check does); outbound, check_block wants exactly ``trailers``.
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=4))
def test_what_the_transcoder_accepts_the_outbound_check_sends(
    fields: list[tuple[bytes, bytes]],
) -> None:
    block = [(b":status", b"200"), *fields]
    try:
        h2_response_to_h1(block)
    except UpstreamProtocolError:
        return
    assert check_block(block) == block
