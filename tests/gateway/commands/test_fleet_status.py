"""``isthmus status --fleet``: which sites differ from the expected version, and why (pure)."""

from __future__ import annotations

from typing import Any

from gateway.commands.fleet_status import EXIT_DIFFERS, EXIT_OK, EXIT_UNREACHABLE, assess, exit_code


def _view(site: str, version: str | None, state: str, **extra: Any) -> dict[str, Any]:
    # The shape of FleetState.status(): "error" is always present (None when reads succeed).
    view = {"site": site, "version": version, "latest": version, "state": state, "error": None}
    view["rejected"] = None
    view.update(extra)
    return view


def test_every_site_on_the_expected_version() -> None:
    status = assess({"u1": _view("a", "v2", "current"), "u2": _view("b", "v2", "current")}, "v2")
    assert status["consistent"] and exit_code(status) == EXIT_OK
    assert [r["state"] for r in status["sites"]] == ["current", "current"]


def test_rejected_unreachable_and_pending_sites_are_listed_with_why() -> None:
    rejected = {
        "version": "v3",
        "problems": [{"path": "fleet.resources[0].spec.peers[0]", "message": "no peer"}],
    }
    views = {
        "u1": _view("a", "v2", "rejected", latest="v3", rejected=rejected),
        "u2": _view("b", "v2", "unreachable", error="ConsulUnavailable: down"),
        "u3": _view("c", "v2", "current"),  # has not read v3 yet
        "u4": {"admin_unreachable": "cannot reach"},
        "u5": _view("d", "v3", "current", latest="v3"),
    }
    status = assess(views, "v3")
    rows = {r["url"]: r for r in status["sites"]}
    assert (
        rows["u1"]["state"] == "rejected"
        and "fleet.resources[0].spec.peers[0]" in rows["u1"]["why"]
    )
    assert rows["u2"]["state"] == "unreachable" and "down" in rows["u2"]["why"]
    assert rows["u3"]["state"] == "pending"
    assert rows["u4"]["state"] == "unreachable" and rows["u4"]["site"] == "?"
    assert not rows["u5"]["differs"] and rows["u1"]["differs"]
    assert exit_code(status) == EXIT_DIFFERS


def test_without_an_authority_the_most_read_version_is_expected() -> None:
    views = {
        "u1": _view("a", "v2", "current"),
        "u2": _view("b", "v2", "current"),
        "u3": _view("c", "v1", "current", latest="v1"),
    }
    status = assess(views, None)
    assert status["expected"] == "v2" and exit_code(status) == EXIT_DIFFERS
    assert exit_code(assess({"u": {"admin_unreachable": "x"}}, None)) == EXIT_UNREACHABLE


def test_a_control_site_reports_the_sites_it_pushes_to() -> None:
    sites = [
        {"site": "b", "state": "applied", "version": "v2", "reason": None, "down_since": None},
        {"site": "c", "state": "rejected", "version": "v2", "reason": "version v2: no peer"},
        {"site": "d", "state": "unreachable", "version": "v1", "down_since": "2026-01-01T00:00Z"},
        {"site": "e", "state": "applied", "version": "v1"},
    ]
    hq = _view("hq", "v2", "current", sites=sites, api="https://127.0.0.1:9444")
    status = assess({"u-hq": hq, "u-b": _view("b", "v2", "current")}, None)
    assert status["expected"] == "v2"  # the control site's document, not a majority vote
    rows = {r["site"]: r for r in status["sites"]}
    assert rows["b"]["url"] == "u-b"  # asked directly: its own view wins
    assert rows["c"]["state"] == "rejected" and rows["c"]["why"] == "version v2: no peer"
    assert rows["d"]["state"] == "unreachable" and "2026-01-01T00:00Z" in rows["d"]["why"]
    assert rows["e"]["state"] == "pending" and rows["e"]["differs"]
    assert not rows["hq"]["differs"] and not rows["b"]["differs"]
    assert exit_code(status) == EXIT_DIFFERS


def test_a_control_site_names_the_replica_that_lags() -> None:
    def replica(address: str, state: str, version: str, since: str | None = None) -> Any:
        return {"replica": address, "state": state, "version": version, "down_since": since}

    sites = [
        {
            "site": "b",
            "state": "applied",
            "version": "v1",
            "lagging": ["b2:1"],
            "replicas": [replica("b1:1", "applied", "v2"), replica("b2:1", "applied", "v1")],
        },
        {
            "site": "c",
            "state": "applied",
            "version": "v2",
            "lagging": [],
            "replicas": [
                replica("c1:1", "applied", "v2"),
                replica("c2:1", "unreachable", "v1", "2026-01-01T00:00Z"),
            ],
        },
    ]
    hq = _view("hq", "v2", "current", sites=sites, api="https://127.0.0.1:9444")
    status = assess({"u-hq": hq, "u-b1": _view("b", "v2", "current")}, None)
    rows = [r for r in status["sites"] if r["site"] in ("b", "c")]
    by_url = {(r["site"], r["url"]): r for r in rows}
    # b's replica asked directly runs v2, but the control site says its other one lags.
    assert not by_url[("b", "u-b1")]["differs"]
    lag = by_url[("b", "u-hq (reported)")]
    assert lag["differs"] and lag["state"] == "pending"
    assert lag["why"] == "replica b2:1 lags: applied v1"
    # A replica that is down holds nobody back; the row says since when it is cut off.
    c = by_url[("c", "u-hq (reported)")]
    assert c["state"] == "current" and not c["differs"]
    assert c["why"] == "replica c2:1 unreachable since 2026-01-01T00:00Z"
    assert exit_code(status) == EXIT_DIFFERS
