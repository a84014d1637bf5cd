"""The pieces together against a real h2 connection, both directions: our preface, SETTINGS,
HPACK and frame writers make requests an h2 server receives as sent; an h2 client's requests
come out of our inbound layer and HPACK decoder as it sent them.  Header lists vary, repeat
(so both dynamic tables fill and evict), and include sensitive fields."""

from __future__ import annotations

import itertools

from h2 import events as h2e
from h2.config import H2Configuration
from h2.connection import H2Connection
from hpack.struct import NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.h2.codec import control as c
from overlay.h2.codec import frames as fr
from overlay.h2.codec.hpack import Decoder, Encoder

_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_VALUE = st.text("abcdefghijklmnopqrstuvwxyzABC0123456789 /=;,.-_", max_size=40)
_FIELDS = st.lists(
    st.tuples(st.sampled_from(["x-isthmus-caller-id", "authorization", "accept"]) | _TOKEN, _VALUE),
    max_size=8,
)
_REQUESTS = st.lists(
    st.tuples(st.sampled_from(["/", "/a", "/api/v1/items"]), _FIELDS, st.binary(max_size=100)),
    min_size=1,
    max_size=6,
)


def _head(path: str, fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    head = [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "a.b.isthmus"),
    ]
    return [(n.encode(), v.encode()) for n, v in head + fields if n not in ("te", "connection")]


@settings(max_examples=100, deadline=None)
@given(_REQUESTS, st.lists(st.integers(0, 5000), max_size=6))
def test_h2_server_receives_our_requests(requests: list, cuts: list[int]) -> None:
    server = H2Connection(
        H2Configuration(
            client_side=False, validate_inbound_headers=False, normalize_inbound_headers=False
        )
    )
    server.initiate_connection()
    ours = c.ConnectionControl(client=True)
    ours.initiate()
    encoder = Encoder()
    wire = [ours.data_to_send()]
    sent = []
    for i, (path, fields, body) in enumerate(requests):
        stream_id = 2 * i + 1
        head = _head(path, fields)
        block = encoder.encode(head)
        wire.append(fr.headers_frames(stream_id, block, end_stream=False, max_frame_size=16))
        wire.append(fr.data_frame(stream_id, body, end_stream=True))
        sent.append((stream_id, head, body))
    data = b"".join(wire)
    bounds = [0, *sorted(x % (len(data) + 1) for x in cuts), len(data)]
    events = []
    for start, stop in itertools.pairwise(bounds):
        events += server.receive_data(data[start:stop])
    got = {}
    for event in events:
        if isinstance(event, h2e.RequestReceived):
            got[event.stream_id] = ([(bytes(n), bytes(v)) for n, v in event.headers], b"")
            for (n, _), field in zip(got[event.stream_id][0], event.headers, strict=True):
                assert isinstance(field, NeverIndexedHeaderTuple) == (n in encoder.sensitive)
        elif isinstance(event, h2e.DataReceived):
            headers, body = got[event.stream_id]
            got[event.stream_id] = (headers, body + event.data)
    assert got == {sid: (head, body) for sid, head, body in sent}


@settings(max_examples=100, deadline=None)
@given(_REQUESTS, st.lists(st.integers(0, 5000), max_size=6))
def test_we_receive_h2_client_requests(requests: list, cuts: list[int]) -> None:
    client = H2Connection(
        H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
    )
    client.initiate_connection()
    sent = []
    for path, fields, body in requests:
        stream_id = client.get_next_available_stream_id()
        head = _head(path, fields)
        client.send_headers(stream_id, head)
        client.send_data(stream_id, body, end_stream=True)
        sent.append((stream_id, head, body))
    data = client.data_to_send()
    ours = c.ConnectionControl(client=False)
    ours.initiate()
    decoder = Decoder()
    bounds = [0, *sorted(x % (len(data) + 1) for x in cuts), len(data)]
    got: dict[int, tuple[list[tuple[bytes, bytes]], bytes]] = {}
    for start, stop in itertools.pairwise(bounds):
        for event in ours.receive_data(data[start:stop]):
            if not isinstance(event, c.StreamFrameReceived):
                continue
            frame = event.frame
            if isinstance(frame, fr.HeadersFrame):
                got[frame.stream_id] = (decoder.decode(frame.fragment), b"")
            elif isinstance(frame, fr.DataFrame):
                headers, body = got[frame.stream_id]
                got[frame.stream_id] = (headers, body + frame.data)
    assert got == {sid: (head, body) for sid, head, body in sent}
