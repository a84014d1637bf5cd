"""``isthmus config check``: every problem in one run, identity files opened, warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.spiffe_id import SpiffeId, TrustDomain
from gateway.cli import main
from gateway.config.check import check_file
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from overlay.identity.ca import init_ca, issue_svid
from tests.gateway.config.config_kit import GOOD, write_identity

EXPORT = '\n[[exports]]\nservice = "*"\npeers = ["nobody"]\n'


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as info:
        load_text(text, base_dir=Path("/etc/isthmus"), filename="gw.toml")
    return {p.path: p.message for p in info.value.problems}


def test_cross_field_problems_come_with_field_problems() -> None:
    text = GOOD.replace("port = 8080", "port = 99999") + EXPORT
    text += (
        '\n[[peers]]\nname = "aws-east"\naddress = "127.0.3.1"\nport = 0\n'
        'spiffe_id = "spiffe://x.test/gw"\n'
    )
    found = _problems(text)
    assert "sources[0].endpoints[0].port" in found  # a field problem ...
    assert found["exports[0].peers[0]"] == "no peer is named 'nobody'"  # ... and cross-field
    assert "peers[1].port" in found  # a field of an item ...
    assert "this site's own name" in found["peers[1].name"]  # ... and its cross-field rule


def test_a_rule_needing_an_undecoded_value_is_skipped_not_misled() -> None:
    # The east-west listener's kind is wrong: "peers need an east-west listener" would be a
    # false report on top of the real one.
    text = GOOD.replace('kind = "east-west"', 'kind = "eastwest"') + EXPORT
    found = _problems(text)
    assert set(found) == {"listeners[0].kind", "exports[0].peers[0]"}, found


def _write(directory: Path, text: str) -> Path:
    path = directory / "gw.toml"
    path.write_text(text)
    return path


def test_identity_files_must_exist_and_parse(tmp_path: Path) -> None:
    write_identity(tmp_path)
    (tmp_path / "svid.pem").unlink()
    (tmp_path / "svid_key.pem").write_text("not a key")
    text = GOOD.replace('path = "bundle.pem"', 'path = "missing-bundle.pem"')
    text = text.replace("port = 8080", "port = -1")  # a field problem in the same run
    report = check_file(_write(tmp_path, text))
    found = {p.path: p.message for p in report.problems}
    assert set(found) == {
        "identity.svid",
        "identity.key",
        "identity.bundles[0].path",
        "sources[0].endpoints[0].port",
    }, found
    assert found["identity.svid"].startswith(f"{tmp_path / 'svid.pem'}: cannot read")
    assert found["identity.key"].startswith(f"{tmp_path / 'svid_key.pem'}: ")
    assert "not an unencrypted PEM private key" in found["identity.key"]
    assert found["identity.bundles[0].path"].startswith(f"{tmp_path / 'missing-bundle.pem'}")
    assert all(p.line for p in report.problems), report.problems


def test_identity_key_must_match_and_bundle_must_parse(tmp_path: Path) -> None:
    write_identity(tmp_path)
    other = tmp_path / "other"
    init_ca(other / "ca", TrustDomain("aws-east.isthmus.test"))
    issue_svid(other / "ca", SpiffeId.parse("spiffe://aws-east.isthmus.test/gw"), other)
    (tmp_path / "svid_key.pem").write_bytes((other / "svid_key.pem").read_bytes())
    (tmp_path / "bundle.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    report = check_file(_write(tmp_path, GOOD))
    found = {p.path: p.message for p in report.problems}
    assert set(found) == {"identity.key", "identity.bundles[0].path"}, found
    assert "does not match the SVID's leaf certificate" in found["identity.key"]


POLICIES = """
[[policies]]
service = "api"
allow_sites = ["gcp-west", "gcp-wets", "*"]
allow_ids = [
  "spiffe://gcp-west.isthmus.test/ns/web/sa/web",
  "spiffe://aws-east.isthmus.test/ns/web/sa/web",
]
"""


def test_warnings_are_printed_and_do_not_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_identity(tmp_path)
    text = GOOD.replace(
        'bundles = [{ trust_domain = "aws-east.isthmus.test", path = "bundle.pem" }]',
        'bundles = [\n  { trust_domain = "aws-east.isthmus.test", path = "bundle.pem" },\n]',
    )
    path = _write(tmp_path, text + POLICIES)
    report = check_file(path)
    assert report.problems == ()
    warnings = {p.path: p.message for p in report.warnings}
    assert set(warnings) == {"policies[0].allow_sites[1]", "policies[0].allow_ids[0]"}, warnings
    assert "no peer is named 'gcp-wets'" in warnings["policies[0].allow_sites[1]"]
    assert "gcp-west.isthmus.test is not configured" in warnings["policies[0].allow_ids[0]"]
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "ok (2 warnings)"
    assert f"{path}:" in out.err and "policies[0].allow_sites[1]: warning: no peer" in out.err


def test_warnings_come_with_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_identity(tmp_path)
    path = _write(tmp_path, GOOD.replace("port = 8080", "port = 0") + POLICIES)
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "warning: no peer is named 'gcp-wets'" in err
    assert "sources[0].endpoints[0].port: must be >= 1" in err and "1 problem found" in err
