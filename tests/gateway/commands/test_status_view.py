"""``isthmus status``'s judgement: healthy, or degraded and why (pure, from admin documents)."""

from __future__ import annotations

from typing import Any

from gateway.commands.status_view import assess, render


def docs(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "/healthz": {"status": "ok", "site": "a"},
        "/links": {
            "b": {"up": True, "ping_rtt_s": 0.0012, "trust_domain": "b.test", "up_for_s": 3.0}
        },
        "/imports": {
            "peers": [{"site": "b", "version": 4, "stale": False, "confirmed_age_s": 0.2}]
        },
        "/routes": {"local_site": "a", "routes": {"api.default.isthmus": ["a", "b"]}},
        "/catalog": {
            "version": 2,
            "endpoints": [{"healthy": True, "stale": False, "ejected": None}],
            "sources": [{"name": "local", "stale": False, "expired": False}],
        },
    }
    base.update(changes)
    return base


def test_healthy_overlay() -> None:
    status = assess(docs())
    assert status["healthy"] and status["problems"] == []
    assert status["links"][0] == {
        "peer": "b",
        "state": "up",
        "rtt_ms": 1.2,
        "trust_domain": "b.test",
        "up_for_s": 3.0,
        "last_error": None,
        "open_streams": None,
        "reconnects": None,
        "export_ack_lag_s": None,
    }
    assert status["routes"] == {"api.default.isthmus": ["a", "b"]}
    text = render(status)
    assert text.startswith("site a: healthy") and "a > b" in text


def test_each_degradation_is_named() -> None:
    status = assess(
        docs(
            **{
                "/healthz": {"status": "not ok", "site": "a", "reason": "SVID expired"},
                "/links": {"b": {"up": False, "last_error": "LinkDown: ping timeout"}},
                "/imports": {"peers": [{"site": "b", "version": 4, "stale": True}]},
                "/catalog": {
                    "endpoints": [{"healthy": True, "stale": True}],
                    "sources": [{"name": "consul", "stale": True, "reason": "HTTP 500"}],
                },
            }
        )
    )
    assert not status["healthy"]
    assert status["problems"] == [
        "identity: SVID expired",
        "link to b is down (LinkDown: ping timeout)",
        "imports from b are stale",
        "source consul is stale: HTTP 500",
        "catalog: 1 stale endpoint(s)",
    ]
    assert "DEGRADED" in render(status)


def test_routes_followed_from_the_owner_and_their_conflicts_are_shown_not_degraded() -> None:
    routes = {
        "local_site": "c",
        "routes": {},
        "imported_routes": {
            "api.default": {"site": "a", "routes": ["a/canary"], "conflict": ["b"]},
        },
        "rejected_routes": [
            {"site": "b", "service": "web.default", "position": 2, "reason": "not JSON"}
        ],
    }
    status = assess(docs(**{"/routes": routes}))
    assert status["healthy"]
    assert status["owner_routes"] == [
        {"address": "api.default", "site": "a", "routes": ["a/canary"], "conflict": ["b"]}
    ]
    text = render(status)
    assert "routes followed from the owning site" in text and "a/canary" in text
    assert "routes for api.default: b differ from a (following a)" in text
    assert "route 2 of web.default from b rejected: not JSON" in text
    assert "owning site" not in render(assess(docs()))


def test_a_replica_down_is_named_while_its_site_is_up() -> None:
    replicas = [
        {"address": "10.0.0.1:15443", "up": True},
        {"address": "10.0.0.2:15443", "up": False},
    ]
    link = {"up": True, "trust_domain": "b.test", "replicas": replicas, "replicas_up": 1}
    status = assess(docs(**{"/links": {"b": link}}))
    assert status["problems"] == ["b: 1 of 2 replicas up (10.0.0.2:15443 down)"]
    assert status["links"][0]["state"] == "up"
    replicas[1]["up"] = True
    assert assess(docs(**{"/links": {"b": link}}))["healthy"]


def test_workers_are_counted_and_a_worker_down_or_unlinked_is_degraded() -> None:
    assert "workers" not in assess(docs())  # no /workers: no worker processes, no line
    rows = [
        {"index": 0, "pid": 41, "restarts": 0},
        {"index": 1, "pid": 42, "restarts": 1},
    ]
    status = assess(docs(**{"/workers": {"count": 2, "workers": rows}}))
    assert status["healthy"] and status["workers"] == {"count": 2, "up": 2, "restarts": 1}
    assert "workers: 2 of 2 up, 1 restart" in render(status)
    down = [rows[0], {"index": 1, "pid": None, "restarts": 3, "up": False}]
    links = {
        "b": {
            "up": True,
            "workers": [{"worker": 0, "up": True}, {"worker": 1, "up": False}],
        }
    }
    status = assess(docs(**{"/workers": down, "/links": links}))
    assert status["problems"] == [
        "workers: 1 of 2 up",
        "b: worker 1 has no link (1 of 2 workers linked)",
    ]
    assert "workers: 1 of 2 up, 3 restarts" in render(status)


def test_a_worker_that_does_not_serve_yet_is_not_up() -> None:
    rows = [
        {"index": 0, "pid": 41, "restarts": 0, "connected": True, "serving": True},
        {"index": 1, "pid": 42, "restarts": 2, "connected": True, "serving": False},
    ]
    status = assess(docs(**{"/workers": {"count": 3, "supervisor_pid": 40, "workers": rows}}))
    assert status["workers"] == {"count": 3, "up": 1, "restarts": 2}
    assert status["problems"] == ["workers: 1 of 3 up"]
