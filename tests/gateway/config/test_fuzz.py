"""Property tests: the config loader never crashes -- it loads or reports ConfigInvalid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.decode import Decoder
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from gateway.config.model import GatewayConfig
from tests.gateway.config.config_kit import GOOD

_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = ["site", "identity", "listeners", "peers", "sources", "limits", "exports", "peering",
         "policies", "service_ports", "mdns_announce", "name", "kind", "port", "address",
         "trust_domain", "spiffe_id", "bundles", "endpoints", "svid", "key"]  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text_loads_or_is_rejected_cleanly(text: str) -> None:
    try:
        load_text(text, base_dir=Path("/etc/isthmus"))
    except ConfigInvalid as exc:
        assert exc.problems and all(p.message for p in exc.problems)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6))
def test_arbitrary_structures_decode_or_report_paths(data: dict[str, Any]) -> None:
    decoder = Decoder(Path("/etc/isthmus"))
    result = decoder.decode_root(GatewayConfig, data)
    assert (result is None) == bool(decoder.problems)
    for path, message in decoder.problems:
        assert message
        root = path.split(".")[0].split("[")[0]
        assert root == "" or root in _KEYS or root in GatewayConfig.__dataclass_fields__


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.text(max_size=8))
def test_mutations_of_a_good_config_never_crash(position: int, insert: str) -> None:
    text = GOOD[:position] + insert + GOOD[position:]
    try:
        load_text(text, base_dir=Path("/etc/isthmus"))
    except ConfigInvalid as exc:
        assert exc.problems


@pytest.mark.parametrize("line_count", [1, 500])
def test_huge_configs_are_handled(line_count: int) -> None:
    text = GOOD + "".join(
        f'\n[[peers]]\nname = "p{i}"\naddress = "127.0.0.{i % 250 + 1}"\nport = 1\n'
        f'spiffe_id = "spiffe://p{i}.test/gw"\n'
        for i in range(line_count)
    )
    config = load_text(text, base_dir=Path("/etc/isthmus"))
    assert len(config.peers) == line_count + 1
