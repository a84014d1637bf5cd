"""Rotation under traffic, over real TLS on 127.0.0.1, with files written by the dev CA.

* a long-lived link keeps exchanging bytes across an SVID swap, and new links get the new SVID;
* dials keep succeeding while the SVID rotates (zero failed handshakes);
* a trust domain whose bundle is removed (or emptied) has its live links closed, others stay;
* bad new files are rejected and the last good identity stays.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.bundle import BundleSet
from overlay.identity.ca import DevCa, init_ca, issue_svid
from overlay.identity.rotation import Identity, serve_identity
from overlay.identity.state import BundleSource, build_identity_state, load_identity_state
from overlay.link.accept import serve_links
from overlay.link.dial import open_link
from overlay.link.link import Link

SERVER = SpiffeId.parse("spiffe://a.test/gateway/server")
CLIENT_A = SpiffeId.parse("spiffe://a.test/gateway/client")
CLIENT_B = SpiffeId.parse("spiffe://b.test/gateway/client")
POLL = 0.02


class Site:
    """One side's files: SVID from its CA, bundles of every CA it trusts."""

    def __init__(self, root: Path, ca: DevCa, sid: SpiffeId, trusts: list[DevCa]) -> None:
        self.ca, self.sid = ca, sid
        self.dir = root / sid.path.strip("/").replace("/", "_")
        self.sources = [
            BundleSource(c.trust_domain, self.dir / f"{c.trust_domain.name}.pem") for c in trusts
        ]
        for c, src in zip(trusts, self.sources, strict=True):
            src.path.parent.mkdir(parents=True, exist_ok=True)
            src.path.write_bytes(c.bundle_path.read_bytes())
        self.rotate()
        self.identity = Identity(self.load())

    def rotate(self) -> int:
        paths = issue_svid(self.ca.directory, self.sid, self.dir, dt.timedelta(hours=1))
        from cryptography import x509

        return x509.load_pem_x509_certificate(paths.svid.read_bytes()).serial_number

    def load(self) -> object:
        return load_identity_state(self.dir / "svid.pem", self.dir / "svid_key.pem", self.sources)

    async def watch(self, nursery: trio.Nursery) -> None:
        await nursery.start(
            partial(
                serve_identity,
                self.identity,
                svid_path=self.dir / "svid.pem",
                key_path=self.dir / "svid_key.pem",
                bundles=self.sources,
                poll_interval_s=POLL,
            )
        )

    async def wait_generation(self, gen: int) -> None:
        with trio.fail_after(5):
            while self.identity.generation < gen:  # noqa: ASYNC110 -- polling a file watcher
                await trio.sleep(POLL)


@pytest.fixture
def cas(tmp_path: Path) -> tuple[DevCa, DevCa]:
    return (
        init_ca(tmp_path / "ca-a", TrustDomain("a.test")),
        init_ca(tmp_path / "ca-b", TrustDomain("b.test")),
    )


async def echo(link: Link) -> None:
    while data := await link.stream.receive_some(1024):
        await link.stream.send_all(data)


@asynccontextmanager
async def serving(
    site: Site, handler: Callable[[Link], Awaitable[None]] = echo
) -> AsyncIterator[tuple[int, trio.Nursery]]:
    async with trio.open_nursery() as nursery:
        await site.watch(nursery)
        listeners = await nursery.start(
            partial(
                serve_links,
                handler,
                host="127.0.0.1",
                port=0,
                identity=site.identity,
                authorize=lambda _sid: True,
                handshake_timeout=5,
            )
        )
        yield listeners[0].socket.getsockname()[1], nursery
        nursery.cancel_scope.cancel()


async def assert_closed(link: Link) -> None:
    """The link is dead: a probe is never echoed (EOF or an error instead), within 5 s."""
    with trio.fail_after(5):
        try:
            await link.stream.send_all(b"probe")
            while await link.stream.receive_some(100):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def roundtrip(link: Link, data: bytes) -> bytes:
    with trio.fail_after(5):
        await link.stream.send_all(data)
        got = b""
        while len(got) < len(data):
            chunk = await link.stream.receive_some(1024)
            assert chunk, "link closed"
            got += chunk
        return got


async def test_long_lived_link_survives_svid_swap_and_new_links_get_new_svid(
    tmp_path: Path, cas: tuple[DevCa, DevCa]
) -> None:
    ca_a, ca_b = cas
    server = Site(tmp_path, ca_a, SERVER, [ca_a, ca_b])
    client = Site(tmp_path, ca_b, CLIENT_B, [ca_a, ca_b])
    old_serial = server.identity.state.svid.leaf.serial_number
    async with serving(server) as (port, _):
        old = await open_link("127.0.0.1", port, identity=client.identity, expected=SERVER)
        assert old.peer.leaf.serial_number == old_serial
        for i in range(200):  # bounded: bytes keep flowing while the server rotates
            assert await roundtrip(old, b"before %d" % i) == b"before %d" % i
            if i == 20:
                new_serial = server.rotate()
            if i > 20 and server.identity.generation >= 1:
                break
        await server.wait_generation(1)
        assert server.identity.state.svid.leaf.serial_number == new_serial != old_serial
        for i in range(20):
            assert await roundtrip(old, b"after %d" % i) == b"after %d" % i
        new = await open_link("127.0.0.1", port, identity=client.identity, expected=SERVER)
        assert new.peer.leaf.serial_number == new_serial
        assert await roundtrip(new, b"new") == b"new"
        assert await roundtrip(old, b"old still") == b"old still"
        assert old.peer.leaf.serial_number == old_serial
        await new.aclose()
        await old.aclose()


async def test_dials_never_fail_while_svid_rotates(
    tmp_path: Path, cas: tuple[DevCa, DevCa], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="isthmus.identity")
    ca_a, _ = cas
    server = Site(tmp_path, ca_a, SERVER, [ca_a])
    client = Site(tmp_path, ca_a, CLIENT_A, [ca_a])
    serials = set()
    async with serving(server) as (port, _):
        for i in range(60):
            if i % 15 == 5:
                server.rotate()
            link = await open_link("127.0.0.1", port, identity=client.identity, expected=SERVER)
            serials.add(link.peer.leaf.serial_number)
            assert await roundtrip(link, b"x") == b"x"
            await link.aclose()
            await trio.sleep(POLL / 2)
    assert len(serials) >= 2  # the rotations really happened under the dials
    # A rotation in progress (new key, old cert for a poll) is not reported as an error.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert sum("identity rotated" in r.getMessage() for r in caplog.records) >= 2


async def test_removing_a_bundle_closes_that_domains_links_only(
    tmp_path: Path, cas: tuple[DevCa, DevCa]
) -> None:
    ca_a, ca_b = cas
    server = Site(tmp_path, ca_a, SERVER, [ca_a, ca_b])
    client_a = Site(tmp_path, ca_a, CLIENT_A, [ca_a])
    client_b = Site(tmp_path, ca_b, CLIENT_B, [ca_a])
    async with serving(server) as (port, _):
        link_a = await open_link("127.0.0.1", port, identity=client_a.identity, expected=SERVER)
        link_b = await open_link("127.0.0.1", port, identity=client_b.identity, expected=SERVER)
        assert await roundtrip(link_b, b"b") == b"b"
        assert await roundtrip(link_a, b"a") == b"a"
        assert len(server.identity.live_links()) == 2
        # The operator drops b.test from the trusted set.
        state = server.identity.state
        without_b = BundleSet(b for td, b in state.bundles.items() if td.name != "b.test")
        new = build_identity_state(
            state.svid.chain_pem(),
            _key_pem(server),
            without_b,
            now=dt.datetime.now(dt.UTC),
        )
        assert server.identity.swap(new) == 1
        await assert_closed(link_b)
        assert await roundtrip(link_a, b"a still works") == b"a still works"
        assert [lk.peer.spiffe_id for lk in server.identity.live_links()] == [CLIENT_A]
        # And b.test can no longer link at all.
        link = await open_link("127.0.0.1", port, identity=client_b.identity, expected=SERVER)
        await assert_closed(link)
        await link.aclose()
        await link_a.aclose()
        await link_b.aclose()


async def test_emptied_bundle_file_closes_live_links_on_both_ends(
    tmp_path: Path, cas: tuple[DevCa, DevCa]
) -> None:
    ca_a, ca_b = cas
    server = Site(tmp_path, ca_a, SERVER, [ca_a, ca_b])
    client = Site(tmp_path, ca_b, CLIENT_B, [ca_a, ca_b])
    ended = trio.Event()

    async def handler(link: Link) -> None:
        try:
            await echo(link)
        finally:
            ended.set()

    async with serving(server, handler) as (port, nursery):
        await client.watch(nursery)
        link = await open_link("127.0.0.1", port, identity=client.identity, expected=SERVER)
        assert await roundtrip(link, b"hello") == b"hello"
        # The client side's operator empties a.test's bundle: the client closes its link.
        client.sources[0].path.write_bytes(b"")
        await client.wait_generation(1)
        assert link.revoked and "a.test" in link.revoked
        with trio.fail_after(5):
            await ended.wait()
        assert client.identity.live_links() == ()


async def test_bad_new_files_are_rejected_and_last_good_stays(
    tmp_path: Path, cas: tuple[DevCa, DevCa], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="isthmus.identity")
    ca_a, _ = cas
    server = Site(tmp_path, ca_a, SERVER, [ca_a])
    client = Site(tmp_path, ca_a, CLIENT_A, [ca_a])
    good = server.identity.state
    async with serving(server) as (port, _):
        link = await open_link("127.0.0.1", port, identity=client.identity, expected=SERVER)
        (server.dir / "svid.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
        with trio.fail_after(5):
            while not caplog.records:  # noqa: ASYNC110 -- waiting for the watcher's log line
                await trio.sleep(POLL)
        assert "rejected new identity files" in caplog.records[0].getMessage()
        assert server.identity.state is good
        assert await roundtrip(link, b"still") == b"still"
        fresh = await open_link("127.0.0.1", port, identity=client.identity, expected=SERVER)
        assert fresh.peer.leaf.serial_number == good.svid.leaf.serial_number
        await fresh.aclose()
        # A later good rotation is picked up.
        server.rotate()
        await server.wait_generation(1)
        assert server.identity.state.svid.leaf.serial_number != good.svid.leaf.serial_number
        assert len(caplog.records) == 1  # logged once per bad content, not every poll
        await link.aclose()


def _key_pem(site: Site) -> bytes:
    return (site.dir / "svid_key.pem").read_bytes()


async def test_touch_without_change_is_not_a_rotation(
    tmp_path: Path, cas: tuple[DevCa, DevCa]
) -> None:
    ca_a, _ = cas
    site = Site(tmp_path, ca_a, SERVER, [ca_a])
    before = site.identity.state
    async with trio.open_nursery() as nursery:
        await site.watch(nursery)
        os.utime(site.dir / "svid.pem", ns=(1, 1))
        await trio.sleep(POLL * 10)
        assert site.identity.generation == 0 and site.identity.state is before
        site.rotate()
        await site.wait_generation(1)
        nursery.cancel_scope.cancel()


async def test_ca_rotation_closes_only_links_verified_by_the_retired_root(
    tmp_path: Path, cas: tuple[DevCa, DevCa]
) -> None:
    """Same trust domain, new root: overlap, move the client over, then retire the old root."""
    old_ca, _ = cas
    new_ca = init_ca(tmp_path / "ca-a-new", TrustDomain("a.test"))
    server = Site(tmp_path, old_ca, SERVER, [old_ca])
    client = Site(tmp_path, old_ca, CLIENT_A, [old_ca])
    both = old_ca.bundle_path.read_bytes() + new_ca.bundle_path.read_bytes()
    async with serving(server) as (port, nursery):
        await client.watch(nursery)
        link_old = await open_link("127.0.0.1", port, identity=client.identity, expected=SERVER)
        # 1. Both sides trust old + new roots.
        for site in (server, client):
            site.sources[0].path.write_bytes(both)
        await server.wait_generation(1)
        await client.wait_generation(1)
        assert await roundtrip(link_old, b"overlap") == b"overlap"
        # 2. The client gets an SVID from the new root; new links verify through it.
        client.ca = new_ca
        client.rotate()
        await client.wait_generation(2)
        link_new = await open_link("127.0.0.1", port, identity=client.identity, expected=SERVER)
        assert await roundtrip(link_new, b"new root") == b"new root"
        assert await roundtrip(link_old, b"old root") == b"old root"
        # 3. The server retires the old root: only the link it verified by that root closes.
        server.sources[0].path.write_bytes(new_ca.bundle_path.read_bytes())
        await server.wait_generation(2)
        await assert_closed(link_old)
        assert await roundtrip(link_new, b"survives") == b"survives"
        assert [lk.peer.spiffe_id for lk in server.identity.live_links()] == [CLIENT_A]
        await link_new.aclose()
        await link_old.aclose()
