"""The federation wire codec: round trips, limits, and strict rejection of bad frames."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.model import ServiceName
from foundation.errors import UpstreamError
from overlay.federation.protocol import (
    Ack,
    Delta,
    ExportedService,
    FederationProtocolError,
    FrameDecoder,
    Message,
    Nack,
    Snapshot,
    decode_body,
    encode_all,
    encode_message,
    message_json,
    wire_size_bound,
)

from .strategies import NAMES, exported_services, svc, views

EPOCH = "e1"


def frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def good_service() -> dict[str, object]:
    return {
        "name": "api",
        "namespace": "default",
        "protocols": ["http1"],
        "healthy": 1,
        "total": 2,
        "capacity": 5,
        "spiffe_ids": ["spiffe://a.test/api"],
    }


def good_snapshot() -> dict[str, object]:
    return {
        "type": "snapshot",
        "origin_site": "east",
        "epoch": EPOCH,
        "version": 1,
        "final": True,
        "services": [good_service()],
    }


messages = st.one_of(
    st.builds(
        Snapshot,
        st.just("east"),
        st.just(EPOCH),
        st.integers(1, 2**63 - 1),
        views().map(lambda v: tuple(v.values())),
        st.booleans(),
    ),
    st.integers(1, 1000).flatmap(
        lambda base: st.builds(
            Delta,
            st.just("east"),
            st.just(EPOCH),
            st.just(base),
            st.integers(base + 1, base + 100),
            st.lists(st.sampled_from(NAMES[:5]), unique=True).flatmap(
                lambda names: st.tuples(*(exported_services(n) for n in names))
            ),
            st.lists(st.sampled_from(NAMES[5:]), unique=True).map(tuple),
        )
    ),
    st.builds(Ack, st.just(EPOCH), st.integers(1, 2**63 - 1)),
    st.builds(Nack, st.just(EPOCH), st.integers(1, 10), st.text(max_size=50)),
)


@given(st.lists(messages, max_size=5), st.integers(1, 64))
def test_round_trip_in_any_chunking(msgs: list[Message], chunk: int) -> None:
    data = encode_all(msgs)
    decoder = FrameDecoder()
    out: list[Message] = []
    for i in range(0, len(data), chunk):
        out.extend(decoder.feed(data[i : i + chunk]))
    decoder.close()
    assert out == msgs


def test_delta_with_upserts_round_trips() -> None:
    d = Delta("east", EPOCH, 3, 4, (svc("api"), svc("db", healthy=0, total=3)), (NAMES[1],))
    assert FrameDecoder().feed(encode_message(d)) == [d]


def test_non_canonical_order_decodes_to_canonical_value() -> None:
    s = good_service() | {
        "protocols": ["tcp", "http1"],
        "spiffe_ids": ["spiffe://b.test/x", "spiffe://a.test/y"],
    }
    msg = decode_body(json.dumps(good_snapshot() | {"services": [s]}).encode())
    assert isinstance(msg, Snapshot)
    assert msg.services[0].protocols == ("http1", "tcp")
    assert [str(i) for i in msg.services[0].spiffe_ids] == [
        "spiffe://a.test/y",
        "spiffe://b.test/x",
    ]


def test_oversized_frame_rejected_from_its_header() -> None:
    decoder = FrameDecoder(max_message_bytes=1000)
    with pytest.raises(FederationProtocolError, match="exceeds"):
        decoder.feed(struct.pack(">I", 1001))
    assert decoder.buffered == 0
    with pytest.raises(FederationProtocolError):  # stays broken
        decoder.feed(frame({"type": "ack", "epoch": EPOCH, "version": 1}))


def test_default_limit_is_4_mib() -> None:
    with pytest.raises(FederationProtocolError):
        FrameDecoder().feed(struct.pack(">I", 4 * 1024 * 1024 + 1))
    assert FrameDecoder().feed(struct.pack(">I", 4 * 1024 * 1024)) == []


def test_encoder_refuses_to_exceed_the_limit() -> None:
    big = Snapshot("east", EPOCH, 1, tuple(svc(f"s{i}") for i in range(100)))
    with pytest.raises(FederationProtocolError):
        encode_message(big, max_message_bytes=1000)


def test_error_is_an_upstream_protocol_error() -> None:
    assert issubclass(FederationProtocolError, UpstreamError)
    assert FederationProtocolError.h2_error_code == 0x1


def test_truncated_stream_is_an_error() -> None:
    decoder = FrameDecoder()
    data = frame(good_snapshot())
    assert decoder.feed(data[:-1]) == []
    with pytest.raises(FederationProtocolError, match="inside a frame"):
        decoder.close()


def _svc_with(**changes: object) -> dict[str, object]:
    return good_snapshot() | {"services": [good_service() | changes]}


BAD_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"[]",
    b'"snapshot"',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"type":"ack","epoch":"e1","version":1,"version":2}',
    b'{"type":"ack","epoch":"e1","version":NaN}',
    b'{"type":"ack","epoch":"e1","version":1e999}',
    b'{"type":"ack","epoch":"e1","version":' + b"9" * 5000 + b"}",
    json.dumps({"type": "ack", "epoch": EPOCH, "version": True}).encode(),
    json.dumps({"type": "ack", "epoch": EPOCH, "version": 1.0}).encode(),
    json.dumps({"type": "ack", "epoch": EPOCH, "version": 0}).encode(),
    json.dumps({"type": "ack", "epoch": EPOCH, "version": 2**63}).encode(),
    json.dumps({"type": "ack", "epoch": EPOCH}).encode(),
    json.dumps({"type": "ack", "epoch": EPOCH, "version": 1, "extra": 1}).encode(),
    json.dumps({"type": "ack", "epoch": "", "version": 1}).encode(),
    json.dumps({"type": "ack", "epoch": "a b", "version": 1}).encode(),
    json.dumps({"type": "ack", "epoch": "x" * 65, "version": 1}).encode(),
    json.dumps({"type": "hello"}).encode(),
    json.dumps({"type": "nack", "epoch": EPOCH, "version": 1, "reason": "x" * 2000}).encode(),
    json.dumps(good_snapshot() | {"final": 1}).encode(),
    json.dumps(good_snapshot() | {"origin_site": "East"}).encode(),
    json.dumps(good_snapshot() | {"services": {}}).encode(),
    json.dumps(good_snapshot() | {"services": [good_service(), good_service()]}).encode(),
    json.dumps(_svc_with(name="a.b")).encode(),
    json.dumps(_svc_with(namespace="")).encode(),
    json.dumps(_svc_with(protocols=["http3"])).encode(),
    json.dumps(_svc_with(protocols=["http1", "http1"])).encode(),
    json.dumps(_svc_with(protocols=[])).encode(),
    json.dumps(_svc_with(healthy=3)).encode(),
    json.dumps(_svc_with(total=0, healthy=0)).encode(),
    json.dumps(_svc_with(capacity=-1)).encode(),
    json.dumps(_svc_with(spiffe_ids=["spiffe://A.test/x"])).encode(),
    json.dumps(_svc_with(spiffe_ids=[1])).encode(),
    json.dumps(_svc_with(spiffe_ids=["spiffe://a.test/x", "spiffe://a.test/x"])).encode(),
    json.dumps(_svc_with(address="10.0.0.1")).encode(),
    json.dumps(
        {
            "type": "delta",
            "origin_site": "east",
            "epoch": EPOCH,
            "base_version": 2,
            "version": 2,
            "upserts": [],
            "removals": [],
        }
    ).encode(),
    json.dumps(
        {
            "type": "delta",
            "origin_site": "east",
            "epoch": EPOCH,
            "base_version": 1,
            "version": 2,
            "upserts": [good_service()],
            "removals": [{"name": "api", "namespace": "default"}],
        }
    ).encode(),
    json.dumps(
        {
            "type": "delta",
            "origin_site": "east",
            "epoch": EPOCH,
            "base_version": 1,
            "version": 2,
            "upserts": [],
            "removals": [{"name": "api"}],
        }
    ).encode(),
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_malformed_bodies_rejected(body: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(FederationProtocolError):
        decoder.feed(struct.pack(">I", len(body)) + body)


def test_good_snapshot_body_accepted() -> None:
    (msg,) = FrameDecoder().feed(frame(good_snapshot()))
    assert isinstance(msg, Snapshot)
    assert msg.services[0].service == ServiceName("api", "default")


@given(st.binary(max_size=300))
def test_decoder_never_crashes_on_garbage(data: bytes) -> None:
    decoder = FrameDecoder(max_message_bytes=256)
    try:
        decoder.feed(data)
        decoder.close()
    except FederationProtocolError:
        pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_decoder_never_crashes_on_arbitrary_json(obj: object) -> None:
    with contextlib.suppress(FederationProtocolError):
        decode_body(json.dumps(obj).encode())


long_label = st.from_regex(r"\A[a-z0-9]{1,63}\Z")


@given(
    st.builds(
        lambda n, ns, h, extra, c: svc(n, ns, healthy=h, total=h + extra, capacity=c),
        long_label,
        long_label,
        st.integers(0, 2**62),
        st.integers(1, 2**62),
        st.integers(0, 2**63 - 1),
    ),
    long_label,
)
def test_wire_size_bound_is_an_upper_bound(service: ExportedService, name: str) -> None:
    encoded = json.dumps(message_json(Snapshot("e", "e", 1, (service,))), separators=(",", ":"))
    empty = json.dumps(message_json(Snapshot("e", "e", 1, ())), separators=(",", ":"))
    assert len(encoded) - len(empty) <= wire_size_bound(service)
    removal = ServiceName(name, name)
    with_removal = Delta("e", "e", 1, 2, (), (removal,))
    without = Delta("e", "e", 1, 2, (), ())
    grown = len(encode_message(with_removal)) - len(encode_message(without))
    assert grown <= wire_size_bound(removal)
