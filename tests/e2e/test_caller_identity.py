"""Caller identity across real gateways, and the destination's allow list (issue 5).

Two gateway processes, sites ``a`` and ``b``, each with its own trust domain and development
CA, linked over mTLS.  ``b`` runs the demo whoami service as ``api`` and exports it, with one
policy: ``api`` may be called from other sites only by ``spiffe://a.e2e.test/ns/default/sa/
allowed`` (no ``allow_sites``, so site ``a`` as such is denied).  ``a`` has its plaintext
``http`` listener and a second one with ``tls = true``.

Callers are plain stdlib/h2 clients.  A workload that presents an SVID to ``a``'s TLS listener
is authenticated there; ``a`` vouches for it to ``b`` in ``isthmus-caller-id`` over the
authenticated link, and ``b`` decides.  Everything else -- no certificate, another workload's
certificate, a forged ``isthmus-caller-id`` header, a certificate from a CA nobody trusts or
from a trusted CA of the wrong trust domain -- must not reach ``api``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from foundation.spiffe_id import SpiffeId, TrustDomain
from gateway.demo.topology import DemoService
from overlay.h2.stream import ConnectionGone
from overlay.identity.ca import init_ca, issue_svid, load_ca
from tests.e2e.clients import Reply, h1_request, h2_request, tls_client_context
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of
from tests.overlay.identity.certfactory import Ca, key_pem, make_leaf, pem

HTTP_PORT = 15080  # the topology's plaintext http listener
HTTPS_PORT = 15081  # the tls = true http listener added to site a
API_PORT = 18080
API = "api.default.isthmus"
TD_A = "a.e2e.test"
ALLOWED = f"spiffe://{TD_A}/ns/default/sa/allowed"
OTHER = f"spiffe://{TD_A}/ns/default/sa/other"
CALL_TIMEOUT_S = 10.0


def _patch(a_address: str) -> Callable[[str, str], str]:
    """``a``: add a TLS http listener.  ``b``: only ``sa/allowed`` of ``a`` may call api."""

    def patch(site: str, text: str) -> str:
        if site == "a":
            return text + (
                f'\n[[listeners]]\nname = "https"\nkind = "http"\naddress = "{a_address}"\n'
                f"port = {HTTPS_PORT}\ntls = true\n"
            )
        everyone = '[[policies]]\nallow_sites = ["*"]'
        assert everyone in text
        only = f'[[policies]]\nservice = "api"\nnamespace = "default"\nallow_ids = ["{ALLOWED}"]'
        return text.replace(everyone, only)

    return patch


def _svid(ca_dir: Path, spiffe_id: str, out: Path) -> tuple[Path, Path]:
    paths = issue_svid(ca_dir, SpiffeId.parse(spiffe_id), out)
    return paths.svid, paths.key


def _cross_domain_svid(ov: Overlay, out: Path) -> tuple[Path, Path]:
    """A certificate from b's CA (which a trusts, for b) that claims a's ``sa/allowed``."""
    dev = load_ca(ov.root / "ca" / "b.e2e.test")
    chain, key = make_leaf(Ca(dev.cert, dev.key), uris=[ALLOWED])
    out.mkdir(parents=True)
    (out / "svid.pem").write_bytes(pem(chain))
    (out / "svid_key.pem").write_bytes(key_pem(key))
    return out / "svid.pem", out / "svid_key.pem"


Call = Callable[[], Awaitable[Reply]]
#: How a refused TLS handshake shows to a client (TLS 1.3: often only on its first read).
CONNECTION_BROKE = (OSError, trio.BrokenResourceError, ConnectionGone)


async def _outcome(call: Call) -> str:
    """``"<status> <body>"``, or ``"no response: <error>"`` when the connection broke (any
    other error, or no answer within the timeout, fails the test)."""
    try:
        with trio.fail_after(CALL_TIMEOUT_S):
            reply = await call()
    except BaseExceptionGroup as group:  # the h2 client's nursery wraps what broke
        broken, rest = group.split(CONNECTION_BROKE)
        if rest is not None or broken is None:
            raise
        return f"no response: {broken.exceptions[0]!r}"
    except CONNECTION_BROKE as exc:
        return f"no response: {exc!r}"
    return f"{reply.status} {reply.body.decode('utf-8', 'replace').strip()}"


async def _api_listening(ov: Overlay) -> None:
    """b's api process answers (asked directly, not through a gateway)."""
    b = str(ov.built["b"].site.address)
    with trio.fail_after(20):
        while True:
            try:
                if (
                    await h1_request(b, API_PORT, authority=API, request_timeout_s=2)
                ).status == 200:
                    return
            except OSError:
                pass
            await trio.sleep(0.1)


async def test_only_the_allowed_caller_identity_reaches_the_other_site(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"], {"b": (DemoService("api", "http", API_PORT),)})
    patch = _patch(str(topology.sites[0].address))
    async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
        await ov.wait("a", "/routes", lambda d: routes_of(d, API) == ["b"])
        await _api_listening(ov)
        a = str(ov.built["a"].site.address)
        ca_a = ov.root / "ca" / TD_A
        bundle_a = ca_a / "bundle.pem"  # what a's SVID is issued by
        allowed = _svid(ca_a, ALLOWED, tmp_path / "callers" / "allowed")
        other = _svid(ca_a, OTHER, tmp_path / "callers" / "other")
        rogue_ca = tmp_path / "callers" / "rogue-ca"  # claims a's trust domain; nobody trusts it
        init_ca(rogue_ca, TrustDomain(TD_A))
        rogue = _svid(rogue_ca, ALLOWED, tmp_path / "callers" / "rogue")
        cross = _cross_domain_svid(ov, tmp_path / "callers" / "cross")
        forged = {"isthmus-caller-id": ALLOWED}
        forged_all = {**forged, "isthmus-caller-site": "b", "isthmus-deadline-ms": "99999999"}

        def h1_tls(cert: tuple[Path, Path] | None, headers: dict[str, str] | None = None) -> Call:
            svid, key = cert or (None, None)
            ctx = tls_client_context(bundle_a, alpn=["http/1.1"], svid=svid, key=key)
            return lambda: h1_request(
                a, HTTPS_PORT, authority=API, path="/who", headers=headers, tls=ctx
            )

        def h2_tls(cert: tuple[Path, Path] | None, headers: dict[str, str] | None = None) -> Call:
            svid, key = cert or (None, None)
            ctx = tls_client_context(bundle_a, alpn=["h2"], svid=svid, key=key)
            fields = list((headers or {}).items())
            return lambda: h2_request(
                a, HTTPS_PORT, authority=API, path="/who", headers=fields, tls=ctx
            )

        cases: dict[str, Call] = {
            "allowed h1 tls": h1_tls(allowed),
            "allowed h2 tls": h2_tls(allowed),
            "other h1 tls": h1_tls(other),
            "other h2 tls": h2_tls(other),
            "other h1 tls + forged header": h1_tls(other, forged),
            "other h2 tls + forged headers": h2_tls(other, forged_all),
            "anonymous h1 plaintext": lambda: h1_request(a, HTTP_PORT, authority=API),
            "anonymous h2c": lambda: h2_request(a, HTTP_PORT, authority=API),
            "anonymous h1 tls": h1_tls(None),
            "anonymous h2 tls": h2_tls(None),
            "forged header h1 plaintext": lambda: h1_request(
                a, HTTP_PORT, authority=API, headers=forged
            ),
            "forged header h2c": lambda: h2_request(
                a, HTTP_PORT, authority=API, headers=list(forged.items())
            ),
            "forged header h1 tls": h1_tls(None, forged),
            "forged headers h1 plaintext": lambda: h1_request(
                a, HTTP_PORT, authority=API, headers=forged_all
            ),
            "unknown CA h1 tls": h1_tls(rogue),
            "unknown CA h2 tls": h2_tls(rogue),
            "b's CA claiming a's ID h1 tls": h1_tls(cross),
            "b's CA claiming a's ID h2 tls": h2_tls(cross),
        }
        got = {name: await _outcome(call) for name, call in cases.items()}

        # The allowed workload reaches api in b, and b's endpoint sees no overlay headers.
        for name in ("allowed h1 tls", "allowed h2 tls"):
            assert got[name].startswith("200 "), (name, got)
        reply = await h1_tls(allowed)()
        doc: dict[str, Any] = reply.json()
        assert doc["site"] == "b" and doc["path"] == "/who"
        assert not [n for n, _ in doc["headers"] if n.lower().startswith("isthmus-")], doc

        # Authenticated, but not on the list: 403 from b, naming who and what.
        for name in (
            "other h1 tls",
            "other h2 tls",
            "other h1 tls + forged header",
            "other h2 tls + forged headers",
        ):
            assert got[name].startswith("403 "), (name, got)
            assert OTHER in got[name] and "may not call api.default" in got[name], (name, got)
        # No identity at all (plaintext, TLS without a certificate, forged header): 403 from
        # b for site a as such -- the forged header was stripped at a, not believed.
        for name in (
            "anonymous h1 plaintext",
            "anonymous h2c",
            "anonymous h1 tls",
            "anonymous h2 tls",
            "forged header h1 plaintext",
            "forged header h2c",
            "forged header h1 tls",
            "forged headers h1 plaintext",
        ):
            assert got[name].startswith("403 "), (name, got)
            assert "site 'a' may not call api.default" in got[name], (name, got)
            assert "spiffe://" not in got[name], (name, got)
        # A certificate that does not verify: the TLS listener closes the connection before
        # any HTTP answer (OpenSSL's chain check, or the per-trust-domain SPIFFE check).
        for name in (
            "unknown CA h1 tls",
            "unknown CA h2 tls",
            "b's CA claiming a's ID h1 tls",
            "b's CA claiming a's ID h2 tls",
        ):
            assert got[name].startswith("no response: "), (name, got)

        # The listener still serves after all those rejections.
        assert (await h2_tls(allowed)()).status == 200
        print("\n".join(f"{name:32} {outcome[:110]}" for name, outcome in got.items()))


# -- what the endpoint learns: x-isthmus-caller-id / -caller-site / -deadline-ms -------------

API_H2 = "apih2.default.isthmus"
QUIET = "quiet.default.isthmus"
ROUTE_TIMEOUT_MS = 15_000
FORGED_WORKLOAD = {
    "x-isthmus-caller-id": "spiffe://b.e2e.test/ns/default/sa/admin",
    "x-isthmus-caller-site": "b",
    "x-isthmus-deadline-ms": "99999999",
}


def _workload_patch(a_address: str, b_address: str) -> Callable[[str, str], str]:
    """TLS http listeners on both sites; b: apih2 open to site a, quiet without the headers."""

    def patch(site: str, text: str) -> str:
        address = a_address if site == "a" else b_address
        text += (
            f'\n[[listeners]]\nname = "https"\nkind = "http"\naddress = "{address}"\n'
            f"port = {HTTPS_PORT}\ntls = true\n"
        )
        if site == "b":
            everyone = '[[policies]]\nallow_sites = ["*"]'
            assert everyone in text
            text = text.replace(
                everyone,
                f'[[policies]]\nservice = "api"\nallow_ids = ["{ALLOWED}"]\n\n'
                '[[policies]]\nservice = "apih2"\nallow_sites = ["a"]\n\n'
                '[[caller_headers]]\nservice = "quiet"\nenabled = false',
            )
        return text

    return patch


def _workload_headers(reply: Reply) -> dict[str, list[str]]:
    """The ``x-isthmus-*`` headers the whoami endpoint received, by name."""
    assert reply.status == 200, reply
    doc: dict[str, Any] = reply.json()
    found: dict[str, list[str]] = {}
    for name, value in doc["headers"]:
        if name.lower().startswith(("x-isthmus-", "isthmus-")):
            found.setdefault(name.lower(), []).append(value)
    return found


def _deadline_ok(found: dict[str, list[str]]) -> bool:
    [value] = found.pop("x-isthmus-deadline-ms")
    return 0 < int(value) <= ROUTE_TIMEOUT_MS


async def test_endpoints_see_the_caller_set_by_the_last_gateway_only(tmp_path: Path) -> None:
    services: dict[str, tuple[DemoService, ...]] = {
        "b": (
            DemoService("api", "http", API_PORT),
            DemoService("apih2", "http2", API_PORT + 1),
            DemoService("quiet", "http", API_PORT + 2),
        )
    }
    topology = make_topology(["a", "b"], services)
    a, b = (str(s.address) for s in topology.sites)
    async with open_overlay(tmp_path, topology, patch=_workload_patch(a, b), services=True) as ov:
        await ov.wait(
            "a", "/routes", lambda d: all(routes_of(d, x) == ["b"] for x in (API, API_H2, QUIET))
        )
        await _api_listening(ov)
        allowed = _svid(ov.root / "ca" / TD_A, ALLOWED, tmp_path / "callers" / "allowed")
        b_id = "spiffe://b.e2e.test/ns/default/sa/local"
        local = _svid(ov.root / "ca" / "b.e2e.test", b_id, tmp_path / "callers" / "local")

        def h1_tls(
            host: str, bundle: Path, cert: tuple[Path, Path], authority: str
        ) -> Callable[[dict[str, str] | None], Awaitable[Reply]]:
            ctx = tls_client_context(bundle, alpn=["http/1.1"], svid=cert[0], key=cert[1])
            return lambda headers: h1_request(
                host, HTTPS_PORT, authority=authority, path="/who", headers=headers, tls=ctx
            )

        bundle_a = ov.root / "ca" / TD_A / "bundle.pem"
        bundle_b = ov.root / "ca" / "b.e2e.test" / "bundle.pem"
        with trio.fail_after(60):
            # Across two gateways, HTTP/1.1 caller -> h1 endpoint, with and without forgeries.
            cross = h1_tls(a, bundle_a, allowed, API)
            for headers in (None, FORGED_WORKLOAD):
                found = _workload_headers(await cross(headers))
                assert _deadline_ok(found), found
                assert found == {
                    "x-isthmus-caller-id": [ALLOWED],
                    "x-isthmus-caller-site": ["a"],
                }, (headers, found)
            # Across two gateways, h2 caller -> HTTP/2 endpoint, anonymous, forged.
            h2_ctx = tls_client_context(bundle_a, alpn=["h2"])
            reply = await h2_request(
                a,
                HTTPS_PORT,
                authority=API_H2,
                path="/who",
                headers=list(FORGED_WORKLOAD.items()),
                tls=h2_ctx,
            )
            found = _workload_headers(reply)
            assert _deadline_ok(found), found
            assert found == {"x-isthmus-caller-site": ["a"]}, found  # anonymous: no caller-id
            # Same site: b's own gateway is the last (and only) one.
            same = h1_tls(b, bundle_b, local, API)
            for headers in (None, FORGED_WORKLOAD):
                found = _workload_headers(await same(headers))
                assert _deadline_ok(found), found
                assert found == {
                    "x-isthmus-caller-id": [b_id],
                    "x-isthmus-caller-site": ["b"],
                }, (headers, found)
            plain = await h1_request(
                b, HTTP_PORT, authority=API, path="/who", headers=FORGED_WORKLOAD
            )
            found = _workload_headers(plain)
            assert _deadline_ok(found), found
            assert found == {"x-isthmus-caller-site": ["b"]}, found
            # Turned off for quiet: nothing, and forged headers are still removed.
            for call in (
                h1_tls(b, bundle_b, local, QUIET)(FORGED_WORKLOAD),
                h1_request(b, HTTP_PORT, authority=QUIET, path="/who", headers=FORGED_WORKLOAD),
            ):
                assert _workload_headers(await call) == {}
