"""The control site's fleet API over real mTLS on loopback (development CAs), in process:
who may write, compare-and-set, bounds, browsers, and clients from untrusted trust domains."""

from __future__ import annotations

import argparse
import functools
import http.client
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from foundation.spiffe_id import SpiffeId, TrustDomain
from gateway.commands import fleet_site
from gateway.config.fleet import FleetConfig
from gateway.fleet.api_tls import client_context
from gateway.fleet.document import EMPTY, FleetDocument, load_document_text
from gateway.fleet.site_api import FleetApi
from gateway.fleet.site_push import FleetAuthority
from gateway.fleet.site_store import SiteStore
from gateway.fleet.state import FleetState
from overlay.identity.ca import SvidPaths, init_ca, issue_svid
from overlay.identity.rotation import Identity
from overlay.identity.state import BundleSource, load_identity_state

TD = "hq.test"
WRITER = f"spiffe://{TD}/ops/deployer"
DOC = load_document_text(
    '[[resources]]\nkind = "policies"\nname = "all"\n[resources.spec]\nallow_sites = ["*"]\n'
)


def svid(root: Path, td: str, spiffe_id: str, name: str) -> SvidPaths:
    ca = root / "ca" / td
    if not (ca / "ca_key.pem").exists():
        init_ca(ca, TrustDomain(td))
    return issue_svid(ca, SpiffeId.parse(spiffe_id), root / name)


def client(paths: SvidPaths, url: str, bundle: Path) -> fleet_site.SiteTarget:
    args = argparse.Namespace(
        site=url,
        svid=paths.svid,
        key=paths.key,
        bundle=[f"{TD}={bundle}"],
        authority_id=f"spiffe://{TD}/isthmus/gateway/hq",
        config=None,
    )
    return fleet_site.target(args)


@asynccontextmanager
async def api(root: Path) -> AsyncIterator[tuple[str, FleetAuthority]]:
    server = svid(root, TD, f"spiffe://{TD}/isthmus/gateway/hq", "hq")
    identity = Identity(
        load_identity_state(server.svid, server.key, [BundleSource(TrustDomain(TD), server.bundle)])
    )
    state = FleetState("site", "hq", "hq")

    async def apply(doc: FleetDocument) -> None:
        state.record_applied(doc, 1.0)

    authority = FleetAuthority(
        site="hq",
        store=SiteStore(root / "store", max_bytes=4096, max_resources=100),
        initial=EMPTY,
        state=state,
        apply=apply,
        config=FleetConfig(source="site", authority_site="hq", max_document_bytes=4096),
        wall_clock=lambda: 1.0,
    )
    fleet_api = FleetApi(
        authority, identity, writers=(SpiffeId.parse(WRITER),), max_document_bytes=4096
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(fleet_api.serve, host="127.0.0.1", port=0))
        yield f"https://127.0.0.1:{port}", authority
        nursery.cancel_scope.cancel()


async def call(to: fleet_site.SiteTarget, method: str, path: str, body: Any = None) -> Any:
    return await trio.to_thread.run_sync(fleet_site.call, to, method, path, body)


async def refused(to: fleet_site.SiteTarget, method: str, path: str, body: Any = None) -> str:
    with pytest.raises(fleet_site.SiteCliError) as info:
        await call(to, method, path, body)
    return f"{info.value.code} {info.value}"


async def test_writers_write_with_compare_and_set_and_others_read(tmp_path: Path) -> None:
    async with api(tmp_path) as (url, authority):
        bundle = tmp_path / "ca" / TD / "bundle.pem"
        writer = client(svid(tmp_path, TD, WRITER, "w"), url, bundle)
        reader = client(svid(tmp_path, TD, f"spiffe://{TD}/ops/reader", "r"), url, bundle)

        body = {"document": json.loads(DOC.canonical_json()), "expect": EMPTY.version}
        answer = await call(writer, "POST", "/fleet/apply", body)
        assert answer["version"] == DOC.version and answer["previous"] == EMPTY.version
        assert answer["changes"] == [["added", "policies", "all"]]
        assert (await call(reader, "GET", "/fleet/current"))["version"] == DOC.version
        assert authority.state.version == DOC.version  # applied at the control site too

        # The same write again names a version that is no longer current: refused (409).
        assert "3 " in (why := await refused(writer, "POST", "/fleet/apply", body))
        assert "409" in why and "nothing was changed" in why
        # A reader may not write.
        why = await refused(reader, "POST", "/fleet/apply", body | {"expect": DOC.version})
        assert why.startswith("3 ") and f"spiffe://{TD}/ops/reader may not write" in why
        # An invalid document: every problem, nothing written.
        bad = {"document": {"resources": [{"kind": "nope", "name": "x"}]}, "expect": None}
        why = await refused(writer, "POST", "/fleet/apply", bad)
        assert why.startswith("2 ") and "resources[0].kind" in why


async def test_rollback_and_history(tmp_path: Path) -> None:
    async with api(tmp_path) as (url, authority):
        writer = client(svid(tmp_path, TD, WRITER, "w"), url, tmp_path / "ca" / TD / "bundle.pem")
        body = {"document": json.loads(DOC.canonical_json()), "expect": None}
        await call(writer, "POST", "/fleet/apply", body)
        empty = {"document": {"resources": []}, "expect": DOC.version}
        await call(writer, "POST", "/fleet/apply", empty)
        assert (await call(writer, "GET", "/fleet/history"))["versions"] == [
            DOC.version,
            EMPTY.version,
        ]
        back = await call(
            writer, "POST", "/fleet/rollback", {"version": DOC.version, "expect": EMPTY.version}
        )
        assert back["version"] == DOC.version and authority.document.latest == DOC
        why = await refused(writer, "POST", "/fleet/rollback", {"version": "0123456789ab"})
        assert why.startswith("2 ") and "not in the history" in why


def _raw(url: str, paths: SvidPaths, headers: dict[str, str], body: bytes) -> int:
    state = load_identity_state(
        paths.svid, paths.key, [BundleSource(TrustDomain(TD), paths.bundle)]
    )
    host, port = url.removeprefix("https://").rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=client_context(state), timeout=10)
    try:
        conn.request("POST", "/fleet/apply", body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


async def test_browsers_wrong_types_and_big_bodies_are_refused(tmp_path: Path) -> None:
    async with api(tmp_path) as (url, _):
        paths = svid(tmp_path, TD, WRITER, "w")
        json_type = {"content-type": "application/json"}

        def post(headers: dict[str, str], body: bytes) -> int:
            return _raw(url, paths, headers, body)

        origin = json_type | {"origin": "https://evil.example"}
        assert await trio.to_thread.run_sync(post, origin, b"{}") == 403
        form = {"content-type": "text/plain"}
        assert await trio.to_thread.run_sync(post, form, b"{}") == 415
        big = b'{"document": "' + b"x" * (7 * 4096) + b'"}'
        assert await trio.to_thread.run_sync(post, json_type, big) == 413


async def test_a_client_from_an_untrusted_trust_domain_is_refused(tmp_path: Path) -> None:
    async with api(tmp_path) as (url, authority):
        # Same path as the writer, but issued by another trust domain's CA the server does
        # not trust: the handshake fails, nothing is written.
        stranger = svid(tmp_path, "other.test", "spiffe://other.test/ops/deployer", "s")
        args = argparse.Namespace(
            site=url,
            svid=stranger.svid,
            key=stranger.key,
            bundle=[f"{TD}={tmp_path / 'ca' / TD / 'bundle.pem'}"],
            authority_id=None,
            config=None,
        )
        body = {"document": json.loads(DOC.canonical_json()), "expect": None}
        why = await refused(fleet_site.target(args), "POST", "/fleet/apply", body)
        assert why.startswith("3 ") and "refused the connection" in why
        assert authority.document.latest == EMPTY
