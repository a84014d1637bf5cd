"""Both JSON decoders of the Consul source give the same endpoints from the same answer.

The source decodes with orjson when it is installed and with the standard library's json
otherwise (discovery/sources/consul_decode.py); a platform without an orjson wheel must see
exactly the catalog the others see.  The answers here have the shape of the Consul-API test
server's (tests/consul_api/), with what differs between decoders in practice: non-ASCII and
escaped strings, big integers (Consul's indexes are uint64), floats, nulls, empty objects.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from consul import base

from discovery.sources import consul_decode
from discovery.sources.consul_decode import DECODERS, indexed_json
from discovery.sources.consul_parse import ConsulMalformedResponse, parse_health_service


def instance(i: int) -> dict[str, Any]:
    return {
        "Node": {
            "ID": "",
            "Node": f"nöde{i % 7}",
            "Address": f"10.99.{i % 100}.1",
            "Datacenter": "dc1",
            "TaggedAddresses": None,
            "Meta": {"rack": 'r\u00e9"1\\'},
            "CreateIndex": 10,
            "ModifyIndex": 2**63 + i,
        },
        "Service": {
            "ID": f"i{i}",
            "Service": "web",
            "Tags": ["a", "\u2603"],
            "Address": f"10.0.{i >> 8}.{i & 255}",
            "Meta": {"gen": str(i), "isthmus-protocol": "http1", "weight-ish": "1.5e3"},
            "Port": 1 + i % 60000,
            "Weights": {"Passing": 1 + i % 5, "Warning": 1},
            "EnableTagOverride": False,
            "CreateIndex": 200 + i,
            "ModifyIndex": 200 + i,
        },
        "Checks": [
            {
                "CheckID": f"c{i}",
                "Status": "passing" if i % 9 else "critical",
                "ModifyIndex": 300 + i,
                "Output": "ok\n\t\u00e9",
                "Timeout": 1.25,
            }
        ],
    }


ANSWER = json.dumps([instance(i) for i in range(300)])
ESCAPED = json.dumps([instance(i) for i in range(20)], ensure_ascii=True)


def response(body: str, index: str | None = "4711") -> base.Response:
    headers = {} if index is None else {"X-Consul-Index": index}
    return base.Response(200, headers, body)


def test_orjson_is_the_default_when_installed() -> None:
    pytest.importorskip("orjson")
    assert consul_decode.DEFAULT_DECODER == "orjson" and set(DECODERS) == {"json", "orjson"}


@pytest.mark.parametrize("body", [ANSWER, ESCAPED, "[]"])
def test_every_decoder_gives_the_same_endpoints(body: str) -> None:
    reports = {}
    for name, loads in DECODERS.items():
        index, data = indexed_json(loads)(response(body))
        assert index == "4711"
        assert data == json.loads(body)
        reports[name] = parse_health_service(data, service="web", namespace="default")
    first = next(iter(reports.values()))
    assert all(r == first for r in reports.values())
    assert len(first.endpoints) == len(json.loads(body))


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("body", ["{not json", "[" * 100_000 + "]" * 100_000, ""])
def test_bad_json_is_a_typed_error_with_every_decoder(name: str, body: str) -> None:
    with pytest.raises(ConsulMalformedResponse, match="undecodable JSON"):
        indexed_json(DECODERS[name])(response(body))
