"""The pure catalog core: apply source events to a snapshot, get the new snapshot and the diff.

Theory of operation
-------------------
A :class:`~discovery.snapshot.Catalog` keeps, per source, the *view* that source reported
(EndpointKey -> Report) and the *merged view* computed from all views by the precedence rule of
:mod:`discovery.merge`.  Applying an event changes one source's view (or its state) and then
re-merges only the keys whose reports changed: each re-merge looks at <= one report per source,
so a batch of k changes costs O(k x sources x log n) on the persistent maps, independent of the
catalog size n.  ``Resynced`` is the exception by nature: comparing a full set costs O(set).

Every step also exists as a resumable generator (:func:`apply_many_steps`,
:func:`expire_steps`, see :mod:`discovery.steps`) that pauses after at most ``slice_items``
items of work -- an endpoint compared, checked, stored or re-merged, a diff entry computed -- so
the service's trio adapter can let requests run between slices: a 100k-endpoint resync is many
short steps of the event loop instead of one of nearly a second.  The result is the same as the
synchronous call's; only one snapshot is produced, at the end.

Per source state machine (times are the caller's ``now``; the core never reads a clock)::

    fresh --SourceStale--> stale(grace_until = now + grace) --expire(now >= grace_until)--> expired
      ^                      |                                                                |
      +---- SourceFresh / Resynced --------------------------------------------------------+

* stale: still listed, still routable until ``grace_until``, shown as stale;
* expired: the source's view is hidden from the merged view (its endpoints disappear unless
  another source reports them) but kept, so that ``SourceFresh`` ("my view is unchanged")
  restores it; ``Resynced`` replaces it.  Added/Updated/Removed change the view but do not make
  a stale source fresh: only a full confirmation does.

Event semantics: Added and Updated are both upserts (a source that lost track of what it said
must not be able to wedge the catalog); Removed of an unknown key is a no-op; Resynced replaces
the source's whole view (last duplicate wins).  Invalid input never raises: each bad endpoint or
event is refused, listed in ``Diff.rejected``, and leaves the catalog as it was.

Invariants (checked by the property tests after every event): the merged view equals
:func:`discovery.merge.recompute` of the views; ``size`` counts the merged entries; versions
never go down and go up by exactly one per changing call; the diff is exactly the difference
between the two snapshots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import immutables

from discovery.diff import Diff, Rejection
from discovery.events import Added, Event, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.merge import Policy, merge_entry, visible_sources
from discovery.model import Endpoint, EndpointKey, ServiceName
from discovery.snapshot import Catalog, CatalogEntry, Report, SourceState
from discovery.steps import UNSLICED, Steps, check_slice, complete
from discovery.validate import endpoint_problem, key_problem, source_problem

__all__ = [
    "apply",
    "apply_many",
    "apply_many_steps",
    "expire",
    "expire_steps",
    "next_expiry",
    "routable",
    "serving_endpoints",
]

_View = immutables.Map[EndpointKey, Report]
_ViewMut = Any  # immutables.MapMutation: typed loosely, its stubs lack __setitem__/__delitem__


def apply(catalog: Catalog, event: Event, *, now: float, policy: Policy) -> tuple[Catalog, Diff]:
    """Apply one event.  Returns ``(catalog, diff)``; the same catalog object if nothing changed."""
    return apply_many(catalog, (event,), now=now, policy=policy)


def apply_many(
    catalog: Catalog, events: Iterable[Event], *, now: float, policy: Policy
) -> tuple[Catalog, Diff]:
    """Apply events in order as one step: one new version, one diff covering all of them."""
    return complete(apply_many_steps(catalog, events, now=now, policy=policy, slice_items=UNSLICED))


def apply_many_steps(
    catalog: Catalog,
    events: Iterable[Event],
    *,
    now: float,
    policy: Policy,
    slice_items: int,
) -> Steps[tuple[Catalog, Diff]]:
    """:func:`apply_many` as a resumable computation: yields after <= ``slice_items`` items."""
    batch = _Batch(catalog, policy, now, check_slice(slice_items))
    for event in events:
        yield from batch.apply(event)
    return (yield from batch.finish())


def expire(catalog: Catalog, now: float, *, policy: Policy) -> tuple[Catalog, Diff]:
    """Expire every stale source whose grace ended at or before ``now``.

    Needs the policy only for precedence when re-merging what the expired sources reported.
    """
    return complete(expire_steps(catalog, now, policy=policy, slice_items=UNSLICED))


def expire_steps(
    catalog: Catalog, now: float, *, policy: Policy, slice_items: int
) -> Steps[tuple[Catalog, Diff]]:
    """:func:`expire` as a resumable computation: yields after <= ``slice_items`` items."""
    batch = _Batch(catalog, policy, now, check_slice(slice_items))
    for state in catalog.sources.values():
        if not state.expired and state.grace_until is not None and now >= state.grace_until:
            yield from batch.set_expired(state.name)
    return (yield from batch.finish())


def next_expiry(catalog: Catalog) -> float | None:
    """When :func:`expire` will next have work to do (None: no source is stale)."""
    times = [
        s.grace_until
        for s in catalog.sources.values()
        if s.grace_until is not None and not s.expired
    ]
    return min(times) if times else None


def routable(catalog: Catalog, service: ServiceName, now: float) -> tuple[Endpoint, ...]:
    """The endpoints of ``service`` a router may use at ``now``: healthy, and confirmed by a
    fresh source or by a stale one still within its grace.  Sorted by key (deterministic)."""
    endpoints = catalog.services.get(service)
    if endpoints is None:
        return ()
    return tuple(
        endpoints[k].endpoint
        for k in sorted(endpoints.keys())
        if catalog.is_routable(endpoints[k], now)
    )


def serving_endpoints(catalog: Catalog, now: float) -> Iterator[Endpoint]:
    """One routable endpoint of every service that has one (services in no particular order).

    What a routing view needs of the local catalog is *which services this site can serve*;
    walking every endpoint for that costs O(endpoints) -- ~100 ms of one event-loop step at
    100k -- on every catalog change.  Stopping at each service's first routable endpoint makes
    it O(services) in the common case.
    """
    for endpoints in catalog.services.values():
        for entry in endpoints.values():
            if catalog.is_routable(entry, now):
                yield entry.endpoint
                break


class _Batch:
    """Mutable scratch space for one apply step; produces one frozen snapshot at the end.

    Work is counted in ``work`` (one per endpoint compared, checked, stored, re-merged or
    diffed); each loop calls ``yield from self._pause()`` only when the count reached
    ``slice_items``, so the bookkeeping costs one comparison per item.
    """

    def __init__(
        self, catalog: Catalog, policy: Policy, now: float, slice_items: int = UNSLICED
    ) -> None:
        self.slice_items = slice_items
        self.work = 0
        self.old = catalog
        self.policy = policy
        self.now = now
        self.states: dict[str, SourceState] = {}
        self.views: dict[str, _View | _ViewMut] = dict(catalog.views.items())
        self.dirty_views: set[str] = set()
        self.services: dict[ServiceName, _ViewMut] = {}
        self.original: dict[EndpointKey, CatalogEntry | None] = {}
        self.size = catalog.size
        self.changed = False
        self.rejected: list[Rejection] = []
        self._ordered: list[str] | None = None

    def _pause(self) -> Iterator[int]:
        """End the current slice (called once ``work`` reached ``slice_items``)."""
        done, self.work = self.work, 0
        yield done

    # -- events -------------------------------------------------------------------------------

    def apply(self, event: Event) -> Iterator[int]:
        self.work += 1
        if self.work >= self.slice_items:
            yield from self._pause()
        source = getattr(event, "source", None)
        problem = source_problem(event)
        if problem is not None:
            name = source if isinstance(source, str) else "?"
            self.rejected.append(Rejection(name, None, problem))
            return
        if isinstance(event, Added | Updated):
            self._upsert(event.source, event.endpoint, event.version)
        elif isinstance(event, Removed):
            self._remove(event.source, event.key)
        elif isinstance(event, Resynced):
            yield from self._resync(event)
        elif isinstance(event, SourceStale):
            self._stale(event)
        else:
            yield from self._fresh(event)

    def _upsert(self, source: str, endpoint: Endpoint, version: str) -> None:
        problem = endpoint_problem(endpoint)
        if problem is not None:
            self.rejected.append(Rejection(source, _safe_key(endpoint), problem))
            return
        self._ensure_source(source)
        key = endpoint.key
        view = self._writable(source)
        if key not in view and len(view) >= self.policy.max_endpoints_per_source:
            limit = self.policy.max_endpoints_per_source
            self.rejected.append(Rejection(source, key, f"source already has {limit} endpoints"))
            return
        view[key] = Report(endpoint, version, self.now)
        self.changed = True
        self._refresh(key)

    def _remove(self, source: str, key: EndpointKey) -> None:
        problem = key_problem(key)
        if problem is not None:
            self.rejected.append(Rejection(source, None, problem))
            return
        current = self.views.get(source)
        if current is None or key not in current:
            return
        del self._writable(source)[key]
        self.changed = True
        self._refresh(key)

    def _resync(self, event: Resynced) -> Iterator[int]:
        """Replace the source's view by ``event.endpoints`` (last duplicate of a key wins).

        This loop is O(set) by nature, so it is written to allocate nothing that outlives one
        iteration for the endpoints that did not change (the common case): an endpoint equal to
        the stored one was checked when it was stored, and "seen again" is recorded as the
        ``id()`` of its stored Report -- an int, invisible to the cyclic GC, whose full-heap
        passes would otherwise dominate a resync of a large catalog.
        """
        source = event.source
        old = self._readable(source)
        seen: set[int] = set()  # id() of old reports confirmed (or replaced) by this resync
        changed: dict[EndpointKey, Endpoint] = {}  # new or different endpoints, checked
        for endpoint in event.endpoints:
            self.work += 1
            if self.work >= self.slice_items:
                yield from self._pause()
            key: EndpointKey | None = None
            report: Report | None = None
            if isinstance(endpoint, Endpoint):
                key = endpoint.key
                try:
                    report = old.get(key)
                except TypeError:  # unhashable garbage in a field
                    key = None
            if report is not None and (report.endpoint is endpoint or report.endpoint == endpoint):
                seen.add(id(report))
                if changed:
                    changed.pop(key, None)  # type: ignore[arg-type]
                continue
            problem = endpoint_problem(endpoint)
            if problem is not None:
                self.rejected.append(Rejection(source, key, problem))
                continue
            key = endpoint.key
            changed[key] = endpoint
            if report is not None:
                seen.add(id(report))
        new_keys = 0
        for key in changed:
            self.work += 1
            if self.work >= self.slice_items:
                yield from self._pause()
            if key not in old:
                new_keys += 1
        limit = self.policy.max_endpoints_per_source
        if len(seen) + new_keys > limit:
            total = len(seen) + new_keys
            reason = f"resync of {total} endpoints exceeds the limit of {limit}; kept old view"
            self.rejected.append(Rejection(source, None, reason))
            return
        self._ensure_source(source)
        was_expired = self._state(source).expired
        view = self._writable(source)
        touched: list[EndpointKey] = []
        for key, endpoint in changed.items():
            self.work += 1
            if self.work >= self.slice_items:
                yield from self._pause()
            view[key] = Report(endpoint, event.version, self.now)
            touched.append(key)
        if len(seen) < len(old):
            for key, report in old.items():
                self.work += 1
                if self.work >= self.slice_items:
                    yield from self._pause()
                if id(report) not in seen:
                    del view[key]
                    touched.append(key)
        if touched:
            self.changed = True  # the view changed even if the merged view did not
        self._confirm(source, event.version)
        if was_expired:  # the whole view becomes visible again
            removed = [key for key in touched if key not in view]
            touched = [*removed, *self._readable(source).keys()]
        yield from self._refresh_all(touched)

    def _stale(self, event: SourceStale) -> None:
        self._ensure_source(event.source)
        state = self._state(event.source)
        if state.stale:
            replaced = dataclasses.replace(state, reason=event.reason)
        else:
            grace = self.policy.grace_for(event.source)
            replaced = dataclasses.replace(
                state, stale_since=self.now, grace_until=self.now + grace, reason=event.reason
            )
        self._set_state(replaced)

    def _fresh(self, event: SourceFresh) -> Iterator[int]:
        self._ensure_source(event.source)
        was_expired = self._state(event.source).expired
        self._confirm(event.source, event.version)
        if was_expired:
            yield from self._refresh_all(self._readable(event.source).keys())

    def set_expired(self, source: str) -> Iterator[int]:
        self._set_state(dataclasses.replace(self._state(source), expired=True))
        yield from self._refresh_all(self._readable(source).keys())

    def _refresh_all(self, keys: Iterable[EndpointKey]) -> Iterator[int]:
        """Re-merge ``keys`` (each once is enough; a repeat is a cheap no-op)."""
        for key in keys:
            self.work += 1
            if self.work >= self.slice_items:
                yield from self._pause()
            self._refresh(key)

    # -- state helpers --------------------------------------------------------------------------

    def _confirm(self, source: str, version: str) -> None:
        state = self._state(source)
        self._set_state(
            dataclasses.replace(
                state,
                version=version,
                confirmed_at=self.now,
                stale_since=None,
                grace_until=None,
                reason="",
                expired=False,
            )
        )

    def _ensure_source(self, source: str) -> None:
        if source not in self.states and source not in self.old.sources:
            self._set_state(SourceState(source, confirmed_at=self.now))
        if source not in self.views:
            self.views[source] = immutables.Map()
            self._ordered = None

    def _state(self, source: str) -> SourceState:
        state = self.states.get(source) or self.old.sources.get(source)
        return state if state is not None else SourceState(source)

    def _set_state(self, state: SourceState) -> None:
        if state != self._state(state.name) or state.name not in self.old.sources:
            if state.expired != self._state(state.name).expired:
                self._ordered = None
            self.states[state.name] = state
            self.changed = True

    def _readable(self, source: str) -> _View:
        """The source's current view as a Map (finishing a pending mutation if needed)."""
        current = self.views.get(source)
        if current is None:
            return immutables.Map()
        if isinstance(current, immutables.Map):
            return current
        finished: _View = current.finish()
        self.views[source] = finished
        self.dirty_views.add(source)
        return finished

    def _writable(self, source: str) -> _ViewMut:
        current = self.views.get(source)
        if current is None:
            current = immutables.Map()
        if isinstance(current, immutables.Map):
            current = current.mutate()
            self.views[source] = current
        self.dirty_views.add(source)
        return current

    # -- merged view --------------------------------------------------------------------------

    def _ordered_sources(self) -> list[str]:
        if self._ordered is None:
            states = {**dict(self.old.sources.items()), **self.states}
            self._ordered = visible_sources(self.policy, states, self.views.keys())
        return self._ordered

    def _merged_get(self, key: EndpointKey) -> CatalogEntry | None:
        mut = self.services.get(key.service)
        if mut is not None:
            entry: CatalogEntry | None = mut.get(key)
            return entry
        return self.old.get(key)

    def _refresh(self, key: EndpointKey) -> None:
        old = self._merged_get(key)
        new = merge_entry(key, self._ordered_sources(), self.views)
        if new == old:
            return
        if key not in self.original:
            self.original[key] = old
        mut = self.services.get(key.service)
        if mut is None:
            mut = self.old.services.get(key.service, immutables.Map()).mutate()
            self.services[key.service] = mut
        if new is None:
            del mut[key]
            self.size -= 1
        else:
            if old is None:
                self.size += 1
            mut[key] = new
        self.changed = True

    def finish(self) -> Steps[tuple[Catalog, Diff]]:
        old = self.old
        if not self.changed:
            return old, Diff(old.version, rejected=tuple(self.rejected))
        views = old.views.mutate()
        for name in self.dirty_views | (self.views.keys() - old.views.keys()):
            views[name] = self._readable(name)
        services = old.services.mutate()
        for service, mut in self.services.items():
            self.work += 1
            if self.work >= self.slice_items:
                yield from self._pause()
            endpoints = mut.finish()
            if len(endpoints):
                services[service] = endpoints
            elif service in services:
                del services[service]
        sources = old.sources.mutate()
        for name, state in self.states.items():
            sources[name] = state
        catalog = Catalog(
            version=old.version + 1,
            sources=sources.finish(),
            views=views.finish(),
            services=services.finish(),
            size=self.size,
            ejected=old.ejected,
        )
        added: set[EndpointKey] = set()
        updated: set[EndpointKey] = set()
        removed: set[EndpointKey] = set()
        for key, before in self.original.items():
            self.work += 1
            if self.work >= self.slice_items:
                yield from self._pause()
            after = catalog.get(key)
            if before is None and after is not None:
                added.add(key)
            elif after is None and before is not None:
                removed.add(key)
            elif before != after:
                updated.add(key)
        changed_sources = frozenset(
            name for name, state in self.states.items() if old.sources.get(name) != state
        )
        diff = Diff(
            catalog.version,
            frozenset(added),
            frozenset(updated),
            frozenset(removed),
            changed_sources,
            tuple(self.rejected),
        )
        return catalog, diff


def _safe_key(endpoint: object) -> EndpointKey | None:
    """The key of a possibly malformed endpoint, if it has a usable (hashable) one."""
    if not isinstance(endpoint, Endpoint):
        return None
    key = endpoint.key
    try:
        hash(key)
    except TypeError:
        return None
    return key
