"""In-memory links between Peerings: a wire that can go silent, and a dialer over it.

Not a test module.  A :class:`MemoryLink` is what :class:`~overlay.link.session.LinkSession`
and peering read of a :class:`~overlay.link.link.Link` (the stream, who the peer is, where it
is, ``aclose``) over a pair of in-memory streams, so HTTP/2, the reverse connection, PINGs and
federation all run for real while the autojump clock drives time.  :attr:`Wire.cut` makes the
wire drop every byte without closing anything: a peer gone silent, which only the PING
deadline can notice.
"""

from __future__ import annotations

import contextlib
from typing import cast

import trio
import trio.testing

from foundation.spiffe_id import SpiffeId
from overlay.identity.rotation import Identity
from overlay.link.link import Link, LinkError
from overlay.peering.peers import Peering


class MemoryLink:
    """A verified link's face over an in-memory stream."""

    def __init__(
        self, stream: trio.abc.Stream, peer_id: SpiffeId, remote_address: str = "memory"
    ) -> None:
        self.stream = stream
        self.peer_id = peer_id
        self.remote_address = remote_address
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True
        await trio.aclose_forcefully(self.stream)


class Wire:
    """Both directions of one link; ``cut`` drops all traffic from then on (no EOF)."""

    def __init__(self) -> None:
        self.cut = False

    def _one_way(self) -> tuple[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]:
        send = trio.testing.MemorySendStream()
        receive = trio.testing.MemoryReceiveStream()

        def pump() -> None:
            if self.cut:
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    send.get_data_nowait()
                return
            trio.testing.memory_stream_pump(send, receive)

        async def async_pump() -> None:
            pump()

        send.send_all_hook = async_pump
        send.close_hook = pump
        return send, receive

    def pair(self) -> tuple[trio.StapledStream, trio.StapledStream]:  # type: ignore[type-arg]
        a_send, b_receive = self._one_way()
        b_send, a_receive = self._one_way()
        return trio.StapledStream(a_send, a_receive), trio.StapledStream(b_send, b_receive)


class MemoryNetwork:
    """Dials from one Peering land on :meth:`Peering.accept` of another, over a new Wire.

    ``reachable = False`` makes every later dial fail as an unreachable peer would.
    ``accept_delay``: seconds before the accepting side starts to serve a new link (a peer
    starved by many handshakes at once: the dialer's first PING waits that long).
    """

    def __init__(self, nursery: trio.Nursery, *, accept_delay: float = 0.0) -> None:
        self._nursery = nursery
        self.accept_delay = accept_delay
        self._sites: dict[str, tuple[Peering, SpiffeId]] = {}
        self.wires: list[Wire] = []
        #: The TLS SNI each dial named (None: none), in dial order, beside ``wires``.
        self.server_names: list[str | None] = []
        self.reachable = True

    def add(self, host: str, peering: Peering, spiffe_id: SpiffeId) -> None:
        self._sites[host] = (peering, spiffe_id)

    def dialer(self, own_id: SpiffeId, source: str = "memory") -> object:
        """An ``OpenLink`` for the Peering whose SPIFFE ID is ``own_id``; ``source``: the
        ``host:port`` its links come from, as the accepting side sees it."""

        async def open_link(
            host: str,
            port: int,
            *,
            identity: Identity,
            expected: SpiffeId,
            timeout: float,  # noqa: ASYNC109 -- OpenLink's signature
            local_address: str | None = None,
            server_name: str | None = None,
        ) -> Link:
            if not self.reachable or host not in self._sites:
                raise LinkError(f"no route to {host}")
            peering, their_id = self._sites[host]
            if their_id != expected:
                raise LinkError(f"{host} is {their_id}, not {expected}")
            wire = Wire()
            self.wires.append(wire)
            self.server_names.append(server_name)
            ours, theirs = wire.pair()
            link = cast(Link, MemoryLink(theirs, own_id, source))
            self._nursery.start_soon(self._accept_later, peering, link)
            return cast(Link, MemoryLink(ours, their_id))

        return open_link

    async def _accept_later(self, peering: Peering, link: Link) -> None:
        await trio.sleep(self.accept_delay)
        await peering.accept(link)
