"""``[debug]``: decoded, validated with the field path, and who it allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundation.spiffe_id import SpiffeId
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from tests.gateway.config.config_kit import GOOD

OPS = "spiffe://aws-east.isthmus.test/ns/ops/sa/oncall"


def test_debug_allow_lists_decode_and_decide() -> None:
    text = GOOD + f'\n[debug]\nallow_ids = ["{OPS}"]\nallow_cidrs = ["10.1.0.0/16", "::1/128"]\n'
    debug = load_text(text, base_dir=Path("/etc/isthmus")).debug
    assert debug.allows(SpiffeId.parse(OPS), None)
    assert debug.allows(None, "10.1.2.3") and debug.allows(None, "::1")
    assert not debug.allows(None, "10.2.0.1")
    assert not debug.allows(SpiffeId.parse("spiffe://aws-east.isthmus.test/x"), "127.0.0.1")
    assert not debug.allows(None, None)


def test_default_allows_nobody() -> None:
    debug = load_text(GOOD, base_dir=Path("/etc/isthmus")).debug
    assert not debug.allows(None, "127.0.0.1")


def test_a_bad_network_names_its_field() -> None:
    text = GOOD + '\n[debug]\nallow_cidrs = ["10.1.2.3/16"]\n'
    with pytest.raises(ConfigInvalid) as info:
        load_text(text, base_dir=Path("/etc/isthmus"), filename="gw.toml")
    [problem] = info.value.problems
    assert problem.path == "debug.allow_cidrs[0]" and "host bits" in problem.message


def test_explain_peers_decode_default_to_nobody_and_name_a_bad_site() -> None:
    assert load_text(GOOD, base_dir=Path("/etc/isthmus")).debug.explain_peers == ()
    text = GOOD + '\n[debug]\nexplain_peers = ["gcp-west", "*"]\n'
    assert load_text(text, base_dir=Path("/etc/isthmus")).debug.explain_peers == ("gcp-west", "*")
    with pytest.raises(ConfigInvalid) as info:
        load_text(GOOD + '\n[debug]\nexplain_peers = ["Bad_Site"]\n', base_dir=Path("/e"))
    [problem] = info.value.problems
    assert problem.path == "debug.explain_peers" and "Bad_Site" in problem.message
