"""Active health checks: probe each endpoint of the services that ask for it, on an interval.

Why a task of its own: probes run whether or not traffic flows, so an endpoint that died while
idle is out of rotation (and out of the counts exported to peers) before the first request
finds out.  The failing endpoints are published in a :class:`~discovery.watch.Watch` (key ->
reason); the local cluster leaves them out and the effective catalog marks them like
ejections.

Bounded: each probe has ``timeout`` (connect, and for HTTP the status line, at most
``MAX_STATUS_LINE`` bytes read), at most ``MAX_PARALLEL`` probes run at once, and states are
kept only for endpoints listed in the catalog now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import immutables
import trio

from discovery.model import Endpoint, EndpointKey, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.cluster.health_check import CheckPolicy, CheckState, after_probe

log = logging.getLogger(__name__)

MAX_PARALLEL = 64
MAX_STATUS_LINE = 8192

Failing = immutables.Map[EndpointKey, str]
CheckFor = Callable[[ServiceName], CheckPolicy | None]


@dataclass
class CheckMemory:
    """The checker's per-endpoint states and next-probe times.

    Owned by the gateway, not by the checker task, so a checker restarted by a reload starts
    from what the old one knew (as :func:`~gateway.cluster.traffic_carry.carry_checks`
    decides) instead of calling every failing endpoint healthy again."""

    states: dict[EndpointKey, CheckState] = field(default_factory=dict)
    due: dict[EndpointKey, float] = field(default_factory=dict)


def failing_of(states: Mapping[EndpointKey, CheckState]) -> Failing:
    """The unhealthy endpoints of ``states`` and why (what the checker publishes)."""
    return immutables.Map({k: s.reason for k, s in states.items() if not s.healthy})


async def probe(endpoint: Endpoint, policy: CheckPolicy) -> str | None:
    """One probe: None if good, else what failed.  Never raises for the endpoint's faults."""
    with trio.move_on_after(policy.timeout):
        try:
            stream = await trio.open_tcp_stream(endpoint.address, endpoint.port)
        except OSError as exc:
            return f"connect failed: {exc.strerror or exc}"
        async with stream:
            if policy.kind == "tcp" or endpoint.protocol not in ("http1",):
                return None
            host = str(endpoint.service)
            await stream.send_all(
                f"GET {policy.path} HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: isthmus-health-check\r\nConnection: close\r\n\r\n".encode("ascii")
            )
            head = b""
            while b"\r\n" not in head and len(head) < MAX_STATUS_LINE:
                data = await stream.receive_some(MAX_STATUS_LINE - len(head))
                if not data:
                    break
                head += data
            line = head.split(b"\r\n", 1)[0].split(b" ")
            if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
                return "not an HTTP/1.1 response"
            status = int(line[1])
            return None if 200 <= status < 400 else f"HTTP {status}"
    return f"no answer within {policy.timeout:g}s"


async def serve_health_checks(
    catalog: Watch[Catalog],
    check_for: CheckFor,
    out: Watch[Failing],
    *,
    memory: CheckMemory | None = None,
    tick: float = 0.1,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Probe every listed endpoint of each checked service every ``interval``; publish the
    unhealthy ones into ``out`` when the set (or a reason) changes.  ``memory`` holds the
    states (a fresh one when not given); the caller must not change it while this runs."""
    memory = CheckMemory() if memory is None else memory
    states, due = memory.states, memory.due
    limiter = trio.CapacityLimiter(MAX_PARALLEL)
    task_status.started()

    async def one(endpoint: Endpoint, policy: CheckPolicy) -> None:
        async with limiter:
            try:
                error = await probe(endpoint, policy)
            except (OSError, trio.BrokenResourceError) as exc:
                error = f"probe failed: {exc}"
        key = endpoint.key
        before = states.get(key, CheckState())
        after = after_probe(before, error, policy)
        states[key] = after
        if after.healthy != before.healthy:
            log.warning(
                "%s:%d of %s: %s",
                endpoint.address,
                endpoint.port,
                endpoint.service,
                "healthy again" if after.healthy else after.reason,
            )

    while True:
        now = trio.current_time()
        snapshot = catalog.latest
        listed: set[EndpointKey] = set()
        async with trio.open_nursery() as nursery:
            for service in snapshot.service_names():
                policy = check_for(service)
                if policy is None:
                    continue
                for entry in snapshot.endpoints(service):
                    key = entry.key
                    listed.add(key)
                    if due.get(key, 0.0) <= now:
                        due[key] = now + policy.interval
                        nursery.start_soon(one, entry.endpoint, policy)
        for key in [k for k in due if k not in listed]:
            del due[key]
            states.pop(key, None)
        failing = failing_of(states)
        if failing != out.latest:
            out.publish(failing)
        await trio.sleep(tick)
