"""The Trio-side holder of passive outlier detection (the decision is :mod:`.outlier`).

Why a separate object: the local cluster reports each outcome here and asks which endpoints
are ejected; the catalog view, ``/catalog`` and the export to peers must show the same
ejections.  So the detector keeps the per-endpoint records and publishes the *active*
ejections in a :class:`~discovery.watch.Watch`, which :func:`serve_effective_catalog` folds
into the catalog snapshot that peering and the admin API read.

Bounded: records exist only for endpoints that failed recently (a success or an expired,
decayed record drops them), and at most ``MAX_TRACKED`` of them; past that, records that are
not ejections are forgotten first.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import immutables
import trio

from discovery.model import Endpoint, EndpointKey, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch, WatchClosed
from gateway.cluster.outlier import EndpointHealth, Outcome, OutlierPolicy, may_eject, observe
from gateway.cluster.traffic_carry import carry_ejection

MAX_TRACKED = 100_000
MAX_COUNTED_SERVICES = 1000
NO_MARKS: immutables.Map[EndpointKey, str] = immutables.Map()

Ejections = immutables.Map[EndpointKey, EndpointHealth]
PolicyFor = Callable[[ServiceName], OutlierPolicy | None]


def _no_detection(_service: ServiceName) -> OutlierPolicy | None:
    return None


class OutlierDetector:
    """Per-endpoint failure records and the active ejections (see the module docstring)."""

    def __init__(
        self,
        policy_for: PolicyFor = _no_detection,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.policy_for = policy_for
        self._clock = clock
        self._health: dict[EndpointKey, EndpointHealth] = {}
        self._active: dict[ServiceName, dict[EndpointKey, float]] = {}
        #: The ejections in force, keyed by endpoint (published on every eject and release),
        #: with those other processes reported (:meth:`set_reported`).
        self.ejections: Watch[Ejections] = Watch(immutables.Map())
        self._reported: Ejections = immutables.Map()
        #: Ejections since start, by ``name.namespace`` (``isthmus_outlier_ejections_total``):
        #: local services only, and at most ``MAX_COUNTED_SERVICES`` of them, then ``other``.
        self.ejected_total: dict[str, int] = {}

    # -- reading ----------------------------------------------------------------------------

    def routable(
        self, service: ServiceName, candidates: tuple[Endpoint, ...]
    ) -> tuple[Endpoint, ...]:
        """``candidates`` without the endpoints ejected now (free when none of ``service`` is)."""
        active = self._active.get(service)
        if not active:
            return candidates
        self._release(service, self._clock())
        active = self._active.get(service)
        if not active:
            return candidates
        return tuple(ep for ep in candidates if ep.key not in active)

    def health(self, key: EndpointKey) -> EndpointHealth | None:
        return self._health.get(key)

    # -- recording --------------------------------------------------------------------------

    def record(self, endpoint: Endpoint, outcome: Outcome, *, service_size: int) -> None:
        """Fold one request's outcome at ``endpoint`` in; ``service_size`` counts the
        service's routable endpoints (ejected ones included) for the percentage cap."""
        policy = self.policy_for(endpoint.service)
        if policy is None:
            return
        key = endpoint.key
        before = self._health.get(key)
        if before is None and outcome == "success":
            return  # the common case: nothing to remember
        now = self._clock()
        self._release(endpoint.service, now)
        active = self._active.get(endpoint.service, {})
        room = may_eject(len(active), service_size, policy.max_ejected_percent)
        after = observe(before or EndpointHealth(), outcome, now=now, policy=policy, room=room)
        if after is before:
            return
        if after.forgettable(now):
            self._health.pop(key, None)
        else:
            if before is None and len(self._health) >= MAX_TRACKED:
                self._trim(now)
            self._health[key] = after
        if after.ejected(now) and not (before is not None and before.ejected(now)):
            assert after.ejected_until is not None
            self._active.setdefault(endpoint.service, {})[key] = after.ejected_until
            self._count_ejection(endpoint.service)
            self._publish()

    def set_policy(self, policy_for: PolicyFor) -> int:
        """Swap in new settings (a reload), carrying each record over as
        :func:`~gateway.cluster.traffic_carry.carry_ejection` decides; republishes the
        ejections if any ended or got shorter.  Returns how many ejections were lifted."""
        now = self._clock()
        self.policy_for = policy_for
        health: dict[EndpointKey, EndpointHealth] = {}
        for key, record in self._health.items():
            after = carry_ejection(record, policy_for(key.service), now)
            if after is not None:
                health[key] = after
        active: dict[ServiceName, dict[EndpointKey, float]] = {}
        for key, record in health.items():
            if record.ejected(now) and record.ejected_until is not None:
                active.setdefault(key.service, {})[key] = record.ejected_until
        before = {k: until for keys in self._active.values() for k, until in keys.items()}
        after_keys = {k for keys in active.values() for k in keys}
        lifted = sum(1 for k, until in before.items() if now < until and k not in after_keys)
        self._health = health
        if active != self._active:
            self._active = active
            self._publish()
        return lifted

    def set_reported(self, reported: Ejections) -> None:
        """Ejections decided elsewhere -- a supervisor's workers, each with its own detector
        (docs/workers.md) -- shown in :attr:`ejections` beside this detector's own, so the
        effective catalog, ``/catalog`` and the export to peers mark them; this detector's
        own routing does not use them.  Their ``ejected_until`` is on this process's clock."""
        if reported == self._reported:
            return
        self._reported = reported
        self._publish()

    # -- internals --------------------------------------------------------------------------

    def _release(self, service: ServiceName, now: float) -> None:
        active = self._active.get(service)
        if not active:
            return
        done = [k for k, until in active.items() if now >= until]
        if not done:
            return
        for k in done:
            del active[k]
        if not active:
            del self._active[service]
        self._publish()

    def _count_ejection(self, service: ServiceName) -> None:
        name = f"{service.name}.{service.namespace}"
        counts = self.ejected_total
        if name not in counts and len(counts) >= MAX_COUNTED_SERVICES:
            name = "other"
        counts[name] = counts.get(name, 0) + 1

    def _trim(self, now: float) -> None:
        for k in [k for k, h in self._health.items() if not h.ejected(now)]:
            del self._health[k]

    def _publish(self) -> None:
        active = {k for keys in self._active.values() for k in keys}
        own: Ejections = immutables.Map({k: self._health[k] for k in active})
        self.ejections.publish(merge_ejections(own, self._reported) if self._reported else own)


def merge_ejections(*sets: Ejections) -> Ejections:
    """The union of ``sets``: an endpoint in several keeps the ejection that ends last."""
    if not sets:
        return immutables.Map()
    ordered = sorted(sets, key=len, reverse=True)  # the largest is kept, the others go in
    out = ordered[0]
    for more in ordered[1:]:
        with out.mutate() as m:
            for key, health in more.items():
                have = m.get(key)
                if have is None or (health.ejected_until or 0.0) > (have.ejected_until or 0.0):
                    m[key] = health
            out = m.finish()
    return out


def with_ejections(
    catalog: Catalog,
    ejections: Ejections,
    now: float,
    failing: immutables.Map[EndpointKey, str] = NO_MARKS,
) -> Catalog:
    """``catalog`` with the ejections in force at ``now`` and the endpoints failing their
    active health check marked (reason per endpoint)."""
    marks = {k: r for k, r in failing.items() if k in catalog}
    marks.update((k, h.reason) for k, h in ejections.items() if h.ejected(now) and k in catalog)
    if not marks and not catalog.ejected:
        return catalog
    return catalog.with_ejected(immutables.Map(marks))


def next_release(ejections: Ejections, now: float) -> float:
    """When the earliest ejection in force ends (``inf``: none)."""
    return min(
        (h.ejected_until for h in ejections.values() if h.ejected_until and h.ejected_until > now),
        default=math.inf,
    )


async def serve_effective_catalog(
    source: Watch[Catalog],
    ejections: Watch[Ejections],
    out: Watch[Catalog],
    failing: Watch[immutables.Map[EndpointKey, str]] | None = None,
    *,
    clock: Callable[[], float] = trio.current_time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish ``source``'s snapshots into ``out`` with the ejections in force marked, again
    on every change of either and when an ejection ends (so peers see it come back)."""
    wake_send, wake_receive = trio.open_memory_channel[None](1)

    async def follow(
        watch: Watch[Catalog] | Watch[Ejections] | Watch[immutables.Map[EndpointKey, str]],
        seen: int,
    ) -> None:
        # ``seen`` is taken before the first fold below, so no change falls in between.
        while True:
            try:
                seen, _ = await watch.wait_newer(seen)
            except WatchClosed:
                return
            # A wake-up already pending folds this change in too.
            with contextlib.suppress(trio.WouldBlock):
                wake_send.send_nowait(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, source, source.count)
        nursery.start_soon(follow, ejections, ejections.count)
        if failing is not None:
            nursery.start_soon(follow, failing, failing.count)
        task_status.started()
        folded: tuple[Catalog, frozenset[tuple[EndpointKey, str]]] | None = None
        while True:
            now = clock()
            marks = failing.latest if failing is not None else NO_MARKS
            current = with_ejections(source.latest, ejections.latest, now, marks)
            # Publish only a real change: the same source snapshot with the same marks is
            # the same view (a wake-up at an ejection's end may find nothing ended yet).
            state = (source.latest, frozenset(current.ejected.items()))
            if folded is None or state[0] is not folded[0] or state[1] != folded[1]:
                folded = state
                out.publish(current)
            with trio.move_on_after(max(0.0, next_release(ejections.latest, now) - now)):
                await wake_receive.receive()
