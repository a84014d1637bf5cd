"""The development CA: ``isthmus ca init|issue`` produce files that a real link accepts."""

from __future__ import annotations

import datetime as dt
import stat
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography import x509

from foundation.spiffe_id import SpiffeId, TrustDomain
from gateway.cli import main
from overlay.identity.bundle import load_bundle
from overlay.identity.ca import CaError, init_ca, issue_svid, parse_ttl
from overlay.identity.rotation import Identity
from overlay.identity.state import BundleSource, load_identity_state
from overlay.identity.svid import check_leaf
from overlay.link.accept import serve_links
from overlay.link.dial import open_link
from overlay.link.link import Link


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cli_init_and_issue_default_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["ca", "init", "--trust-domain", "east.test"]) == 0
    ca_dir = tmp_path / ".isthmus" / "ca" / "east.test"
    assert {p.name for p in ca_dir.iterdir()} == {
        "ca.pem",
        "ca_key.pem",
        "bundle.pem",
        "bundle.json",
    }
    assert _mode(ca_dir / "ca_key.pem") == 0o600
    assert main(["ca", "issue", "--spiffe-id", "spiffe://east.test/gw/one", "--ttl", "2h"]) == 0
    out = ca_dir / "svids" / "gw_one"
    assert _mode(out / "svid_key.pem") == 0o600
    leaf = x509.load_pem_x509_certificate((out / "svid.pem").read_bytes())
    assert check_leaf(leaf, now=dt.datetime.now(dt.UTC)) == SpiffeId.parse(
        "spiffe://east.test/gw/one"
    )
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(hours=2) <= lifetime <= dt.timedelta(hours=2, minutes=2)
    assert "svid.pem" in capsys.readouterr().out
    # The JSON and PEM bundles describe the same anchor.
    td = TrustDomain("east.test")
    assert (
        load_bundle(td, ca_dir / "bundle.json").anchors
        == load_bundle(td, out / "bundle.pem").anchors
    )


def test_cli_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["ca", "init", "--trust-domain", "Bad.Domain"]) == 2
    assert main(["ca", "issue", "--spiffe-id", "spiffe://nowhere.test/x"]) == 2
    assert "ca init" in capsys.readouterr().err
    assert main(["ca", "init", "--trust-domain", "t.test", "--dir", "cadir"]) == 0
    assert main(["ca", "init", "--trust-domain", "t.test", "--dir", "cadir"]) == 2  # no clobber
    args = ["ca", "issue", "--dir", "cadir", "--out", "o"]
    assert main([*args, "--spiffe-id", "spiffe://t.test"]) == 2  # a leaf needs a path
    assert main([*args, "--spiffe-id", "spiffe://other.test/x"]) == 2  # wrong trust domain
    assert main([*args, "--spiffe-id", "spiffe://t.test/x", "--ttl", "90d"]) == 2
    assert main([*args, "--spiffe-id", "spiffe://t.test/x", "--ttl", "soon"]) == 2
    assert not (tmp_path / "o").exists()


def test_parse_ttl() -> None:
    assert parse_ttl("90s") == dt.timedelta(seconds=90)
    assert parse_ttl("24h") == dt.timedelta(hours=24)
    assert parse_ttl("7d") == dt.timedelta(days=7)
    for bad in ("0s", "31d", "1w", "h", "-5m", ""):
        with pytest.raises(CaError):
            parse_ttl(bad)


async def test_cli_issued_files_make_a_working_link(tmp_path: Path) -> None:
    """Two sites, two dev CAs, each trusting both bundles (PEM on one side, JSON on the other)."""
    for td in ("east.test", "west.test"):
        assert main(["ca", "init", "--trust-domain", td, "--dir", str(tmp_path / td)]) == 0
    for sid, td in (("spiffe://east.test/gw", "east.test"), ("spiffe://west.test/gw", "west.test")):
        args = ["ca", "issue", "--spiffe-id", sid, "--dir", str(tmp_path / td)]
        assert main([*args, "--out", str(tmp_path / "out" / td), "--ttl", "1h"]) == 0

    def ident(td: str, fmt: str) -> Identity:
        out = tmp_path / "out" / td
        sources = [
            BundleSource(TrustDomain(t), tmp_path / t / f"bundle.{fmt}")
            for t in ("east.test", "west.test")
        ]
        return Identity(load_identity_state(out / "svid.pem", out / "svid_key.pem", sources))

    east, west = ident("east.test", "pem"), ident("west.test", "json")
    seen: list[SpiffeId] = []

    async def handler(link: Link) -> None:
        seen.append(link.peer_id)
        await link.stream.send_all(await link.stream.receive_some(100))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                serve_links,
                handler,
                host="127.0.0.1",
                port=0,
                identity=east,
                authorize=lambda sid: sid == SpiffeId.parse("spiffe://west.test/gw"),
            )
        )
        port = listeners[0].socket.getsockname()[1]
        expected = SpiffeId.parse("spiffe://east.test/gw")
        async with await open_link(
            "127.0.0.1", port, identity=west, expected=expected, timeout=5
        ) as link:
            await link.stream.send_all(b"over the isthmus")
            with trio.fail_after(5):
                assert await link.stream.receive_some(100) == b"over the isthmus"
        nursery.cancel_scope.cancel()
    assert seen == [SpiffeId.parse("spiffe://west.test/gw")]


def test_api_issue_rejects_other_trust_domain(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", TrustDomain("a.test"))
    with pytest.raises(CaError, match="not in this CA"):
        ca.issue(SpiffeId.parse("spiffe://b.test/x"))
    paths = issue_svid(ca.directory, SpiffeId.parse("spiffe://a.test/x"), tmp_path / "o")
    assert paths.bundle.read_bytes() == (ca.directory / "ca.pem").read_bytes()
    assert not list((tmp_path / "o").glob(".*tmp*"))  # atomic writes leave no temp files


def test_cli_issue_host_adds_ip_and_dns_sans_next_to_the_spiffe_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--host`` lets callers that check host names (curl) verify a gateway's TLS listener;
    the certificate stays a valid X509-SVID (one URI SAN)."""
    monkeypatch.chdir(tmp_path)
    assert main(["ca", "init", "--trust-domain", "east.test", "--dir", "ca"]) == 0
    args = ["ca", "issue", "--dir", "ca", "--spiffe-id", "spiffe://east.test/gw/one"]
    assert main([*args, "--host", "127.0.30.1", "--host", "GW.East.example", "--out", "o"]) == 0
    leaf = x509.load_pem_x509_certificate((tmp_path / "o" / "svid.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.30.1"]
    assert san.get_values_for_type(x509.DNSName) == ["gw.east.example"]
    assert check_leaf(leaf, now=dt.datetime.now(dt.UTC)) == SpiffeId.parse(
        "spiffe://east.test/gw/one"
    )
    assert main([*args, "--host", "not a host!", "--out", "bad"]) == 2
    assert not (tmp_path / "bad").exists()
