"""The control site's push to a site of two gateways: every replica gets every version on its
own link (real HTTP/2 connection pairs in memory, the real inboxes), each one's answer is
tracked, and a replica whose link comes up later gets the current version."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.fleet.document import EMPTY
from gateway.fleet.state import FleetState
from overlay.h2.connection import H2Connection
from tests.gateway.fleet.test_site_stream import DOC, authority, eventually, h2_pair, inbox

B1, B2 = "127.0.0.2:15443", "127.0.0.3:15443"


class TwoReplicas:
    """Peer b with two replicas; a replica's link is up once ``up`` gave it a connection."""

    def __init__(self) -> None:
        self.links: dict[str, H2Connection] = {}
        self.changed = trio.Event()

    def replicas(self, site: str) -> tuple[str, ...]:
        return (B1, B2) if site == "b" else ()

    def replica_outbound(self, site: str, replica: str) -> H2Connection | None:
        return self.links.get(replica) if site == "b" else None

    def replica_changed(self, site: str, replica: str) -> trio.Event | None:
        return self.changed if site == "b" and replica in (B1, B2) else None

    def up(self, replica: str, conn: H2Connection) -> None:
        self.links[replica] = conn
        self.changed.set()
        self.changed = trio.Event()


async def test_every_replica_gets_the_version_and_a_late_one_catches_up(tmp_path: Path) -> None:
    auth = authority(tmp_path)
    state = {r: FleetState("site", "hq", "b") for r in (B1, B2)}
    peering = TwoReplicas()

    def b_row() -> dict[str, object]:
        return next(s for s in auth.sites_view() if s["site"] == "b")

    box = {r: inbox(state[r]) for r in (B1, B2)}
    async with (
        h2_pair(lambda s: box[B1]("hq", s)) as conn1,
        h2_pair(lambda s: box[B2]("hq", s)) as conn2,
        trio.open_nursery() as nursery,
    ):
        peering.up(B1, conn1)
        await nursery.start(auth.serve, peering, lambda: ["b"])
        await eventually(lambda: state[B1].version == EMPTY.version)
        await auth.write(DOC, EMPTY.version)
        await eventually(lambda: state[B1].version == DOC.version)
        # b2 has no link yet: it holds nobody back, and the control site says it is cut off.
        await eventually(lambda: b_row()["current"] is True)
        assert auth.answers.get("b", B2).status == "unreachable"
        assert state[B2].version is None

        peering.up(B2, conn2)  # its link is up: it gets the current version at once
        await eventually(lambda: state[B2].version == DOC.version)
        await eventually(lambda: auth.answers.get("b", B2).version == DOC.version)
        assert auth.answers.get("b", B1).status == auth.answers.get("b", B2).status == "applied"
        assert b_row()["lagging"] == [] and b_row()["current"] is True
        nursery.cancel_scope.cancel()
