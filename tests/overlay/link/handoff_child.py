"""A stand-in supervisor in its own process: serves the links a test hands it over an fd.

Run as ``python -m tests.overlay.link.handoff_child FD DIR``: ``FD`` is the inherited
datagram socket, ``DIR`` holds ``chain.pem``, ``key.pem`` and one ``bundle-<domain>.pem`` per
trusted trust domain.  It answers each link's first message with ``child:<message>``, prints
``ready`` once it receives, and exits after at most ``LIFETIME_S`` (a hang guard: the test
kills it by PID when done).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import trio
from cryptography import x509

from overlay.identity.rotation import Identity
from overlay.identity.state import build_identity_state
from overlay.link.accept import accept_link_stream
from overlay.link.handoff import receive_handoffs
from overlay.link.link import Link
from tests.overlay.identity.certfactory import NOW, bundle_set

LIFETIME_S = 60


def load_identity(directory: Path) -> Identity:
    bundles = {
        path.stem.removeprefix("bundle-"): (
            x509.load_pem_x509_certificates(data) if (data := path.read_bytes()) else []
        )
        for path in directory.glob("bundle-*.pem")  # an empty file: an empty bundle
    }
    state = build_identity_state(
        (directory / "chain.pem").read_bytes(),
        (directory / "key.pem").read_bytes(),
        bundle_set(bundles),
        now=NOW,
    )
    return Identity(state)


async def main(fd: int, directory: Path) -> None:
    ident = load_identity(directory)
    dgram = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))

    async def handler(link: Link) -> None:
        data = await link.stream.receive_some(100)
        await link.stream.send_all(b"child:" + data)

    async def on_connection(tcp: trio.SocketStream) -> None:
        await accept_link_stream(
            tcp, handler, identity=ident, authorize=lambda _sid: True, handshake_timeout=5
        )

    with trio.move_on_after(LIFETIME_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(receive_handoffs, dgram, on_connection)
            print("ready", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), Path(sys.argv[2]))
