"""The floor: the least work any trio HTTP/1.1 proxy does per request, measured like a target.

Why: the L7 target is a ratio against HAProxy, a C event loop.  To say what limits Isthmus
(rather than guess), the benchmark also runs this deliberately minimal trio proxy in the same
run: one task per caller connection, one kept-alive upstream connection per caller, the head
found with ``bytes.find`` and forwarded as it came, the response framed by its Content-Length
only.  No routing, no validation, no HTTP/2, no TLS -- so its CPU per request is what trio's
socket and scheduling layer alone costs on this machine, the ceiling of any design built on it.
Not a product: it only understands what nginx answers to wrk's GETs, and says so on anything
else (it closes the connection).

Run as ``python scripts/bench/floor.py LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT``.
"""

from __future__ import annotations

import contextlib
import sys

import trio

MAX_HEAD = 64 * 1024
READ = 64 * 1024


async def _read_until(stream: trio.SocketStream, buf: bytearray, marker: bytes) -> int:
    """Index of ``marker`` in ``buf``, reading more as needed; -1 on EOF or an oversized head."""
    while (i := buf.find(marker)) < 0:
        if len(buf) > MAX_HEAD:
            return -1
        data = await stream.receive_some(READ)
        if not data:
            return -1
        buf += data
    return i


def _content_length(head: bytes) -> int:
    start = head.lower().find(b"\r\ncontent-length:")
    if start < 0:
        return -1
    end = head.find(b"\r\n", start + 2)
    return int(head[start + 17 : end])


async def handle(client: trio.SocketStream, upstream_host: str, upstream_port: int) -> None:
    upstream = await trio.open_tcp_stream(upstream_host, upstream_port)
    async with client, upstream:
        cbuf, ubuf = bytearray(), bytearray()
        while True:
            end = await _read_until(client, cbuf, b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(cbuf[: end + 4])
            del cbuf[: end + 4]
            if _content_length(head) > 0:
                return  # bodies are not part of the floor
            await upstream.send_all(head)
            rend = await _read_until(upstream, ubuf, b"\r\n\r\n")
            if rend < 0:
                return
            size = _content_length(bytes(ubuf[: rend + 4]))
            if size < 0:
                return
            total = rend + 4 + size
            while len(ubuf) < total:
                data = await upstream.receive_some(READ)
                if not data:
                    return
                ubuf += data
            response = bytes(ubuf[:total])
            del ubuf[:total]
            await client.send_all(response)


async def main(host: str, port: int, upstream_host: str, upstream_port: int) -> None:
    async def on_connection(stream: trio.SocketStream) -> None:
        with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await handle(stream, upstream_host, upstream_port)

    await trio.serve_tcp(on_connection, port, host=host)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: floor.py LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT")
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
