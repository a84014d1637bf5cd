"""The mDNS source's pure instance table, its thread bridge and its lifetime (no namespaces)."""

from __future__ import annotations

import logging
import threading

import pytest
import trio

from discovery.events import Added, Event, Removed, Resynced, Updated
from discovery.model import EndpointKey, ServiceName
from discovery.sources.config import MdnsSourceConfig
from discovery.sources.mdns import (
    LOG_BURST,
    CacheReading,
    InstanceTable,
    _Mailbox,
    refresh_plan,
    serve_mdns_source,
)
from discovery.sources.mdns_txt import MdnsObservation, encode_txt

TYPE = "_isthmus._tcp.local."


def reading(
    label: str,
    *,
    port: int = 8080,
    address: str = "198.18.0.1",
    txt: dict[str, str] | bytes | None = None,
    complete: bool = True,
    created_ms: float = 0.0,
    ttl_s: float = 120.0,
) -> CacheReading:
    raw = encode_txt(txt or {"svc": "api"}) if not isinstance(txt, bytes) else txt
    obs = MdnsObservation(f"{label}.{TYPE}", TYPE, port, "h.local.", (address,), raw)
    return CacheReading(obs, complete, created_ms, ttl_s)


def table(max_instances: int = 10) -> InstanceTable:
    return InstanceTable("lan", "default", max_instances, 4096)


def name(label: str) -> str:
    return f"{label}.{TYPE}"


def test_added_updated_and_removed() -> None:
    t = table()
    events, _ = t.apply(name("a"), reading("a"), at=1.0, now_ms=0)
    assert [type(e) for e in events] == [Added]
    assert t.apply(name("a"), reading("a"), at=2.0, now_ms=0)[0] == []  # no change, no event
    events, _ = t.apply(name("a"), reading("a", txt={"svc": "api", "weight": "9"}), at=3, now_ms=0)
    assert [type(e) for e in events] == [Updated]
    assert isinstance(events[0], Updated) and events[0].endpoint.weight == 9
    events, _ = t.apply(name("a"), None, at=4.0, now_ms=0)
    assert events == [
        Removed("lan", EndpointKey(ServiceName("api"), "198.18.0.1", 8080), events[0].version, 4.0)
    ]
    versions = [int(e.version) for e in events]
    assert versions == sorted(versions)


def test_port_change_is_a_different_endpoint() -> None:
    t = table()
    t.apply(name("a"), reading("a"), at=1.0, now_ms=0)
    events, _ = t.apply(name("a"), reading("a", port=9090), at=2.0, now_ms=0)
    assert [type(e) for e in events] == [Removed, Added]


def test_instance_turning_hostile_is_removed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    t = table()
    t.apply(name("a"), reading("a"), at=1.0, now_ms=0)
    with caplog.at_level(logging.WARNING):
        events, _ = t.apply(name("a"), reading("a", txt=b"\x09weight=0x"), at=2.0, now_ms=0)
    assert [type(e) for e in events] == [Removed]
    assert "TxtValueInvalid" in caplog.text and "instance skipped" in caplog.text
    assert t.errors == {"TxtValueInvalid": 1}


def test_incomplete_records_are_not_routable_and_trigger_a_query() -> None:
    t = table()
    t.apply(name("a"), reading("a"), at=1.0, now_ms=0)
    events, query = t.apply(name("a"), reading("a", complete=False), at=2.0, now_ms=0)
    assert [type(e) for e in events] == [Removed]
    assert query


def test_cap_and_conflict() -> None:
    t = table(max_instances=2)
    t.apply(name("a"), reading("a", address="198.18.0.1"), at=1, now_ms=0)
    t.apply(name("b"), reading("b", address="198.18.0.2"), at=1, now_ms=0)
    assert t.apply(name("c"), reading("c", address="198.18.0.3"), at=1, now_ms=0)[0] == []
    assert t.errors == {"InstanceLimitExceeded": 1}
    t.apply(name("b"), None, at=2, now_ms=0)
    # Same service, address and port as "a" from another instance: one endpoint, one owner.
    assert t.apply(name("d"), reading("d", address="198.18.0.1"), at=3, now_ms=0)[0] == []
    assert t.errors["EndpointConflict"] == 1
    assert set(t.known) == {name("a")}


def test_error_logging_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    t = table(max_instances=10_000)
    with caplog.at_level(logging.WARNING):
        for i in range(1000):
            t.apply(name(f"x{i}"), reading(f"x{i}", port=0), at=1.0 + i / 1000, now_ms=0)
        t.apply(name("late"), reading("late", port=0), at=20.0, now_ms=0)
    assert t.errors == {"SrvInvalid": 1001}
    assert len(caplog.records) == LOG_BURST + 2  # burst, then summary + first of next window
    assert "980 more record errors suppressed" in caplog.text


def test_refresh_plan_follows_rfc6762() -> None:
    assert refresh_plan(1000, 10, 1000) == (False, 9000)
    assert refresh_plan(1000, 10, 9000) == (True, 10000)
    assert refresh_plan(1000, 10, 10500) == (True, 11000)
    assert refresh_plan(1000, 10, 11000) == (False, 11000)
    assert refresh_plan(1000, 10, 1000, jitter=0.02) == (False, 9200)


def test_deferred_query_brings_the_check_forward() -> None:
    t = table()
    t.apply(name("a"), reading("a", created_ms=0, ttl_s=10), at=1, now_ms=8000)
    assert t.next_check_ms() == 9000
    t.recheck_soon(name("a"), 8250)
    assert t.due(8250) == [name("a")]


@pytest.mark.parametrize(
    ("types", "interfaces", "path"),
    [
        ((), (), "service_types"),
        (("_http._tcp.local",), (), "service_types[0]"),
        (("http._tcp.local.",), (), "service_types[0]"),
        (("_a-name-longer-than-15._tcp.local.",), (), "service_types[0]"),
        (("_http._tcp.local.",), ("eth0",), "interfaces[0]"),
    ],
)
def test_config_problems(types: tuple[str, ...], interfaces: tuple[str, ...], path: str) -> None:
    config = MdnsSourceConfig(kind="mdns", name="lan", service_types=types, interfaces=interfaces)
    assert [p for p, _ in config.problems()] == [path]


def test_config_accepts_types_subtypes_and_addresses() -> None:
    config = MdnsSourceConfig(
        kind="mdns",
        name="lan",
        service_types=("_isthmus._tcp.local.", "_printer._sub._http._tcp.local."),
        interfaces=("198.18.0.2", "2001:db8::1"),
    )
    assert config.problems() == []


def test_due_and_next_check() -> None:
    t = table()
    t.apply(name("a"), reading("a", created_ms=0, ttl_s=10), at=1, now_ms=0)
    t.apply(name("b"), reading("b", address="198.18.0.2", created_ms=0, ttl_s=100), at=1, now_ms=0)
    assert t.next_check_ms() == 8000
    assert t.due(7999) == [] and t.due(8000) == [name("a")]


async def test_mailbox_coalesces_instead_of_blocking_or_growing() -> None:
    wake_send, wake_recv = trio.open_memory_channel[None](1)
    box = _Mailbox(wake_send, limit=100)
    for i in range(10_000):
        box.offer(TYPE, name(f"n{i}"), removed=False)
    box.offer(TYPE, name("n0"), removed=True)  # latest hint per instance wins
    assert wake_recv.statistics().current_buffer_used == 1
    batch, resync = box.take()
    assert len(batch) == 100 and resync and batch[(TYPE, name("n0"))] is True
    assert box.take() == ({}, False)


def _zeroconf_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if not t.name.startswith(("Trio", "Main"))}


async def test_cancel_closes_zeroconf_and_leaves_no_thread() -> None:
    """Cancelling the source returns only once zeroconf's threads are joined.  (How long the
    shielded close takes is a speed figure, printed by scripts/bench_mdns.py; a close that
    hangs fails the run through pytest's timeout.)"""
    before = _zeroconf_threads()
    config = MdnsSourceConfig(kind="mdns", name="lan", interfaces=("127.0.0.1",))
    send, recv = trio.open_memory_channel[Event](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_mdns_source, config, send)
        assert len(_zeroconf_threads() - before) >= 2  # zeroconf's loop + the browser
        first = recv.receive_nowait()
        assert isinstance(first, Resynced) and first.endpoints == ()
        nursery.cancel_scope.cancel()
    assert _zeroconf_threads() == before


def test_64_kib_txt_record_skips_only_that_instance(caplog: pytest.LogCaptureFixture) -> None:
    t = table()
    huge = (b"\xff" + b"k=" + b"v" * 253) * 257  # 65 792 bytes, well-formed strings
    with caplog.at_level(logging.WARNING):
        assert t.apply(name("big"), reading("big", txt=huge), at=1, now_ms=0)[0] == []
        events, _ = t.apply(name("ok"), reading("ok", address="198.18.0.2"), at=1, now_ms=0)
    assert [type(e) for e in events] == [Added]
    assert t.errors == {"TxtTooLarge": 1} and "big._isthmus" in caplog.text
