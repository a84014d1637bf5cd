"""The gateway process: one root nursery owning identity, discovery, peering and admin.

Start-up order matters and each step fails loudly: the identity files are loaded and verified
first (a gateway that cannot prove who it is must not start), the parts are wired together
(:func:`build_gateway`, nothing started), then started in order: identity rotation and
discovery, the east-west listener and the dialers, the listeners of local callers, the admin
API (one ``start_*`` function each).  ``task_status.started`` receives the
bound ports, so tests and the demo can use port 0.  Shutdown is cancellation of the root
nursery: every task ends, every link is closed, nothing is left behind.

Parts a config reload may stop or replace alone (each caller listener and service port, the
identity watcher, discovery, each peer's dialer) run in their own cancel scope inside the root
nursery; :mod:`gateway.reload` plans and applies a reload.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import immutables
import trio

from discovery.backoff import Backoff
from discovery.snapshot import Catalog
from discovery.sources.mdns_announce import AnnouncedService, serve_mdns_announcer
from discovery.steps import Steps
from discovery.watch import Watch
from gateway.admin.explain_view import explain_query
from gateway.admin.health import healthz_view
from gateway.admin.overlay_view import overlay_view
from gateway.admin.page import page_views
from gateway.admin.server import Action, Reply, Text, serve_admin
from gateway.admin.sliced import Sliced
from gateway.admin.views import imports_json_steps, routes_json_steps
from gateway.cluster.balancer import balancer_resolver
from gateway.cluster.fair_share import SiteShares
from gateway.cluster.health_checker import CheckMemory, Failing
from gateway.cluster.local import LocalCluster
from gateway.cluster.outlier_config import policy_resolver
from gateway.cluster.outlier_detector import OutlierDetector, serve_effective_catalog
from gateway.cluster.outlier_metrics import outlier_gauges
from gateway.commands.catalog import catalog_answer
from gateway.config.consul_gateways import gateways_consul, uses_consul
from gateway.config.fleet import fleet_consul
from gateway.config.model import (
    AnnounceServiceConfig,
    GatewayConfig,
    LimitsConfig,
    ServicePortConfig,
)
from gateway.consul_gateways.agent import open_agent
from gateway.consul_gateways.directory import PeerDirectory, watch_gateways
from gateway.consul_gateways.meta import registration
from gateway.consul_gateways.register import keep_registered
from gateway.fleet.document import FleetDocument
from gateway.fleet.site_start import SiteFleet, site_state
from gateway.fleet.state import FleetState
from gateway.fleet.watch import serve_fleet
from gateway.http.caller_headers import CallerHeaderRules
from gateway.inbound.east_west import EastWestHandler
from gateway.inbound.explain_from_answer import FromAnswerer
from gateway.listener.bind import start_listener
from gateway.listener.drain import Drain
from gateway.listener.h1 import h1_limits
from gateway.listener.http import serve_http_listener
from gateway.listener.service_port import serve_service_port
from gateway.listener.sni import serve_sni_listener
from gateway.observe.access_log import AccessLog
from gateway.observe.metrics import Registry
from gateway.observe.observer import Observer
from gateway.observe.state_gauges import (
    buffer_budget_gauges,
    catalog_gauges_steps,
    identity_gauges,
    import_gauges,
    link_gauges,
)
from gateway.reload.apply import ConfigReloader, peer_specs
from gateway.reload.catalog import CatalogRunner
from gateway.reload.identity import WATCHER_KEY, bundle_sources, identity_watcher
from gateway.reload.listeners import CallerBind, bind_key, caller_binds
from gateway.reload.plan import config_version
from gateway.reload.scoped import ScopedTasks
from gateway.reload.traffic import health_checks_of
from gateway.router.explain_run import limits_of, run_explain
from gateway.router.retry import Resilience, resilience_resolver
from gateway.router.route import Router, known_services
from gateway.routes.mirrors import mirror_gauges
from gateway.routes.sources import RouteSources
from gateway.upstream.pool import UpstreamPool
from gateway.workers.role import Handoff, Role, Supervision
from overlay.h2.buffer_budget import BufferBudget
from overlay.h2.limits import H2Limits
from overlay.identity.expiry import watch_own_identity
from overlay.identity.rotation import Identity
from overlay.identity.state import BundleSource, load_identity_state
from overlay.link.handoff import WORKER_LINK_SNI
from overlay.peering.config import PeeringSettings
from overlay.peering.peers import Peering

log = logging.getLogger("isthmus.gateway")


@dataclass(frozen=True, slots=True)
class GatewayPorts:
    """The ports the gateway bound (None for a listener kind it does not have)."""

    east_west: int | None
    admin: int | None
    reloader: ConfigReloader | None = None  # None when not started from a file
    drain: Drain | None = None  # the caller listeners' (none in a supervisor: its workers')


@dataclass
class Gateway:
    """The live parts of a running gateway (for the start steps, the admin API and tests)."""

    config: GatewayConfig
    identity: Identity
    catalog: Watch[Catalog]
    peering: Peering
    pool: UpstreamPool
    router: Router
    observer: Observer | None
    cluster: LocalCluster
    east_west: EastWestHandler
    sources: CatalogRunner  # discovery in its own cancel scope (a reload restarts it)
    scoped: ScopedTasks  # caller listeners, service ports, identity watcher: one scope each
    #: ``catalog`` with the endpoints outlier detection ejected marked (what peers and
    #: ``/catalog`` see), kept up to date by :func:`serve_effective_catalog`.
    effective_catalog: Watch[Catalog] = field(default_factory=lambda: Watch(Catalog()))
    outlier: OutlierDetector = field(default_factory=OutlierDetector)
    #: Endpoints failing their active health check (key -> reason).
    failing: Watch[Failing] = field(default_factory=lambda: Watch(immutables.Map()))
    #: The health checker's states, kept across a reload's restart of it.
    checks: CheckMemory = field(default_factory=CheckMemory)
    #: Local and imported ``[[routes]]`` -> ``router.rules``; owned routes -> the exports.
    route_sources: RouteSources | None = None
    #: Replicas discovered in Consul; every change of the peer set goes through it.
    peer_directory: PeerDirectory = field(default_factory=PeerDirectory)
    #: Shutdown's drain: the caller listeners stop accepting, requests in flight finish.
    drain: Drain = field(default_factory=Drain)


#: Bytes a link asks of its TLS stream per read (fixed: docs/limits.md).
LINK_READ_SIZE = 256 * 1024


def peering_settings(config: GatewayConfig) -> PeeringSettings:
    p, lim = config.peering, config.limits
    return PeeringSettings(
        ping_interval=p.ping_interval_s,
        ping_timeout=p.ping_timeout_s,
        connect_timeout=p.connect_timeout_s,
        handshake_timeout=lim.tls_handshake_timeout_s,
        ack_timeout=p.ack_timeout_s,
        import_grace=p.import_grace_s,
        backoff=Backoff(base_s=p.backoff_base_s, cap_s=p.backoff_cap_s, floor_s=p.backoff_floor_s),
        startup_grace=p.startup_grace_s,
        max_links_per_peer=lim.link_max_per_peer,
        max_concurrent_handshakes=lim.max_concurrent_handshakes,
        h2_limits=H2Limits(
            max_concurrent_streams=lim.link_max_concurrent_streams,
            stream_window=lim.link_stream_window,
            stream_window_max=lim.link_stream_window_max,
            window_budget=BufferBudget(lim.buffer_budget),  # one per gateway: all its links
            connection_window=lim.link_connection_window,
            max_header_list_size=lim.h2_max_header_list_bytes,
            max_frame_size=lim.link_max_frame_size,
            max_outbound_buffer=lim.link_outbound_buffer,
            # A link's reads take whole DATA frames (64 KiB) several at a time: a 64 KiB read
            # cuts most frames in two (two pieces to deliver, joined again by the reader);
            # measured with scripts/bench_link.py: ~8 % less CPU per byte of a bulk tunnel.
            read_size=LINK_READ_SIZE,
            engine=lim.link_h2_engine,
        ),
    )


def announced(a: AnnounceServiceConfig) -> AnnouncedService:
    return AnnouncedService(
        service=a.service,
        address=str(a.address),
        port=a.port,
        namespace=a.namespace,
        protocol=a.protocol,
        spiffe_id=a.spiffe_id,
        weight=a.weight,
        locality=a.locality,
        service_type=a.service_type,
        ttl_s=a.ttl_s,
    )


def admin_views(gw: Gateway, reloader: ConfigReloader | None = None) -> dict[str, Any]:
    config = gw.config
    views: dict[str, Any] = {
        "/healthz": healthz_view(config.site.name, gw.identity),
        # Large on a large catalog: built and encoded a slice per loop step (admin/sliced.py)
        # from the snapshots current when the request came.
        "/catalog": lambda: catalog_answer(gw.effective_catalog.latest, trio.current_time()),
        "/links": gw.peering.status,
        "/imports": lambda: Sliced(
            imports_json_steps(gw.peering.imports.latest, trio.current_time())
        ),
        "/routes": lambda: Sliced(
            routes_json_steps(
                gw.peering.routes.latest,
                config.site.mesh_domain,
                extra={} if gw.route_sources is None else gw.route_sources.status(),
            )
        ),
    }
    registry = None if gw.observer is None else gw.observer.registry
    if registry is not None and config.metrics.enabled:
        views["/metrics"] = lambda: Sliced(metrics_text(registry))
    counted = gw.observer if registry is not None and config.metrics.enabled else None
    views["/overlay"] = overlay_view(config.site.name, gw.peering, gw.effective_catalog, counted)
    views.update(page_views())  # the overlay map page at "/" (docs/overlay-map.md)
    if reloader is not None:
        views["/config"] = reloader.status
        if reloader.fleet is not None:
            views["/fleet"] = reloader.fleet.status
    return views


def metrics_text(registry: Registry) -> Steps[Text]:
    """The ``/metrics`` answer, rendered a collector (or a slice of the catalog) per step."""
    body = yield from registry.render_steps()
    return Text(body, "text/plain; version=0.0.4; charset=utf-8")


def observer_for(
    config: GatewayConfig, catalog: Watch[Catalog], peering: Peering
) -> Observer | None:
    """Metrics (``[metrics]``, on by default) and the access log (``[access_log]``), with
    the gauges read from the live state at scrape time; None when both are off."""
    al = config.access_log
    if not config.metrics.enabled and not al.enabled:
        return None
    observer = Observer(
        local_site=config.site.name,
        mesh_domain=config.site.mesh_domain,
        sites=[p.name for p in config.peers],
        known=known_services(catalog, peering.imports),
        access_log=AccessLog(al.path, al.sample_rate) if al.enabled else None,
    )
    registry = observer.registry
    registry.collector(lambda: link_gauges(peering.status()))
    registry.collector(lambda: import_gauges(peering.imports.latest, trio.current_time()))
    registry.sliced_collector(lambda: catalog_gauges_steps(catalog.latest, trio.current_time()))
    registry.collector(lambda: identity_gauges(peering.identity.state, dt.datetime.now(dt.UTC)))
    budget = peering.settings.h2_limits.window_budget if peering.settings.h2_limits else None
    registry.collector(lambda: buffer_budget_gauges(budget))
    return observer


def admin_actions(reloader: ConfigReloader | None) -> dict[str, Action]:
    """The admin API's POST paths: ``/config/reload`` (200 applied/unchanged, 422 rejected)."""
    if reloader is None:
        return {}

    async def reload() -> Reply:
        outcome = await reloader.reload("admin API")
        return Reply(422 if outcome.result == "rejected" else 200, outcome.json())

    return {"/config/reload": reload}


async def load_identity(config: GatewayConfig) -> tuple[Identity, list[BundleSource]]:
    """Build step 1: the identity files, loaded and verified off the event loop (a gateway
    that cannot prove who it is must not start)."""
    ident = config.identity
    bundles = bundle_sources(ident)
    state = await trio.to_thread.run_sync(
        functools.partial(load_identity_state, ident.svid, ident.key, bundles)
    )
    log.info("site %s starts as %s", config.site.name, state.spiffe_id)
    return Identity(state), bundles


def build_gateway(config: GatewayConfig, identity: Identity, *, role: Role = "single") -> Gateway:
    """Build step 2: the parts wired together, nothing started (the local cluster and the
    inbound side, peering, the router).

    ``role`` "worker": a data-plane worker's parts (docs/workers.md): its peering keeps worker
    links only (streams, never federation); its catalog and imports come from the supervisor.
    """
    catalog: Watch[Catalog] = Watch(Catalog())
    peers = peer_specs(config)
    lim = config.limits
    pool = UpstreamPool(h1_limits=h1_limits(lim))
    outlier = OutlierDetector(policy_resolver(config.outlier_detection, config.service_traffic))
    effective: Watch[Catalog] = Watch(Catalog())
    failing: Watch[Failing] = Watch(immutables.Map())
    cluster = LocalCluster(
        outlier=outlier,
        balancer_for=balancer_resolver(config.service_traffic),
        failing=failing,
        locality=config.site.locality,
        locality_min_healthy_percent=config.site.locality_min_healthy_percent,
        local_site=config.site.name,
        catalog=catalog,
        pool=pool,
        caller_headers=CallerHeaderRules(config.site.caller_headers, config.caller_headers),
    )
    east_west = EastWestHandler(
        local_site=config.site.name,
        mesh_domain=config.site.mesh_domain,
        cluster=cluster,
        export_rules=config.exports,
        policies=config.policies,
        route_timeout=lim.route_timeout_s,
        tunnel_idle_timeout=lim.idle_timeout_s,
        tunnel_buffer_bytes=lim.tunnel_buffer_bytes,
        stream_idle_timeout=lim.stream_idle_timeout_s,
        max_stream_duration=lim.max_stream_duration_s,
    )
    peering = Peering(
        local_site=config.site.name,
        identity=identity,
        peers=peers,
        catalog=effective,
        export_rules=config.exports,
        settings=peering_settings(config),
        stream_handler=east_west,
        mode="worker" if role == "worker" else "primary",
        server_name=WORKER_LINK_SNI if role == "worker" else None,
    )
    observer = observer_for(config, catalog, peering)
    if observer is not None:
        observer.registry.collector(lambda: outlier_gauges(outlier))
    east_west.observer = observer  # built before peering, which hands it the streams
    router = Router(
        local_site=config.site.name,
        mesh_domain=config.site.mesh_domain,
        routes=peering.routes,
        outbound=peering.outbound,
        local=cluster,
        route_timeout=lim.route_timeout_s,
        known=known_services(catalog, peering.imports),
        peer_sites=[p.name for p in config.peers],
        observer=observer,
        caller_shares=SiteShares(limit=lim.link_caller_max_streams, wait_s=lim.link_caller_wait_s),
        resilience=Resilience(resilience_resolver(config.service_traffic)),
        debug=config.debug,
        replicas=peering.replica_count,
    )
    router.explainer = functools.partial(
        run_explain, router, cluster, limits=limits_of(lim, cluster.connect_timeout)
    )
    east_west.explain_from = FromAnswerer(  # isthmus explain --from this site, asked at a peer
        local_site=config.site.name,
        peers=config.debug.explain_peers,
        explainer=router.explainer,
        route_timeout=lim.route_timeout_s,
    )
    router.mirrors.budget.limit = lim.mirror_buffer_budget  # live: the reload sets it too
    if observer is not None:
        observer.registry.collector(lambda: mirror_gauges(router.mirrors))
    return Gateway(
        config,
        identity,
        catalog,
        peering,
        pool,
        router,
        observer,
        cluster,
        east_west,
        CatalogRunner(catalog),
        ScopedTasks(),
        effective_catalog=effective,
        outlier=outlier,
        failing=failing,
        route_sources=RouteSources(router, peering, config),
    )


async def start_background(
    nursery: trio.Nursery, gw: Gateway, bundles: list[BundleSource], *, role: Role = "single"
) -> None:
    """Start step 1: identity rotation and expiry, discovery, mDNS announcements, the pool.

    A worker (``role`` "worker") runs no discovery, health checks or announcements: the
    supervisor does, once for the site, and sends the worker their results.
    """
    config, ident = gw.config, gw.config.identity
    control = role != "worker"
    await gw.scoped.start(nursery, WATCHER_KEY, identity_watcher(gw.identity, ident))
    await nursery.start(watch_own_identity, gw.identity)
    if control:
        await gw.sources.start(nursery, config.sources)
    await nursery.start(
        serve_effective_catalog,
        gw.catalog,
        gw.outlier.ejections,
        gw.effective_catalog,
        gw.failing,
    )
    if control:
        await health_checks_of(gw).start(nursery, config.service_traffic)  # reload restarts it
    gc.freeze()  # the start-up heap is long-lived: keep it out of every later GC pass
    if control and config.mdns_announce.services:
        await nursery.start(
            functools.partial(
                serve_mdns_announcer,
                [announced(a) for a in config.mdns_announce.services],
                interfaces=[str(i) for i in config.mdns_announce.interfaces],
            )
        )
    await nursery.start(gw.pool.serve)
    await nursery.start(gw.router.mirrors.serve)
    if gw.route_sources is not None:
        await nursery.start(gw.route_sources.run)
    if gw.observer is not None and gw.observer.access_log is not None:
        await nursery.start(gw.observer.access_log.serve)


async def start_east_west(
    nursery: trio.Nursery, gw: Gateway, *, handoff: Handoff | None = None
) -> int | None:
    """Start step 2: the east-west listener peers dial (and the dialers); its port.

    ``handoff`` (a worker's): called with each accepted connection before TLS; it passes the
    connections that are not worker links to the supervisor (docs/workers.md).
    """
    ew = gw.config.listener("east-west")
    if ew is None:
        return None
    port: int = await start_listener(
        nursery,
        functools.partial(gw.peering.serve, host=str(ew.address), port=ew.port, handoff=handoff),
        what=f"listener {ew.name}",
        address=str(ew.address),
        port=ew.port,
    )
    log.info("east-west listener on %s:%d", ew.address, port)
    return port


async def start_consul_gateways(nursery: trio.Nursery, gw: Gateway, ew_port: int | None) -> None:
    """Register this gateway in Consul and watch the peers' replicas there (docs/replicas.md)."""
    config = gw.config
    source = gateways_consul(config)
    if source is None or not uses_consul(config):
        return
    section = config.consul_gateways
    agent = await open_agent(source)
    backoff = Backoff(base_s=section.backoff_base_s, cap_s=section.backoff_cap_s)
    ew = config.listener("east-west")
    if section.register and ew_port is not None and ew is not None:
        body = registration(
            site=config.site.name,
            spiffe_id=gw.identity.state.spiffe_id,
            host=section.address or str(ew.address),
            port=ew_port,
            ttl_s=section.ttl_s,
            deregister_after_s=section.deregister_critical_after_s,
        )
        await nursery.start(
            functools.partial(keep_registered, agent, body, ttl_s=section.ttl_s, backoff=backoff)
        )
    if any(p.discover == "consul" for p in config.peers):
        await nursery.start(
            functools.partial(
                watch_gateways,
                agent,
                gw.peer_directory,
                gw.peering,
                lambda: gw.config,
                wait_s=section.wait_s,
                backoff=backoff,
            )
        )


async def start_callers(nursery: trio.Nursery, gw: Gateway) -> None:
    """Start step 3: the listeners local callers use (http, sni) and the service ports."""
    for bind in caller_binds(gw.config):
        await start_caller(nursery, gw, bind)


async def start_caller(nursery: trio.Nursery, gw: Gateway, bind: CallerBind) -> int:
    """One caller listener or service port, in its own cancel scope (``gw.scoped``) so a
    reload can stop or replace it alone; its bound port.

    It gets a drain of its own, a part of ``gw.drain``: shutdown drains every listener, a
    reload that removes or replaces this one drains it alone (:mod:`gateway.reload.scoped`).
    """
    router, lim, site = gw.router, gw.config.limits, gw.config.site.name
    serve: Any
    key = bind_key(bind)
    drain = gw.drain.part(key)

    def live_limits() -> LimitsConfig:  # read per new connection: a reload may change them
        return gw.config.limits

    if isinstance(bind, ServicePortConfig):
        serve = functools.partial(
            serve_service_port,
            bind,
            router,
            limits=lim,
            live_limits=live_limits,
            local_site=site,
            drain=drain,
        )
    elif bind.kind == "http":
        serve = functools.partial(
            serve_http_listener,
            bind,
            router,
            identity=gw.identity,
            limits=lim,
            live_limits=live_limits,
            local_site=site,
            drain=drain,
        )
    else:
        serve = functools.partial(
            serve_sni_listener,
            bind,
            router,
            limits=lim,
            live_limits=live_limits,
            local_site=site,
            drain=drain,
        )

    async def serve_part(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await serve(task_status=task_status)
        finally:
            drain.detach()  # the gateway's part for as long as the listener runs

    try:
        port: int = await gw.scoped.start(
            nursery,
            key,
            serve_part,
            starter=functools.partial(
                _start_bound, what=key, address=str(bind.address), port=bind.port
            ),
            drain=drain,
        )
    except BaseException:
        drain.detach()
        raise
    if isinstance(bind, ServicePortConfig):
        log.info(
            "service port %s on %s:%d -> %s (%s)",
            bind.name,
            bind.address,
            port,
            bind.target,
            bind.protocol,
        )
    else:
        tls = " (TLS)" if bind.tls else ""
        log.info("%s listener %s on %s:%d%s", bind.kind, bind.name, bind.address, port, tls)
    return port


async def _start_bound(
    nursery: trio.Nursery, run: Any, *, what: str, address: str, port: int
) -> Any:
    return await start_listener(nursery, run, what=what, address=address, port=port)


async def start_admin(
    nursery: trio.Nursery,
    gw: Gateway,
    reloader: ConfigReloader | None = None,
    workers: Supervision | None = None,
) -> int | None:
    """Start step 4: the admin API, last (it reports on everything above); its port."""
    admin = gw.config.listener("admin")
    if admin is None:
        return None
    views = admin_views(gw, reloader)
    queries = {"/explain": explain_query(gw.router, gw.cluster, lambda: gw.config.limits)}
    if workers is not None:
        workers.admin_views(views, queries)
    port: int = await start_listener(
        nursery,
        functools.partial(
            serve_admin,
            views,
            actions=admin_actions(reloader),
            queries=queries,
            host=str(admin.address),
            port=admin.port,
        ),
        what=f"listener {admin.name}",
        address=str(admin.address),
        port=admin.port,
    )
    log.info("admin API on http://%s:%d/", admin.address, port)
    return port


async def serve_gateway(
    config: GatewayConfig,
    *,
    config_path: Path | None = None,
    version: str | None = None,
    fleet: FleetDocument | None = None,
    workers: Supervision | None = None,
    task_status: trio.TaskStatus[GatewayPorts] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway described by ``config`` until cancelled: build, then start in order.

    With ``config_path`` (the file ``config`` came from, and its ``version``), the gateway can
    reload it: ``GatewayPorts.reloader`` and the admin API's ``POST /config/reload``.
    ``fleet`` is the fleet document already merged into ``config`` (read at start).
    ``workers``: this process is the supervisor of worker processes (``[site] workers``):
    they bind the east-west and caller listeners; this one keeps the control plane.
    """
    identity, bundles = await load_identity(config)
    gw = build_gateway(config, identity)
    async with trio.open_nursery() as nursery:
        reloader = None
        if config_path is not None:
            reloader = ConfigReloader(
                gw,
                config_path,
                version or config_version(""),
                nursery,
                gw.sources,
                functools.partial(start_caller, nursery, gw),
            )
        if reloader is not None and workers is not None:
            reloader.role = "supervisor"  # the caller listeners are the workers'
        fleet_source = fleet_consul(config) if config.fleet.source == "consul" else None
        if reloader is not None and config.fleet.source == "site":
            reloader.fleet = site_state(config)  # docs/fleet.md, "A control site"
        if reloader is not None and fleet_source is not None:
            reloader.fleet = FleetState("consul", config.fleet.prefix, config.site.name)
        if reloader is not None and reloader.fleet is not None:
            if fleet is not None:
                reloader.fleet.record_read(fleet.version)
                reloader.fleet.record_applied(fleet, time.time())
            if gw.observer is not None:
                gw.observer.registry.collector(reloader.fleet.gauges)
        site_fleet = SiteFleet(gw, reloader)  # before the links: it serves the push path
        await start_background(nursery, gw, bundles)
        if workers is None:
            ew_port = await start_east_west(nursery, gw)
        else:
            ew_port = await workers.start(nursery, gw, reloader)
        await start_consul_gateways(nursery, gw, ew_port)
        if workers is None:
            await start_callers(nursery, gw)
        admin_port = await start_admin(nursery, gw, reloader, workers)
        await site_fleet.start(nursery, fleet)
        if reloader is not None and reloader.fleet is not None and fleet_source is not None:
            # Last: each fleet version is applied to a gateway that is fully up.
            await nursery.start(
                functools.partial(
                    serve_fleet,
                    fleet_source,
                    config.fleet,
                    reloader.fleet,
                    reloader.apply_fleet,
                    wall_clock=time.time,
                )
            )
        task_status.started(
            GatewayPorts(ew_port, admin_port, reloader, None if workers is not None else gw.drain)
        )
