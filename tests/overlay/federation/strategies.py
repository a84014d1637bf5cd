"""Hypothesis strategies and small builders shared by the federation tests."""

from __future__ import annotations

import immutables
from hypothesis import strategies as st

from discovery.model import PROTOCOLS, ServiceName
from foundation.spiffe_id import SpiffeId
from overlay.federation.export import ExportView
from overlay.federation.protocol import ExportedService

NAMES = [ServiceName(n, ns) for n in ("api", "db", "web", "cache", "auth") for ns in ("a", "b")]
IDS = [SpiffeId.parse(f"spiffe://site.test/ns/{i}") for i in range(4)]


def svc(
    name: str = "api",
    namespace: str = "default",
    *,
    healthy: int = 1,
    total: int = 1,
    capacity: int = 1,
) -> ExportedService:
    return ExportedService(ServiceName(name, namespace), ("http1",), healthy, total, capacity, ())


@st.composite
def exported_services(draw: st.DrawFn, name: ServiceName) -> ExportedService:
    total = draw(st.integers(1, 50))
    healthy = draw(st.integers(0, total))
    protocols = draw(st.lists(st.sampled_from(PROTOCOLS), min_size=1, unique=True))
    ids = draw(st.lists(st.sampled_from(IDS), unique=True))
    return ExportedService(
        service=name,
        protocols=tuple(sorted(protocols, key=PROTOCOLS.index)),
        healthy_count=healthy,
        total_count=total,
        capacity=draw(st.integers(0, 10**6)),
        spiffe_ids=tuple(sorted(ids, key=str)),
    )


@st.composite
def views(draw: st.DrawFn) -> ExportView:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    return immutables.Map({n: draw(exported_services(n)) for n in names})
