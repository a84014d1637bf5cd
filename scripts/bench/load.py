"""Load generators: wrk (max req/s, 1 MiB bodies), an open-loop latency client, iperf3.

*Max throughput* is closed-loop: ``wrk`` with a fixed number of keep-alive connections.
*Latency* must not be closed-loop (a slow answer would delay the next request and hide
itself: coordinated omission), so :func:`open_loop` sends request ``i`` at ``t0 + i/rate``
whatever happened before, on a pool of keep-alive connections, and measures each latency from
the scheduled dispatch: queueing behind a slow request counts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import h11
import trio

from .procs import BenchError

REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    bytes_read: float
    non_2xx: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _duration(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"cannot read wrk duration {text!r}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(out: str) -> WrkResult:
    m = re.search(r"(\d+) requests in ([0-9.]+\w+), ([0-9.]+)([KMGT]?B) read", out)
    if not m:
        raise BenchError(f"cannot read wrk's output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=int(m.group(1)),
        seconds=_duration(m.group(2)),
        bytes_read=float(m.group(3)) * _UNITS[m.group(4)],
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


async def run_wrk(
    url: str,
    *,
    host_header: str | None,
    connections: int,
    seconds: float,
    script: Path | None = None,
) -> WrkResult:
    """wrk's figures for ``url``; ``script``: a wrk Lua script (e.g. a POST with a body)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s"]
    if host_header:
        argv += ["-H", f"Host: {host_header}"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    with trio.fail_after(seconds + 30):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    out = (done.stdout + done.stderr).decode("utf-8", "replace")
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed (status {done.returncode}):\n{out}")
    return parse_wrk(out)


@dataclass(frozen=True)
class IperfResult:
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0


async def run_iperf(host: str, port: int, *, seconds: float, reverse: bool) -> IperfResult:
    """One TCP stream for ``seconds`` through ``host:port`` (``reverse``: server sends)."""
    argv = ["iperf3", "-c", host, "-p", str(port), "-t", str(max(1, round(seconds))), "-J"]
    if reverse:
        argv.append("-R")
    with trio.fail_after(seconds + 30):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    try:
        doc = json.loads(done.stdout)
        received = doc["end"]["sum_received"]
        return IperfResult(int(received["bytes"]), float(received["seconds"]))
    except (ValueError, KeyError, TypeError):
        out = (done.stdout + done.stderr).decode("utf-8", "replace")[-2000:]
        raise BenchError(f"{' '.join(argv)} failed (status {done.returncode}):\n{out}") from None


class _Client:
    """One keep-alive HTTP/1.1 client connection (h11), reopened after any failure."""

    def __init__(self, host: str, port: int, host_header: str) -> None:
        self.host, self.port, self.host_header = host, port, host_header
        self.stream: trio.SocketStream | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def connect(self) -> None:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.conn = h11.Connection(h11.CLIENT)

    async def close(self) -> None:
        if self.stream is not None:
            await trio.aclose_forcefully(self.stream)
        self.stream = None

    async def get(self, path: str) -> tuple[int, int]:
        """GET ``path``; -> (status, body length).  Raises on any transport failure."""
        await self.connect()
        assert self.stream is not None
        conn = self.conn
        request = h11.Request(method="GET", target=path, headers=[("Host", self.host_header)])
        await self.stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, length = 0, 0
        for _ in range(1_000_000):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(256 * 1024))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                length += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise BenchError("connection closed before the response ended")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.close()
        return status, length


async def probe(host: str, port: int, host_header: str, path: str) -> tuple[int, int]:
    """One GET on a new connection -> (status, body length); BenchError with the reason."""
    client = _Client(host, port, host_header)
    try:
        with trio.fail_after(REQUEST_TIMEOUT_S):
            return await client.get(path)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        raise BenchError(f"GET http://{host}:{port}{path} (Host: {host_header}): {exc!r}") from exc
    finally:
        await client.close()


@dataclass(frozen=True)
class LatencyResult:
    latencies: tuple[float, ...]  # seconds, sorted
    errors: int
    sent: int

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return self.latencies[min(len(self.latencies) - 1, int(q * len(self.latencies)))]


async def open_loop(
    host: str,
    port: int,
    host_header: str,
    path: str,
    *,
    rate: float,
    seconds: float,
    connections: int = 16,
) -> LatencyResult:
    """Send ``rate`` GET/s for ``seconds`` on schedule (open loop); latency from intended time."""
    total = max(1, int(rate * seconds))
    send, receive = trio.open_memory_channel[float](total)
    latencies: list[float] = []
    errors = 0

    async def worker(
        rx: trio.MemoryReceiveChannel[float],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        nonlocal errors
        client = _Client(host, port, host_header)
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            try:
                await client.connect()  # before the clock starts; else at the first request
            except OSError:
                await client.close()
        task_status.started()
        try:
            async with rx:
                async for intended in rx:
                    try:
                        with trio.fail_after(REQUEST_TIMEOUT_S):
                            status, _ = await client.get(path)
                    except (OSError, trio.TooSlowError, BenchError, h11.ProtocolError):
                        errors += 1
                        await client.close()
                        continue
                    latencies.append(trio.current_time() - intended)
                    if status != 200:
                        errors += 1
        finally:
            await client.close()

    with trio.fail_after(seconds + 60):
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                await nursery.start(worker, receive.clone())
            await receive.aclose()
            t0 = trio.current_time() + 0.1
            async with send:
                for i in range(total):
                    intended = t0 + i / rate
                    await trio.sleep_until(intended)
                    # From the dispatch, not ``intended``: the event loop wakes up to 1 ms
                    # late (epoll's granularity), a client artefact; queueing behind busy
                    # connections still counts, the dispatcher never waits for answers.
                    send.send_nowait(trio.current_time())
    return LatencyResult(tuple(sorted(latencies)), errors, total)
