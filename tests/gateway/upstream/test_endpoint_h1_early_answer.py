"""An HTTP/1.1 endpoint that answers before it read the request body (nginx's ``return``, an
early 4xx) keeps its connection in the pool when the rest of the body is small.

Why: cut off after the answer, the exchange was unfinished and its connection closed, so
the next request dialled anew.  A route mirror's copies to another site met exactly this in
the benchmark: the peer gateway dialled the endpoint for nine copies in ten, and the copies,
slower, held their route's in-flight slots longer.  The rest of a small body now still goes
out (the endpoint discards it) and the connection is reused; a large rest is still cut off.
"""

from __future__ import annotations

import trio

from gateway.http.exchange import Request
from gateway.http.message import Headers
from gateway.upstream.endpoint_h1 import FINISH_MAX_BYTES, finish_after_answer, forward_h1
from gateway.upstream.pool import UpstreamPool
from tests.gateway.upstream.upstream_kit import RecordingWriter, endpoint, listen_loopback


class EarlyAnswerer:
    """An HTTP/1.1 endpoint that answers 200 as soon as it has a request's head, then reads
    (and discards) the declared body and serves the next request on the same connection."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0

    async def __call__(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = b""
        with trio.move_on_after(10):
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                self.answered += 1
                while len(buf) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]


class SignallingWriter(RecordingWriter):
    """A :class:`RecordingWriter` that tells when the whole response reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = trio.Event()

    async def send_end(self, trailers: Headers = ()) -> None:
        await super().send_end(trailers)
        self.ended.set()


class LateRest:
    """A body whose first half is there at once and whose rest comes only once the whole
    response reached the writer: the endpoint's answer is always complete before the body."""

    trailers = ()

    def __init__(self, size: int, writer: SignallingWriter) -> None:
        self.half = size // 2
        self.rest = size - self.half
        self.writer = writer
        self.sent = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.sent == 0:
            self.sent = 1
            return b"a" * self.half
        if self.sent == 1:
            await self.writer.ended.wait()
            self.sent = 2
            return b"b" * self.rest
        return b""


def post(size: int) -> Request:
    headers = ((b"content-length", str(size).encode()),)
    return Request(b"POST", b"http", b"api.default.isthmus", b"/m", headers)


async def exchanges(size: int, n: int) -> EarlyAnswerer:
    backend = EarlyAnswerer()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(listen_loopback, backend)
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        for _ in range(n):
            writer = SignallingWriter()
            with trio.fail_after(10):
                await forward_h1(
                    pool, endpoint(port), post(size), LateRest(size, writer), writer,
                    connect_timeout=5,
                )  # fmt: skip
            assert writer.status == 200 and bytes(writer.body) == b"ok"
        nursery.cancel_scope.cancel()
    return backend


async def test_a_small_rest_is_sent_after_an_early_answer_and_the_connection_reused() -> None:
    backend = await exchanges(1024, 3)
    assert backend.answered == 3
    assert backend.connections == 1


async def test_a_large_rest_is_still_cut_off_and_its_connection_closed() -> None:
    backend = await exchanges(2 * (FINISH_MAX_BYTES + 1024), 2)
    assert backend.answered == 2
    assert backend.connections == 2


def test_only_a_declared_small_rest_is_finished() -> None:
    assert finish_after_answer(1024, 512)
    assert finish_after_answer(FINISH_MAX_BYTES, 0)
    assert not finish_after_answer(FINISH_MAX_BYTES + 1, 0)
    assert not finish_after_answer(None, 0)  # chunked: how much is left is unknown
