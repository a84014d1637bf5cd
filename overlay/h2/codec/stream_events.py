"""Events of the stream layer (``connection.py``); the connection-level ones are
``control.py``'s.  Frozen values: the owner may keep or pass them on as they are."""

from __future__ import annotations

from dataclasses import dataclass

from overlay.h2.codec import control as c
from overlay.h2.codec.hpack import Header


@dataclass(frozen=True, slots=True)
class RequestReceived:
    stream_id: int
    headers: list[Header]
    end_stream: bool


@dataclass(frozen=True, slots=True)
class InformationalResponseReceived:
    stream_id: int
    headers: list[Header]


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    stream_id: int
    headers: list[Header]
    end_stream: bool


@dataclass(frozen=True, slots=True)
class TrailersReceived:
    stream_id: int
    headers: list[Header]


@dataclass(frozen=True, slots=True)
class DataReceived:
    stream_id: int
    data: bytes
    flow_length: int  # what the owner credits back (padding is credited already)
    end_stream: bool


@dataclass(frozen=True, slots=True)
class StreamEnded:
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamRefused:
    """A new stream over our MAX_CONCURRENT_STREAMS, refused (RST_STREAM REFUSED_STREAM) after
    its header block was decoded: the owner may count it against the peer."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int
    error_code: int
    remote: bool = True  # False: we reset it, for a stream error of the peer's


Event = (
    c.Event
    | RequestReceived
    | InformationalResponseReceived
    | ResponseReceived
    | TrailersReceived
    | DataReceived
    | StreamEnded
    | StreamRefused
    | StreamReset
)
