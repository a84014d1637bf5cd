"""Who gets a link, and what a bad peer can do to a real gateway (issue 4).

A peer presenting the wrong SPIFFE ID, an unknown trust domain or an expired SVID never gets a
link; a peer that sends malformed or oversized federation frames is disconnected while the
gateway keeps serving its other peers.
"""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path
from typing import Any

import pytest
import trio

from foundation.errors import IdentityError
from foundation.spiffe_id import SpiffeId, TrustDomain
from gateway.demo.topology import DemoService
from overlay.federation.stream import FEDERATION_PATH
from overlay.h2.stream import H2Stream
from overlay.identity.ca import init_ca, issue_svid
from overlay.identity.rotation import Identity
from overlay.identity.state import BundleSource, load_identity_state
from overlay.link.dial import open_link
from overlay.link.session import LinkSession
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of

WEB = (DemoService("web", "http", 18080),)


def _identity(ov: Overlay, site: str, svid_dir: Path | None = None) -> Identity:
    """The identity of ``site`` as the topology issued it (or the SVID in ``svid_dir``)."""
    directory = svid_dir or ov.built[site].directory / "identity"
    bundles = [
        BundleSource(s.trust_domain, ov.root / "ca" / s.trust_domain.name / "bundle.pem")
        for s in ov.topology.sites
    ]
    state = load_identity_state(directory / "svid.pem", directory / "svid_key.pem", bundles)
    return Identity(state)


def _link_error(doc: Any, peer: str) -> str:
    return str(doc[peer]["last_error"] or "")


async def _no_link(ov: Overlay, site: str, peer: str) -> dict[str, Any]:
    """Wait until ``site`` has tried ``peer`` and failed; assert it never linked."""
    doc = await ov.wait(site, "/links", lambda d: d[peer]["last_error"] is not None)
    await trio.sleep(1.0)  # several more attempts
    doc = await ov.get(site, "/links")
    assert doc[peer]["up"] is False
    assert doc[peer]["links_established"] == 0
    return dict(doc)


async def test_wrong_spiffe_id_gets_no_link_either_way(tmp_path: Path) -> None:
    topology = make_topology(["east", "west"], {"east": WEB, "west": WEB})

    def patch(site: str, text: str) -> str:
        # east expects a different workload ID for west than the one west presents.
        return text.replace("/isthmus/gateway/west", "/isthmus/gateway/impostor")

    async with open_overlay(tmp_path, topology, patch=patch) as ov:
        doc = await _no_link(ov, "east", "west")
        assert "impostor" in _link_error(doc, "west") or "not" in _link_error(doc, "west")
        imports = await ov.get("east", "/imports")
        assert imports["peers"] == []
        assert "rejected inbound link" in ov.log("east")  # west's own dials are refused too


async def test_unknown_trust_domain_and_expired_svid_are_rejected(tmp_path: Path) -> None:
    topology = make_topology(["east", "west"], {"east": WEB})
    async with open_overlay(tmp_path, topology, start=["east"]) as ov:
        east = ov.built["east"].site
        # An unknown trust domain: its CA is in nobody's bundles.
        rogue_td = TrustDomain("rogue.e2e.test")
        init_ca(tmp_path / "rogue-ca", rogue_td)
        rogue_dir = tmp_path / "rogue-svid"
        issue_svid(tmp_path / "rogue-ca", SpiffeId.parse("spiffe://rogue.e2e.test/gw"), rogue_dir)
        rogue = Identity(
            load_identity_state(
                rogue_dir / "svid.pem",
                rogue_dir / "svid_key.pem",
                [
                    BundleSource(rogue_td, rogue_dir / "bundle.pem"),
                    BundleSource(
                        east.trust_domain, ov.root / "ca" / east.trust_domain.name / "bundle.pem"
                    ),
                ],
            )
        )
        # TLS 1.3: the client may finish its handshake before the server's verdict arrives;
        # then the rejection shows on its first read.
        with pytest.raises((IdentityError, trio.BrokenResourceError)):
            link = await open_link(
                str(east.address), 15443, identity=rogue, expected=east.gateway_id, timeout=5
            )
            async with link:
                with trio.fail_after(5):
                    await link.stream.receive_some(1)

        # An expired SVID from west's (trusted) CA: issued in the past, valid for an hour.
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        west = ov.built["west"].site
        expired_dir = tmp_path / "expired-svid"
        issue_svid(
            ov.root / "ca" / west.trust_domain.name,
            west.gateway_id,
            expired_dir,
            dt.timedelta(hours=1),
            now=past,
        )
        bundles = [
            BundleSource(s.trust_domain, ov.root / "ca" / s.trust_domain.name / "bundle.pem")
            for s in ov.topology.sites
        ]
        stale_state = load_identity_state(
            expired_dir / "svid.pem", expired_dir / "svid_key.pem", bundles, now=past
        )
        with pytest.raises((IdentityError, trio.BrokenResourceError)):
            link = await open_link(
                str(east.address),
                15443,
                identity=Identity(stale_state),
                expected=east.gateway_id,
                timeout=5,
            )
            async with link:
                with trio.fail_after(5):
                    await link.stream.receive_some(1)
        log = ov.log("east")
        assert "expired" in log  # the expired SVID is named as such
        assert log.count("rejected inbound link") >= 2
        assert (await ov.get("east", "/links"))["west"]["up"] is False


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (struct.pack(">I", 9) + b"not json!", "malformed"),
        (struct.pack(">I", 512 * 1024 * 1024), "oversized"),
        (struct.pack(">I", 2) + b"{}", "missing keys"),
    ],
)
async def test_bad_federation_input_disconnects_only_that_peer(
    tmp_path: Path, frame: bytes, why: str
) -> None:
    topology = make_topology(
        ["east", "west", "north"], {"east": WEB, "west": (DemoService("api", "http", 18081),)}
    )
    async with open_overlay(tmp_path, topology, start=["east", "west"]) as ov:
        await ov.wait("east", "/routes", lambda d: routes_of(d, "api.default.isthmus") == ["west"])
        east = ov.built["east"].site
        # "north" is a legitimate peer of east (trusted, expected ID) that turns hostile.
        north = _identity(ov, "north")
        link = await open_link(
            str(east.address), 15443, identity=north, expected=east.gateway_id, timeout=5
        )

        async def ignore(stream: H2Stream) -> None:
            # east exports over any live link to north, this one too: leave its export
            # stream open and unanswered (a 404 would end the link before our bad frame).
            await trio.sleep_forever()

        session = LinkSession(link, dialed=True, handler=ignore, ping_interval=None)
        async with trio.open_nursery() as nursery:
            client = await nursery.start(session.run)
            stream = await client.open_stream(
                [
                    (":method", "POST"),
                    (":scheme", "https"),
                    (":authority", "east"),
                    (":path", FEDERATION_PATH),
                ]
            )
            await stream.response_headers()
            await stream.send_all(frame)
            with trio.fail_after(10):
                reason = await session.outer.wait_closed()  # east hangs up on us
            nursery.cancel_scope.cancel()
        assert reason is not None, why
        assert "disconnecting" in ov.log("east")
        # The well-behaved peer is unaffected.
        links = await ov.get("east", "/links")
        assert links["west"]["up"] is True
        doc = await ov.get("east", "/routes")
        assert routes_of(doc, "api.default.isthmus") == ["west"]
