"""Tunnel windows with the gateway-wide buffer budget spent: bulk still moves, byte-exact.

Two real gateways linked over mTLS; a TCP service port in ``east`` reaches an echo service in
``west``.  With ``[limits] buffer_budget = 0`` no tunnel window may grow past its initial size
(64 KiB); a bulk transfer both ways through the tunnel must still complete byte for byte, and
``/metrics`` must show windows that wanted to grow and were told no.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.demo.topology import DemoService, DemoServicePort
from tests.e2e.harness import make_topology, open_overlay, routes_of
from tests.e2e.test_observe import scrape, value

MIB = 1024 * 1024
TOTAL = 24 * MIB
PORT = 16001


def _pattern(total: int) -> bytes:
    block = bytes(range(256)) * 256  # 64 KiB
    return (block * (total // len(block) + 1))[:total]


async def test_bulk_through_a_tunnel_completes_with_a_tiny_budget(tmp_path: Path) -> None:
    topology = make_topology(
        ["east", "west"],
        {"east": (), "west": (DemoService("echo", "tcp", 18081),)},
        service_ports=(DemoServicePort(PORT, "echo.default.isthmus", "tcp"),),
    )

    def patch(site: str, text: str) -> str:
        return text + "\n[limits]\nbuffer_budget = 0\n"

    async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
        await ov.wait("east", "/routes", lambda d: routes_of(d, "echo.default.isthmus") == ["west"])
        host = str(ov.built["east"].site.address)
        payload = _pattern(TOTAL)
        got = bytearray()
        with trio.fail_after(120):  # hang guard: a stuck window would hang here
            while True:
                stream = await trio.open_tcp_stream(host, PORT)
                try:
                    async with trio.open_nursery() as nursery:

                        async def send(s: trio.SocketStream = stream) -> None:
                            view = memoryview(payload)
                            for i in range(0, TOTAL, MIB):
                                await s.send_all(view[i : i + MIB])
                            await s.send_eof()

                        nursery.start_soon(send)
                        while piece := await stream.receive_some(1 << 20):
                            got += piece
                except trio.BrokenResourceError:
                    pass  # the echo service may not listen yet: try again
                finally:
                    await stream.aclose()
                if got:
                    break
                await trio.sleep(0.2)
        assert len(got) == TOTAL and bytes(got) == payload
        refused = 0.0
        for site in ("east", "west"):
            metrics = await scrape(ov, site)
            assert value(metrics, "isthmus_buffer_budget_bytes") == 0
            refused += value(metrics, "isthmus_window_growth_refused_total")
            peak = value(metrics, "isthmus_buffer_budget_peak_bytes")
            assert 0 < peak < 1 * MIB  # a few initial windows, none grown
        assert refused > 0  # the bulk tunnel's windows wanted to grow and stayed small
