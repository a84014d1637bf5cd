"""Worker processes (``[site] workers = 2``), on real gateway processes.

Three sites on loopback.  Site ``b`` runs two replicas (``b1``, ``b2``: two ``isthmus run``
processes with the same site name, each its own SVID), each a supervisor with two data-plane
workers.  Site ``a`` runs two workers too, so its callers' requests cross *worker links*
(a's workers to b's workers); site ``c`` is a single process (``workers = 0``), so its links
reach b's supervisors through the workers' hand-off.  a and c list both b replicas in
``[[peers]] addresses``.  b's service ``echo`` is a counting endpoint per replica (in this
test process) that answers with the replica's name and holds each request a little, so
requests are in flight when something dies.

Under steady GET load from a's callers to ``echo``:

1. one worker of b1 is killed (SIGKILL by the PID ``/workers`` lists, chosen among the workers
   that serve a's requests, while one of its requests is held at the endpoint);
2. b1's supervisor restarts it (a new PID in ``/workers``);
3. the whole replica b2 is killed (its supervisor, SIGKILL; its workers must exit on their
   own when their supervisor's channel ends), and the load goes on on b1 alone.

No GET fails; ``/routes`` at a and at c never drops b's service (polled all along).  Then both
of b1's workers -- the one that was never killed and the restarted one -- serve requests
(callers at b1 itself, each on a new connection, which SO_REUSEPORT spreads over the workers).

Which worker process served a request is read from /proc (``tests/e2e/proc_owner.py``): the
endpoint asks which of the replica's worker PIDs holds the other end of each upstream
connection, so the test does not take the gateway's word for it.  The load is bounded in
count and time; every wait is a generous hang guard, never a speed assertion.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import BuiltSite, Topology, gateway_config_text
from overlay.identity.ca import issue_svid
from tests.e2e.clients import h1_request
from tests.e2e.counting_server import Counting, serve_counting
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of, with_site
from tests.e2e.proc_owner import alive, children_of, connection_owner

HTTP_PORT = 15080
EW_PORT = 15443
SERVICE = "echo"
AUTHORITY = f"{SERVICE}.default.isthmus"
WORKERS = 2
HOLD_S = 0.1  # each request held at the endpoint: requests are in flight when a process dies
CALLERS = 6
MAX_REQUESTS = 2000  # per caller: bounded in count...
WITHIN_S = 240.0  # ...and in time (a hang guard, never a speed assertion)
LOCAL_CALLS = 300  # at most, at b1 itself, until both of its workers served
WAIT_S = 30.0  # hang guard for each state change (restart backoff is 0.5 s)


def _b2_address(topology: Topology) -> str:
    return str(ipaddress.IPv4Address(int(topology.sites[1].address) + 1))  # 127.x.2.2


def _with_echo(text: str, address: str, port: int) -> str:
    """A b replica's config with the ``echo`` endpoint (this replica's counting server)."""
    block = (
        f'[[sources.endpoints]]\nservice = "{SERVICE}"\nnamespace = "default"\n'
        f'address = "{address}"\nport = {port}\nprotocol = "http1"\n\n[[exports]]'
    )
    assert text.count("[[exports]]") == 1
    return text.replace("[[exports]]", block)


def _patch(site: str, text: str, b1: str, b2: str, echo_port: int) -> str:
    """b1: its echo endpoint; a and c: peer b by both replicas' addresses."""
    if site == "b":
        return _with_echo(text, b1, echo_port)
    one = f'address = "{b1}"\nport = {EW_PORT}\n'
    assert text.count(one) == 1, text
    return text.replace(one, f'addresses = ["{b1}:{EW_PORT}", "{b2}:{EW_PORT}"]\n')


async def _start_b2(ov: Overlay, address: str, echo_port: int) -> None:
    """b's second replica: b's config on the next loopback address, its own SVID (the same
    SPIFFE ID, issued by b's CA), its own echo endpoint, two workers like b1."""
    b = ov.built["b"]
    directory = ov.root / "b2"
    ca_dir = ov.root / "ca" / b.site.trust_domain.name
    await trio.to_thread.run_sync(issue_svid, ca_dir, b.site.gateway_id, directory / "identity")
    site = replace(b.site, address=ipaddress.IPv4Address(address))
    text = gateway_config_text(ov.topology, site, ov.root.resolve())
    text = text.replace(str(ov.root.resolve() / "b" / "identity"), str(directory / "identity"))
    assert str(directory / "identity" / "svid.pem") in text
    assert f"workers = {WORKERS}" in text
    config = directory / "gateway.toml"
    config.write_text(_with_echo(text, address, echo_port), "utf-8")
    ov.built["b2"] = BuiltSite(site, config, directory)
    await ov.start("b2")


def _worker_rows(doc: Any) -> list[dict[str, Any]]:
    """The rows of ``/workers`` (one per worker slot)."""
    rows = doc.get("workers", []) if isinstance(doc, dict) else doc
    assert isinstance(rows, list), doc
    return rows


def _worker_pids(doc: Any) -> list[int]:
    """The PIDs of the workers ``/workers`` lists as serving (process up, channel ready)."""
    return sorted(int(r["pid"]) for r in _worker_rows(doc) if r.get("pid") and r.get("serving"))


def _all_up(doc: Any, count: int = WORKERS) -> bool:
    return len(_worker_pids(doc)) == count


def _replicas_up(doc: dict[str, Any]) -> int:
    return int(doc.get("b", {}).get("replicas_up", 0))


def _every_worker_reaches_both(doc: dict[str, Any]) -> bool:
    """a's ``/links``: each of a's workers has its own links up to both replicas of b (the
    supervisor's links say nothing of the workers', which dial on their own backoff)."""
    rows = doc.get("b", {}).get("workers", [])
    return len(rows) == WORKERS and all(r.get("replicas_up") == 2 for r in rows)


async def _workers_of(ov: Overlay, replica: str) -> list[int]:
    """The replica's worker PIDs as ``/workers`` lists them, once all are up -- and they are
    the supervisor's child processes (the PIDs an operator reads are the real ones)."""
    doc = await ov.wait(replica, "/workers", _all_up, within_s=WAIT_S)
    pids = _worker_pids(doc)
    assert sorted(children_of(ov.children[replica].process.pid)) == pids, (doc, replica)
    return pids


async def test_workers_killed_under_load(tmp_path: Path) -> None:
    topology = make_topology(["a", "b", "c"])
    topology = with_site(topology, "a", workers=WORKERS)
    topology = with_site(topology, "b", workers=WORKERS)
    topology = with_site(topology, "c", workers=0)  # whatever ISTHMUS_E2E_WORKERS says
    b1, b2 = str(topology.sites[1].address), _b2_address(topology)
    supervisors: dict[str, int] = {}  # replica -> its supervisor's PID, once started

    def owner_of(replica: str) -> Any:
        def owner(stream: trio.SocketStream) -> int | None:
            pid = supervisors.get(replica)
            if pid is None:
                return None
            peer = stream.socket.getpeername()
            me = stream.socket.getsockname()
            return connection_owner((peer[0], peer[1]), (me[0], me[1]), children_of(pid))

        return owner

    guard = 2 * WITHIN_S  # the endpoints keep the gateways' pooled connections all along
    echo = {
        "b": Counting(200, "b1", delay_s=HOLD_S, owner_of=owner_of("b"), connection_guard_s=guard),
        "b2": Counting(
            200, "b2", delay_s=HOLD_S, owner_of=owner_of("b2"), connection_guard_s=guard
        ),
    }
    async with trio.open_nursery() as servers:
        ports = {
            "b": await servers.start(serve_counting, b1, echo["b"]),
            "b2": await servers.start(serve_counting, b2, echo["b2"]),
        }

        def patch(site: str, text: str) -> str:
            return _patch(site, text, b1, b2, ports["b"])

        leftovers: list[int] = []
        try:
            async with open_overlay(tmp_path, topology, patch=patch) as ov:
                supervisors["b"] = ov.children["b"].process.pid
                await _start_b2(ov, b2, ports["b2"])
                supervisors["b2"] = ov.children["b2"].process.pid
                await _run(ov, echo, leftovers)
        finally:
            # A worker whose supervisor was killed must have exited by itself (asserted in
            # _run); should it not have, it is our grandchild and is stopped here, by PID.
            for pid in leftovers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        servers.cancel_scope.cancel()


async def _run(ov: Overlay, echo: dict[str, Counting], leftovers: list[int]) -> None:
    for site in ("a", "c"):
        links = await ov.wait(site, "/links", lambda doc: _replicas_up(doc) == 2)
        assert len(links["b"]["replicas"]) == 2, links
        await ov.wait(site, "/routes", lambda doc: routes_of(doc, AUTHORITY) == ["b"])
    b1_workers = await _workers_of(ov, "b")
    b2_workers = await _workers_of(ov, "b2")
    await _workers_of(ov, "a")
    await ov.wait("a", "/links", _every_worker_reaches_both, within_s=WAIT_S)
    leftovers += b2_workers

    served: list[str] = []  # the replica that answered each of a's GETs, in order
    failures: list[str] = []
    route_losses: list[tuple[str, object]] = []
    phase = {"name": "before"}
    by_phase: dict[str, Counter[str]] = {}
    done = trio.Event()
    a_host = str(ov.built["a"].site.address)
    t0 = trio.current_time()
    timeline: list[str] = []  # when each phase began (for a failure's message)

    def enter(name: str) -> None:
        phase["name"] = name
        timeline.append(f"{trio.current_time() - t0:.3f}s {name}")

    async def caller(i: int) -> None:
        for _ in range(MAX_REQUESTS):
            if done.is_set():
                return
            name = phase["name"]
            started = trio.current_time() - t0
            try:
                reply = await h1_request(
                    a_host, HTTP_PORT, authority=AUTHORITY, request_timeout_s=20
                )
            except OSError as exc:
                failures.append(f"caller {i} ({name}, {started:.3f}s): {exc!r}")
                continue
            if reply.status != 200:
                failures.append(
                    f"caller {i} ({name}, {started:.3f}s-{trio.current_time() - t0:.3f}s): "
                    f"{reply.status} {reply.body[:1000]!r}"
                )
                continue
            served.append(reply.body.decode())
            by_phase.setdefault(name, Counter())[reply.body.decode()] += 1

    async def watch_routes(site: str) -> None:
        while not done.is_set():
            doc = await ov.get(site, "/routes")
            if routes_of(doc, AUTHORITY) != ["b"]:
                route_losses.append((site, doc))
            await trio.sleep(0.05)

    async def count_at_least(n: int) -> None:
        while len(served) < n:  # the callers append; bounded by fail_after
            # Stop early once the outcome is known: failing requests count nothing.
            assert len(failures) < 20 and len(route_losses) < 5, (failures, route_losses, timeline)
            await trio.sleep(0.05)

    def a_requests_by_worker() -> Counter[object]:
        return Counter(s.owner for s in echo["b"].seen if s.owner in b1_workers)

    with trio.fail_after(WITHIN_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_routes, "a")
            nursery.start_soon(watch_routes, "c")
            for i in range(CALLERS):
                nursery.start_soon(caller, i)
            await count_at_least(40)
            # 1. one worker of b1 that serves a's requests, killed while one of them is held.
            while not a_requests_by_worker():  # noqa: ASYNC110 -- bounded by fail_after
                await trio.sleep(0.05)
            victim = a_requests_by_worker().most_common(1)[0][0]
            assert isinstance(victim, int) and victim in b1_workers, (victim, b1_workers)
            while echo["b"].in_flight_by.get(victim, 0) == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
            enter("worker-killed")
            os.kill(victim, signal.SIGKILL)  # our grandchild: b1's supervisor started it
            # 2. b1's supervisor starts a new worker in its place.
            doc = await ov.wait(
                "b",
                "/workers",
                lambda d: _all_up(d) and victim not in _worker_pids(d),
                within_s=WAIT_S,
            )
            restarted = sorted(set(_worker_pids(doc)) - set(b1_workers))
            assert len(restarted) == 1, (doc, b1_workers)
            b1_after = await _workers_of(ov, "b")
            enter("worker-restarted")
            await count_at_least(len(served) + 40)
            # 3. the whole replica b2: its supervisor killed while a request is held there.
            while echo["b2"].in_flight == 0:  # noqa: ASYNC110 -- bounded by fail_after
                await trio.sleep(0.01)
            enter("replica-killed")
            await ov.kill("b2")
            with trio.fail_after(WAIT_S):  # its workers notice their channel ended and exit
                while any(alive(pid) for pid in b2_workers):  # noqa: ASYNC110
                    await trio.sleep(0.1)
            await ov.wait("a", "/links", lambda doc: _replicas_up(doc) == 1, within_s=WAIT_S)
            enter("replica-down")
            await count_at_least(len(served) + 60)
            done.set()

    assert failures == [], "\n".join([*failures, "phases:", *timeline])
    assert route_losses == []
    assert set(by_phase["before"]) == {"b1", "b2"}, by_phase  # spread over both replicas
    assert set(by_phase["replica-down"]) == {"b1"}, by_phase  # the site stays up on b1
    # Both of b1's workers -- the one never killed and the restarted one -- serve callers
    # at b1 (each call a new connection: SO_REUSEPORT spreads them over the workers).
    seen_before = len(echo["b"].seen)
    b1_host = str(ov.built["b"].site.address)
    for _ in range(LOCAL_CALLS):
        served_by = {s.owner for s in echo["b"].seen[seen_before:]}
        if set(b1_after) <= served_by:
            break
        reply = await h1_request(b1_host, HTTP_PORT, authority=AUTHORITY, request_timeout_s=20)
        assert reply.status == 200 and reply.body == b"b1", reply
    served_by = {s.owner for s in echo["b"].seen[seen_before:]}
    assert set(b1_after) <= served_by, (b1_after, Counter(s.owner for s in echo["b"].seen))
    assert set(restarted) <= set(b1_after)
