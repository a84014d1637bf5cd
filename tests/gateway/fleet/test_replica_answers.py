"""The control site's per-replica answers and what they make of each site (pure)."""

from __future__ import annotations

from typing import Any

from gateway.fleet.replica_answers import SiteAnswers
from gateway.fleet.site_core import Answer

B1, B2 = "127.0.0.2:15443", "127.0.0.3:15443"
C1 = "127.0.0.4:15443"


def rows(a: SiteAnswers, current: str) -> dict[str, dict[str, Any]]:
    return {r["site"]: r for r in a.json(current)}


def test_one_gateway_sites_say_who_rejected_and_who_is_cut_off() -> None:
    a = SiteAnswers()
    a = a.answered("b", B1, Answer("v1", True, None), 10.0)
    a = a.answered("c", C1, Answer("v1", False, "version v1: bad"), 11.0)
    a = a.disconnected("b", B1, 20.0).disconnected("b", B1, 30.0)
    r = rows(a, "v1")
    assert r["c"]["state"] == "rejected" and r["c"]["reason"] == "version v1: bad"
    assert r["b"]["state"] == "unreachable" and str(r["b"]["down_since"]).startswith("1970")
    assert a.get("b", B1).down_since == 20.0  # since the first time, not the last look
    a = a.connected("b", B1)
    assert a.get("b", B1).status == "pending" and a.get("b", B1).down_since is None
    a = a.answered("b", B1, Answer("v1", True, None), 40.0)
    assert {s: row["current"] for s, row in rows(a, "v1").items()} == {"b": True, "c": False}
    assert [x.site for x in a.keep_only([("c", C1)]).replicas] == ["c"]


def test_a_site_is_current_only_when_every_live_replica_applied_it() -> None:
    a = SiteAnswers().answered("b", B1, Answer("v2", True, None), 10.0)
    a = a.answered("b", B2, Answer("v1", True, None), 11.0)
    b = rows(a, "v2")["b"]
    assert not b["current"] and b["lagging"] == [B2]  # says which replica lags
    assert b["state"] == "applied" and b["version"] == "v1"  # the lagging one's answer
    assert [(x["replica"], x["current"]) for x in b["replicas"]] == [(B1, True), (B2, False)]

    # A rejection at one replica is what the site row shows, with the reason.
    a = a.answered("b", B2, Answer("v2", False, "version v2: no good at b2"), 12.0)
    b = rows(a, "v2")["b"]
    assert b["state"] == "rejected" and b["reason"] == "version v2: no good at b2"
    assert b["lagging"] == [B2] and not b["current"]

    a = a.answered("b", B2, Answer("v2", True, None), 13.0)
    b = rows(a, "v2")["b"]
    assert b["current"] and b["lagging"] == [] and b["state"] == "applied"


def test_a_replica_that_is_down_holds_nobody_back_and_catches_up() -> None:
    a = SiteAnswers().answered("b", B1, Answer("v1", True, None), 10.0)
    a = a.answered("b", B2, Answer("v1", True, None), 10.0)
    a = a.disconnected("b", B2, 20.0)
    a = a.answered("b", B1, Answer("v2", True, None), 30.0)
    b = rows(a, "v2")["b"]
    assert b["current"] and b["state"] == "applied" and b["down_since"] is None
    by_replica = {x["replica"]: x for x in b["replicas"]}
    assert by_replica[B2]["state"] == "unreachable" and by_replica[B2]["version"] == "v1"
    assert str(by_replica[B2]["down_since"]).startswith("1970-01-01T00:00:20")

    # It comes back: pending (the site lags) until it answers the current version.
    a = a.connected("b", B2)
    b = rows(a, "v2")["b"]
    assert not b["current"] and b["lagging"] == [B2] and b["state"] == "pending"
    a = a.answered("b", B2, Answer("v2", True, None), 40.0)
    assert rows(a, "v2")["b"]["current"]


def test_a_site_is_unreachable_only_when_every_replica_is() -> None:
    a = SiteAnswers().disconnected("b", B1, 20.0).disconnected("b", B2, 25.0)
    b = rows(a, "v1")["b"]
    assert b["state"] == "unreachable" and not b["current"]
    assert str(b["down_since"]).startswith("1970-01-01T00:00:25")  # since the last went
    a = a.connected("b", B1)
    assert rows(a, "v1")["b"]["state"] == "pending"
    # Replicas no longer configured are forgotten.
    assert [x.replica for x in a.keep_only([("b", B1)]).replicas] == [B1]
