"""The config loader: every problem reported, each with its exact path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_file, load_text
from tests.gateway.config.config_kit import (
    GOOD,
    write_identity,
)


def _problems(text: str) -> dict[str, tuple[str, int | None]]:
    with pytest.raises(ConfigInvalid) as info:
        load_text(text, base_dir=Path("/etc/isthmus"), filename="gw.toml")
    return {p.path: (p.message, p.line) for p in info.value.problems}


def test_good_config_decodes_into_frozen_values() -> None:
    config = load_text(GOOD, base_dir=Path("/etc/isthmus"))
    assert config.site.name == "aws-east"
    assert str(config.peers[0].spiffe_id) == (
        "spiffe://gcp-west.isthmus.test/isthmus/gateway/gcp-west"
    )
    assert config.identity.svid == Path("/etc/isthmus/svid.pem")
    assert config.limits.max_headers == 100
    with pytest.raises(AttributeError):
        config.site.name = "other"  # type: ignore[misc]


def test_every_problem_is_reported_with_path_and_line() -> None:
    bad = (
        GOOD.replace("port = 15443\nspiffe_id", "port = 70000\nspiffe_id")
        .replace("spiffe://gcp-west.isthmus.test/isthmus", "spiffe://GCP-west.isthmus.test/isthmus")
        .replace('namespace = "payments"', 'namespace = "payments"\ncolor = "red"')
    )
    problems = _problems(bad)
    assert set(problems) == {
        "peers[0].port",
        "peers[0].spiffe_id",
        "sources[0].endpoints[0].color",
    }
    assert "must be <= 65535" in problems["peers[0].port"][0]
    assert "lowercase" in problems["peers[0].spiffe_id"][0]
    lines = bad.splitlines()
    for _path, (_msg, line) in problems.items():
        assert line is not None
    assert lines[problems["peers[0].port"][1] - 1].startswith("port = 70000")  # type: ignore[operator]
    assert lines[problems["sources[0].endpoints[0].color"][1] - 1].startswith("color")  # type: ignore[operator]


def test_duplicate_names_and_missing_fields() -> None:
    bad = (
        GOOD
        + """
[[peers]]
name = "gcp-west"
address = "127.0.3.1"
port = 15443
spiffe_id = "spiffe://x.test/gw"

[[peers]]
name = "azure"
port = 1
"""
    )
    problems = _problems(bad)
    assert "duplicate name 'gcp-west'" in problems["peers[1].name"][0]
    assert problems["peers[2].address"][0] == "is required"
    assert problems["peers[2].spiffe_id"][0] == "is required"


@pytest.mark.parametrize(
    ("replace", "path", "fragment"),
    [
        ('kind = "east-west"', "listeners[0].kind", "must be one of"),
        ('address = "127.0.1.1"', "listeners[0].address", "not a valid IP address"),
        ('name = "aws-east"', "site.name", "not a DNS label"),
        ('kind = "static"', "sources[0].kind", "must be one of"),
        ("port = 8080", "sources[0].endpoints[0].port", "must be an integer"),
    ],
)
def test_wrong_values_name_their_field(replace: str, path: str, fragment: str) -> None:
    broken = {
        'kind = "east-west"': 'kind = "tcp-ish"',
        'address = "127.0.1.1"': 'address = "127.0.1.300"',
        'name = "aws-east"': 'name = "AWS_East"',
        'kind = "static"': 'kind = "zookeeper"',
        "port = 8080": 'port = "8080"',
    }[replace]
    problems = _problems(GOOD.replace(replace, broken, 1))
    assert path in problems, problems
    assert fragment in problems[path][0]


def test_toml_syntax_error_has_a_line() -> None:
    problems = _problems(GOOD + "\n[peers\n")
    ((message, line),) = problems.values()
    assert "TOML syntax" in message
    assert line == GOOD.count("\n") + 2


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_identity(tmp_path)
    good = tmp_path / "gw.toml"
    good.write_text(GOOD)
    assert main(["config", "check", str(good)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("port = 8080", "port = 0"))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "sources[0].endpoints[0].port: must be >= 1" in err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2


def test_load_file_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigInvalid, match="not UTF-8"):
        load_file(path)


def test_caller_headers_settings() -> None:
    config = load_text(GOOD, base_dir=Path("/etc/isthmus"))
    assert config.site.caller_headers is True and config.caller_headers == ()
    text = GOOD.replace(
        'trust_domain = "aws-east.isthmus.test"\n',
        'trust_domain = "aws-east.isthmus.test"\ncaller_headers = false\n',
        1,
    )
    text += '\n[[caller_headers]]\nservice = "api"\nnamespace = "payments"\nenabled = true\n'
    config = load_text(text, base_dir=Path("/etc/isthmus"))
    assert config.site.caller_headers is False
    assert config.caller_headers[0].service == "api" and config.caller_headers[0].enabled
    bad = GOOD + '\n[[caller_headers]]\nservice = "API"\nenabled = "yes"\n'
    assert {"caller_headers[0].enabled", "caller_headers[0].service"} <= set(_problems(bad))


def test_backoff_floor_above_the_cap_is_rejected_with_its_path() -> None:
    problems = _problems(GOOD + "\n[peering]\nbackoff_cap_s = 5.0\nbackoff_floor_s = 6.0\n")
    assert problems["peering.backoff_floor_s"][0] == "must not exceed backoff_cap_s"
    good = load_text(
        GOOD + "\n[peering]\nbackoff_floor_s = 1.5\n", base_dir=Path("/etc/isthmus"), filename="g"
    )
    assert good.peering.backoff_floor_s == 1.5


def test_stream_and_send_timeouts_decode_with_defaults_and_bounds() -> None:
    limits = load_text(GOOD, base_dir=Path("/etc/isthmus")).limits
    assert (limits.route_timeout_s, limits.stream_idle_timeout_s) == (15.0, 300.0)
    assert (limits.max_stream_duration_s, limits.send_timeout_s) == (None, 30.0)
    set_ = GOOD + "\n[limits]\nmax_stream_duration_s = 3600\nsend_timeout_s = 5.5\n"
    limits = load_text(set_, base_dir=Path("/etc/isthmus")).limits
    assert (limits.max_stream_duration_s, limits.send_timeout_s) == (3600, 5.5)
    bad = GOOD + "\n[limits]\nsend_timeout_s = 0\nstream_idle_timeout_s = -1\n"
    problems = _problems(bad)
    assert "limits.send_timeout_s" in problems and "limits.stream_idle_timeout_s" in problems


def test_tunnel_windows_and_buffer_budget_decode_with_defaults_and_bounds() -> None:
    limits = load_text(GOOD, base_dir=Path("/etc/isthmus")).limits
    assert (limits.link_stream_window, limits.link_stream_window_max) == (64 * 1024, 1 << 20)
    assert limits.buffer_budget == 256 * 1024 * 1024
    set_ = GOOD + "\n[limits]\nlink_stream_window_max = 4194304\nbuffer_budget = 0\n"
    limits = load_text(set_, base_dir=Path("/etc/isthmus")).limits
    assert (limits.link_stream_window_max, limits.buffer_budget) == (4 << 20, 0)
    bad = GOOD + "\n[limits]\nlink_stream_window = 1048576\nlink_stream_window_max = 65536\n"
    assert "limits.link_stream_window_max" in _problems(bad)
    assert "limits.buffer_budget" in _problems(GOOD + "\n[limits]\nbuffer_budget = -1\n")


def test_links_per_peer_decode_with_a_default_and_bounds() -> None:
    assert load_text(GOOD, base_dir=Path("/etc/isthmus")).limits.link_max_per_peer == 4
    one = load_text(GOOD + "\n[limits]\nlink_max_per_peer = 1\n", base_dir=Path("/etc/isthmus"))
    assert one.limits.link_max_per_peer == 1
    for bad in ("0", "65", '"two"'):
        problems = _problems(GOOD + f"\n[limits]\nlink_max_per_peer = {bad}\n")
        assert "limits.link_max_per_peer" in problems, (bad, problems)


def test_caller_h2_engine_decodes_and_rejects_unknown_engines() -> None:
    """``[limits] caller_h2_engine``: the HTTP/2 engine of callers' connections."""
    base = Path("/etc/isthmus")
    assert load_text(GOOD, base_dir=base).limits.caller_h2_engine == "lean"
    for name in ("lean", "h2"):
        text = GOOD + f'\n[limits]\ncaller_h2_engine = "{name}"\n'
        assert load_text(text, base_dir=base).limits.caller_h2_engine == name
    problems = _problems(GOOD + '\n[limits]\ncaller_h2_engine = "nghttp2"\n')
    assert "must be one of" in problems["limits.caller_h2_engine"][0]
