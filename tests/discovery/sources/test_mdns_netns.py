"""The mDNS source against real multicast between network namespaces.

A publisher (plain zeroconf, ``mdns_publish.py``) runs in one namespace, the Isthmus source
(``mdns_browse.py`` printing events as JSON lines) in another, joined by veth pairs to a
bridge (:mod:`tests.netns`).  Timestamps are ``time.monotonic()``, which is system-wide, so
events in different processes can be put in order.

No assertion here is on speed: CI shares two cores with other work, and a correct source that
is merely slow must pass.  Each removal is checked for its cause and its order (after the
goodbye, never before the TTL), with a hang guard far below the time that would make the cause
ambiguous.  The latencies themselves are measured by ``scripts/bench_mdns.py``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from discovery.sources.mdns import LOG_BURST, LOG_WINDOW_S
from tests.discovery.sources.mdns_procs import Proc, added, browser, publisher, register, removed
from tests.netns import Lan, lan, netns_skip_reason

pytestmark = pytest.mark.netns

RECORD_TTL_S = 120  # what the publishers announce by default (RFC 6762's host-record TTL)
# A goodbye (TTL 0) is to remove a record within 1 s (RFC 6762 section 10.1); its records would
# otherwise live RECORD_TTL_S.  A removal seen within this guard -- 20x the goodbye's second, a
# sixth of the TTL -- can only have been caused by the goodbye, however slow the machine is.
GOODBYE_GUARD_S = 20.0


@pytest.fixture
def net() -> Iterator[Lan]:
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with lan(3) as n:
        yield n


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


SPIFFE = "spiffe://east.example/ns/payments/sa/api"


def test_endpoint_appears_with_fields_and_hostile_sibling_is_rejected(
    net: Lan, procs: list[Proc]
) -> None:
    src = browser(procs, net.hosts[1], default_namespace="lan")
    pub = publisher(procs, net.hosts[0])
    # Hostile instances first: bad UTF-8 in `ns`, then an oversize (5 000-byte) TXT record.
    register(pub, "evil-utf8", 8001, txt_hex=(b"\x06ns=\xff\xfe\xfd\x0bsvc=hostile").hex())
    big = b"".join(bytes([250]) + b"k%03d=" % i + b"x" * 245 for i in range(20))
    register(pub, "evil-big", 8002, txt_hex=big.hex())
    register(
        pub,
        "api-1",
        8080,
        txt={
            "svc": "api",
            "ns": "payments",
            "proto": "http2",
            "spiffe": SPIFFE,
            "weight": "40",
            "locality": "rack-1",
            "health": "passing",
        },
    )
    ev = src.wait_for(added(8080), 5, "good endpoint")
    assert (ev["service"], ev["ns"], ev["address"], ev["proto"]) == (
        "api",
        "payments",
        net.hosts[0].address,
        "http2",
    )
    assert (ev["weight"], ev["spiffe"], ev["locality"], ev["healthy"]) == (
        40,
        SPIFFE,
        "rack-1",
        True,
    )
    assert ev["metadata"]["mdns.instance"] == "api-1._isthmus._tcp.local."
    src.wait_for(
        lambda e: (
            e["ev"] == "error"
            and "TxtValueInvalid" in e["message"]
            and "evil-utf8" in e["message"]
            and "UTF-8" in e["message"]
        ),
        5,
        "typed error for the bad-UTF-8 instance",
    )
    src.wait_for(
        lambda e: (
            e["ev"] == "error" and "TxtTooLarge" in e["message"] and "evil-big" in e["message"]
        ),
        5,
        "typed error for the oversize TXT",
    )
    src.drain(0.5)
    assert not [e for e in src.seen if e["ev"] == "added" and e["port"] in (8001, 8002)]
    assert src.popen.poll() is None


def test_goodbye_removes_endpoint_long_before_its_ttl(net: Lan, procs: list[Proc]) -> None:
    src = browser(procs, net.hosts[1])
    pub = publisher(procs, net.hosts[0])
    register(pub, "web", 8080, ttl=RECORD_TTL_S)
    src.wait_for(added(8080), 5, "endpoint")
    pub.send({"op": "unregister", "label": "web"})
    t0 = pub.wait_for(lambda e: e.get("ok") == "unregister", 5, "unregister")["t_start"]
    gone = src.wait_for(removed(8080), GOODBYE_GUARD_S, "removal after goodbye")
    assert gone["t"] >= t0  # removed by the goodbye, not before it


def test_silent_death_removed_at_ttl_expiry_while_live_peer_stays(
    net: Lan, procs: list[Proc]
) -> None:
    ttl = 2
    src = browser(procs, net.hosts[1])
    doomed = publisher(procs, net.hosts[0])
    alive = publisher(procs, net.hosts[2])
    t_asked = time.monotonic()  # no record of "doomed" can have been received before this
    register(doomed, "doomed", 8080, ttl=ttl)
    t_announced = doomed.seen[-1]["t"]  # register() returns after its last announcement
    register(alive, "alive", 9090, ttl=ttl)
    src.wait_for(added(8080), 5, "doomed endpoint")
    t_alive = src.wait_for(added(9090), 5, "alive endpoint")["t"]
    os.kill(doomed.popen.pid, signal.SIGKILL)  # `ip netns exec` execs, so this is the publisher
    t_kill = time.monotonic()
    # Hang guard: the records expire at the latest `ttl` after the last announcement; allow
    # five more TTLs for a loaded machine.
    gone = src.wait_for(
        removed(8080), t_announced + 6 * ttl - time.monotonic(), "removal at TTL expiry"
    )
    # Never before the records can have expired: the silent publisher was removed by TTL
    # expiry.  (That the source's own timer acts at 100 % of the TTL, not zeroconf's 10 s cache
    # sweep, is checked on the pure core with `now` as an argument in test_mdns_source.py; how
    # long after expiry the removal comes is measured by scripts/bench_mdns.py.)
    assert gone["t"] > t_asked + ttl
    assert gone["t"] > t_kill
    # The live publisher answers our 80 %/90 % refresh queries: it survives several TTLs.
    src.drain(max(0.0, t_alive + 2.25 * ttl - time.monotonic()))
    assert not [e for e in src.seen if e["ev"] == "removed" and e["port"] == 9090]


def test_ten_thousand_instances_are_capped_and_source_keeps_working(
    net: Lan, procs: list[Proc]
) -> None:
    src = browser(procs, net.hosts[1], max_instances=100)
    pub = publisher(procs, net.hosts[0])
    register(pub, "keeper", 7000, ttl=RECORD_TTL_S)
    src.wait_for(added(7000), 5, "endpoint before the flood")
    pub.send({"op": "flood", "count": 10_000})
    pub.wait_for(lambda e: e.get("ok") == "flood", 10, "flood sent")
    src.wait_for(
        lambda e: e["ev"] == "error" and "InstanceLimitExceeded" in e["message"], 10, "cap hit"
    )
    src.wait_for(
        lambda e: sum(x["ev"] == "added" and x["service"] == "flooded" for x in src.seen) >= 99,
        10,
        "99 flooded endpoints",
    )
    src.drain(0.5)
    flooded = [e for e in src.seen if e["ev"] == "added" and e["service"] == "flooded"]
    assert len(flooded) == 99  # the cap (100) minus the keeper
    assert not [e for e in src.seen if e["ev"] == "removed"]  # the keeper was not pushed out
    errors = [e for e in src.seen if e["ev"] == "error"]
    # Per-instance warnings are rate-limited (LOG_BURST per LOG_WINDOW_S plus one summary),
    # not 9 901 lines.  A loaded machine may spread the flood over more than one window.
    windows = 1 + int((errors[-1]["t"] - errors[0]["t"]) // LOG_WINDOW_S)
    assert len(errors) <= (LOG_BURST + 5) * windows
    # Still serving: a goodbye still removes the keeper, long before its TTL would.
    pub.send({"op": "unregister", "label": "keeper"})
    t0 = pub.wait_for(lambda e: e.get("ok") == "unregister", 5, "unregister")["t_start"]
    gone = src.wait_for(removed(7000), GOODBYE_GUARD_S, "removal after the flood")
    assert gone["t"] >= t0


def test_announcer_round_trips_and_says_goodbye_on_exit(net: Lan, procs: list[Proc]) -> None:
    src = browser(procs, net.hosts[1])
    spec = {
        "interfaces": [net.hosts[0].address],
        "services": [
            {
                "service": "cart",
                "namespace": "shop",
                "address": net.hosts[0].address,
                "port": 8443,
                "protocol": "tls",
                "spiffe_id": "spiffe://west.example/ns/shop/sa/cart",
                "weight": 3,
                "locality": "dc-2",
                "ttl_s": RECORD_TTL_S,
            },
            {
                "service": "db",
                "address": net.hosts[0].address,
                "port": 5432,
                "protocol": "tcp",
                "ttl_s": RECORD_TTL_S,
            },
        ],
    }
    ann = Proc(net.hosts[0], "tests.discovery.sources.mdns_announce_run", json.dumps(spec))
    procs.append(ann)
    names = ann.wait_for(lambda e: e.get("ok") == "announced", 10, "announced")["names"]
    assert len(names) == 2
    cart = src.wait_for(added(8443), 5, "announced cart")
    assert (cart["service"], cart["ns"], cart["proto"], cart["weight"], cart["locality"]) == (
        "cart",
        "shop",
        "tls",
        3,
        "dc-2",
    )
    assert cart["spiffe"] == "spiffe://west.example/ns/shop/sa/cart"
    db = src.wait_for(added(5432), 5, "announced db")
    assert (db["service"], db["ns"], db["proto"]) == ("db", "default", "tcp")
    ann.send({"op": "stop"})
    stopped = ann.wait_for(lambda e: e.get("ok") == "stopped", 5, "announcer exit")
    for port in (8443, 5432):  # removed by the goodbye, not by TTL expiry
        gone = src.wait_for(removed(port), GOODBYE_GUARD_S, f"goodbye for {port}")
        assert gone["t"] >= stopped["t_start"]
