"""The demo services over real loopback sockets (in-process and as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import trio

from gateway.demo.services import serve_http_echo, serve_tcp_echo
from gateway.http.h1_client import H1ClientConnection
from gateway.http.message import RequestHead


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    out = b""
    for _ in range(10_000):
        data = await stream.receive_some(65536)
        if not data:
            break
        out += data
    return out


async def test_http_echo_reports_site_and_request() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_http_echo, "127.0.0.1", 0, "aws-east"))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            conn = H1ClientConnection(stream)
            head = RequestHead(
                b"POST",
                b"/hello?x=1",
                b"1.1",
                ((b"host", b"whoami.default.isthmus"), (b"x-test", b"yes")),
            )
            # Chunked upload of 1 MiB with a trailer; the service counts, not stores.
            await conn.send_request(head, content_length=None)
            for _ in range(16):
                await conn.send_body(b"z" * 65536)
            await conn.end_request(trailers=((b"x-sum", b"42"),))
            response = await conn.receive_response()
            body = b""
            while piece := await conn.receive_body():
                body += piece
            assert response.status == 200
            assert response.get(b"x-isthmus-demo-site") == b"aws-east"
            doc = json.loads(body)
            assert doc["site"] == "aws-east"
            assert doc["method"] == "POST" and doc["path"] == "/hello?x=1"
            assert ["x-test", "yes"] in doc["headers"]
            assert ["host", "whoami.default.isthmus"] in doc["headers"]
            assert doc["body_length"] == 16 * 65536
            assert doc["trailers"] == [["x-sum", "42"]]
            # keep-alive: a second request on the same connection
            assert conn.reusable
            conn.start_next()
            await conn.send_request(
                RequestHead(b"GET", b"/2", b"1.1", ((b"host", b"a"),)), has_body=False
            )
            await conn.end_request()
            again = await conn.receive_response()
            body2 = b""
            while piece := await conn.receive_body():
                body2 += piece
            assert again.status == 200 and json.loads(body2)["path"] == "/2"
            await conn.aclose()
            nursery.cancel_scope.cancel()


async def test_http_echo_rejects_bad_request_with_400() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_http_echo, "127.0.0.1", 0, "site-a"))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n")
            reply = await _read_all(stream)
            assert reply.startswith(b"HTTP/1.1 400 ")
            assert b"obs-fold" in reply
            nursery.cancel_scope.cancel()


async def test_tcp_echo_with_half_close() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_tcp_echo, "127.0.0.1", 0, "site-b"))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            payload = bytes(range(256)) * 1024  # 256 KiB, more than socket buffers hold at once

            async def send() -> None:
                await stream.send_all(payload)
                await stream.send_eof()  # half-close: we still read the echo afterwards

            nursery.start_soon(send)
            echoed = await _read_all(stream)
            assert echoed == payload
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_runnable_as_module() -> None:
    with trio.fail_after(20):
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "gateway.demo.services",
                "http",
                "--port",
                "0",
                "--site",
                "gcp-west",
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(200)
                assert chunk, "service exited before announcing its port"
                line += chunk
            assert line.startswith(b"listening http 127.0.0.1:")
            port = int(line.split(b":")[1].split()[0])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            reply = await _read_all(stream)
            assert reply.startswith(b"HTTP/1.1 200 ")
            assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["site"] == "gcp-west"
        finally:
            process.terminate()
            await process.wait()
