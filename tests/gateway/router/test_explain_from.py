"""The pure parts of ``isthmus explain --from`` a peer site: reading the peer's answer.

Why these cases: the answer is a peer's text shown on an operator's terminal, so it is
rebuilt from known keys only (bounded, printable, credentials redacted), and every way a peer
can fail to give a trace maps to its own typed error (refused, unreachable, cannot).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.admin.explain_view import unknown_site
from gateway.commands.explain import render
from gateway.router.explain_from import (
    MAX_CANDIDATES,
    MAX_TRACE_BYTES,
    FromSiteCannot,
    FromSiteRefused,
    FromSiteUnreachable,
    answer_to_trace,
    trace_from_answer,
)

TRACE: dict[str, Any] = {
    "authority": "shop.default.isthmus",
    "address": "api.default.c.isthmus",
    "route": "only-at-b",
    "status": None,
    "outcome": "would be forwarded to site c, endpoint 10.0.0.7:8080 (http1)",
    "site": "c",
    "endpoint": {"address": "10.0.0.7", "port": 8080, "protocol": "http1", "balancer": "wrr"},
    "candidates": [
        {
            "site": "c",
            "decision": "chosen",
            "reason": "first site able to serve it",
            "link": "up",
            "policy": "allowed",
            "endpoint": {"address": "10.0.0.7", "port": 8080, "protocol": "http1"},
            "answered": True,
        }
    ],
    "limits": {"route_timeout_s": "15"},
    "sent": False,
}


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_a_well_formed_trace_comes_through_as_it_is() -> None:
    got = answer_to_trace("b", b"200", _body({"trace": TRACE, "site": "b"}))
    assert got["route"] == "only-at-b" and got["site"] == "c" and got["status"] is None
    [cand] = got["candidates"]
    assert cand["decision"] == "chosen" and cand["policy"] == "allowed"
    assert cand["endpoint"]["port"] == 8080 and got["limits"] == {"route_timeout_s": "15"}
    assert got["sent"] is False


def test_a_peers_text_is_cleaned_bounded_and_redacted() -> None:
    hostile = dict(TRACE)
    hostile["outcome"] = "\x1b]0;owned\x07 authorization: Bearer s3cr3t-0001 " + "x" * 5000
    hostile["route"] = "r\r\nfake line"
    hostile["status"] = True  # not an int status
    hostile["candidates"] = [
        {"site": "c", "decision": "rm -rf", "link": "sideways", "policy": "maybe"},
        "not a candidate",
        {"no": "site"},
    ] + [{"site": "c"}] * (MAX_CANDIDATES + 5)
    hostile["extra"] = "dropped"
    got = trace_from_answer(hostile)
    assert "\x1b" not in got["outcome"] and "\x07" not in got["outcome"]
    assert "s3cr3t" not in got["outcome"] and len(got["outcome"]) <= 1024 + 16
    assert "\n" not in got["route"] and "\r" not in got["route"]
    assert got["status"] is None and "extra" not in got
    first = got["candidates"][0]
    assert (first["decision"], first["link"], first["policy"]) == ("?", "?", "unknown")
    assert len(got["candidates"]) == MAX_CANDIDATES - 2


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (b"403", {"error": "site b does not explain its routing to site a"}, FromSiteRefused,
         "refuses to explain: site b does not explain"),
        (b"503", {"error": "site b is busy"}, FromSiteUnreachable, "could not explain"),
        # A gateway from before the question answers it as the one-site question (v1).
        (b"200", {"status": 200, "policy": "allowed", "reason": "", "endpoint": None},
         FromSiteCannot, "older version"),
        (b"400", None, FromSiteCannot, "older version"),  # older still: the field is unknown
        (b"400", {"error": "a question carries at most 32 fields"}, FromSiteCannot, "32 fields"),
        (b"200", {"trace": "not a trace"}, FromSiteCannot, "not a trace"),
    ],
)  # fmt: skip
def test_each_failure_of_the_peer_is_its_own_error(
    status: bytes, body: Any, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        answer_to_trace("b", status, b"garbage{" if body is None else _body(body))


def test_an_oversize_answer_is_refused_not_parsed() -> None:
    with pytest.raises(FromSiteCannot, match="larger than"):
        answer_to_trace("b", b"200", b" " * (MAX_TRACE_BYTES + 1))


def test_an_unknown_site_lists_the_known_ones() -> None:
    why = unknown_site("zz", "a", {"c", "b"})
    assert why == "from: unknown site 'zz'; known sites: a (this site), b, c"
    assert unknown_site("b", "a", {"b", "c"}) is None
    assert unknown_site("a", "a", ()) is None
    bad = unknown_site("B\x1b[2J", "a", {"b"})
    assert bad is not None and "known sites" not in bad


def test_the_printed_trace_names_the_site_that_computed_it() -> None:
    remote = render({**trace_from_answer(TRACE), "computed_by": "b", "asked_through": "a"})
    assert remote.splitlines()[0] == "from     site b (its gateway's trace, asked through a)"
    assert "nothing was sent" in remote
    local = render({**trace_from_answer(TRACE), "computed_by": "a"})
    assert local.splitlines()[0] == "from     site a (this gateway)"
