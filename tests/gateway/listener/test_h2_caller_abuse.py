"""Callers' HTTP/2 under abuse, through a real listener on 127.0.0.1, on both engines.

The driver-level abuse tests (tests/overlay/h2) hold for a bare ``H2Connection``; these hold
for what a caller reaches: ``serve_http_listener`` with the limits a gateway runs callers with
(``h2_limits``, ``[limits] caller_h2_engine``).  A flood ends only the flooding caller's
connection, with the GOAWAY code an HTTP client can see, and a second caller is still served.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
import trio
from hyperframe.frame import ContinuationFrame, HeadersFrame

from foundation.errors import H2_ENHANCE_YOUR_CALM
from gateway.config.model import LimitsConfig
from gateway.listener import h2 as listener_h2
from overlay.h2.connection import H2Connection
from overlay.h2.engine_h2 import HyperEngine
from overlay.h2.engine_lean import LeanEngine
from overlay.h2.limits import EngineName
from tests.gateway.listener.listener_kit import h2c_request, http_listener
from tests.gateway.router.router_kit import (
    API,
    TEST_LIMITS,
    StandInCluster,
    http_echo_backend,
    make_router,
    serving,
)
from tests.overlay.h2.raw_peer import RawClient, goaway_code, wait_closed

GET = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"api.default.isthmus"),
    (b":path", b"/ok"),
]


class _Seen(H2Connection):
    """The real connection class, remembering each connection a listener made (a spy)."""

    made: list[H2Connection] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _Seen.made.append(self)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[H2Connection]:
    made: list[H2Connection] = []
    monkeypatch.setattr(_Seen, "made", made)
    monkeypatch.setattr(listener_h2, "H2Connection", _Seen)
    return made


@asynccontextmanager
async def caller_gateway(limits: LimitsConfig = TEST_LIMITS) -> AsyncIterator[int]:
    """A caller listener routing api.default to a local HTTP/1.1 echo endpoint."""
    async with serving(http_echo_backend) as http_port:
        router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: http_port}))
        async with http_listener(router, limits=limits) as port:
            yield port


async def good_caller(port: int) -> bytes:
    response, _ = await h2c_request(port, GET)
    return response[b":status"]


@pytest.mark.parametrize("engine", ["h2", "lean"])
async def test_the_listener_serves_callers_on_the_configured_engine(
    engine: EngineName, seen: list[H2Connection]
) -> None:
    async with caller_gateway(replace(TEST_LIMITS, caller_h2_engine=engine)) as port:
        assert await good_caller(port) == b"200"
    [conn] = seen
    assert conn.engine_name == engine
    assert isinstance(conn._engine, LeanEngine if engine == "lean" else HyperEngine)


async def test_caller_rapid_reset_ends_its_connection_alone(
    seen: list[H2Connection], caller_engine: EngineName
) -> None:
    async with caller_gateway() as port:
        raw = await RawClient.connect(port)
        sent = 0
        with contextlib.suppress(trio.BrokenResourceError), trio.fail_after(10):
            while sent < 5000:  # HEADERS immediately followed by RST_STREAM, in batches
                for _ in range(100):
                    sid = raw.h2.get_next_available_stream_id()
                    raw.h2.send_headers(sid, GET, end_stream=True)
                    raw.h2.reset_stream(sid)
                    sent += 1
                await raw.flush()
                await trio.sleep(0.005)
        events = await raw.read_events(h2.events.ConnectionTerminated)
        flooded = seen[0]
        assert flooded.engine_name == caller_engine
        assert (await wait_closed(flooded)).error_code == H2_ENHANCE_YOUR_CALM
        assert goaway_code(events) in (H2_ENHANCE_YOUR_CALM, None)  # None: RST beat the read
        assert flooded.statistics().premature_resets == flooded.limits.max_premature_resets + 1
        assert await good_caller(port) == b"200"


@pytest.mark.parametrize("kind", ["settings", "ping"])
async def test_caller_control_frame_flood_ends_its_connection_alone(
    kind: str, seen: list[H2Connection], caller_engine: EngineName
) -> None:
    async with caller_gateway() as port:
        raw = await RawClient.connect(port)
        sent = 0
        with contextlib.suppress(trio.BrokenResourceError, h2.exceptions.ProtocolError):
            with trio.fail_after(10):
                while sent < 10_000:  # the caller never reads: the gateway must not buffer
                    for _ in range(100):
                        if kind == "settings":
                            raw.h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
                        else:
                            raw.h2.ping(sent.to_bytes(8, "big"))
                        sent += 1
                    await raw.flush()
        flooded = seen[0]
        assert flooded.engine_name == caller_engine
        assert (await wait_closed(flooded)).error_code == H2_ENHANCE_YOUR_CALM
        assert flooded.statistics().control_frames == flooded.limits.max_control_frames + 1
        assert await good_caller(port) == b"200"


async def test_caller_continuation_flood_is_bounded(
    seen: list[H2Connection], caller_engine: EngineName
) -> None:
    async with caller_gateway() as port:
        raw = await RawClient.connect(port)
        await raw.flush()
        block = hpack.Encoder().encode(GET)
        frames = [HeadersFrame(1, data=block[:5]).serialize()]  # no END_HEADERS
        frames += [ContinuationFrame(1, data=b"").serialize() for _ in range(1000)]
        with pytest.raises(trio.BrokenResourceError), trio.fail_after(5):
            for f in frames:
                await raw.sock.send_all(f)
            await trio.sleep(5)  # pragma: no cover - the gateway must have hung up by now
        flooded = seen[0]
        assert flooded.engine_name == caller_engine
        await wait_closed(flooded)
        assert flooded.statistics().bytes_received < 64 * 1024
        assert flooded.statistics().streams_opened == 0
        assert await good_caller(port) == b"200"


async def test_caller_hpack_bomb_ends_its_connection_without_a_response(
    seen: list[H2Connection], caller_engine: EngineName
) -> None:
    """~4 KiB on the wire, ~400 KiB decoded (over six times ``h2_max_header_list_bytes``)."""
    async with caller_gateway() as port:
        raw = await RawClient.connect(port)
        await raw.flush()
        block = hpack.Encoder().encode([*GET] + [(b"x-bomb", b"b" * 4000)] * 100, huffman=False)
        frame = HeadersFrame(1, data=block, flags=["END_STREAM", "END_HEADERS"])
        await raw.sock.send_all(frame.serialize())
        events = await raw.read_events(h2.events.ConnectionTerminated)
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
        assert goaway_code(events) in (H2_ENHANCE_YOUR_CALM, None)
        flooded = seen[0]
        assert flooded.engine_name == caller_engine
        assert (await wait_closed(flooded)).error_code == H2_ENHANCE_YOUR_CALM
        assert flooded.statistics().streams_opened == 0
        assert await good_caller(port) == b"200"


async def test_caller_stalled_header_block_is_closed_at_the_idle_timeout(
    seen: list[H2Connection], caller_engine: EngineName
) -> None:
    """Slowloris on HTTP/2: a HEADERS frame without END_HEADERS and then silence.  No stream is
    open yet, so the connection is idle: it is closed at ``idle_timeout_s`` (the hang guard is
    ten times that), and another caller is served meanwhile."""
    limits = replace(TEST_LIMITS, idle_timeout_s=0.5)
    async with caller_gateway(limits) as port:
        raw = await RawClient.connect(port)
        await raw.flush()
        await raw.read_events(h2.events.RemoteSettingsChanged)  # SETTINGS acknowledged
        block = hpack.Encoder().encode(GET)
        await raw.sock.send_all(HeadersFrame(1, data=block[:5]).serialize())
        assert await good_caller(port) == b"200"
        with trio.fail_after(10 * limits.idle_timeout_s):
            while await raw.sock.receive_some(65536):  # read, never answer: the block stays open
                pass
        stalled = seen[0]
        assert stalled.engine_name == caller_engine
        assert str(stalled.close_reason) == f"idle for {limits.idle_timeout_s}s"
        assert stalled.statistics().streams_opened == 0
