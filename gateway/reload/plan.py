"""What a config reload changes, decided without I/O.

Why a pure plan: whether a new config can be applied to a running gateway, and what exactly
has to happen, is a question about two frozen values.  Answering it here (no Trio, no sockets)
keeps the rules testable in isolation and lets the adapter (:mod:`gateway.reload.apply`) stay
a thin sequence of swaps.  A reload is all or nothing: when any part of the new config cannot
be applied live, :attr:`ReloadPlan.problems` says which (with the field path, as config
errors do) and the whole reload is rejected, so the running config is never half-replaced.

What applies live today (each read per request or swapped whole):

* ``[[policies]]`` -- the east-west admission reads them per request;
* ``[[exports]]`` -- read per request by admission; each live export stream recomputes its
  view and sends peers the difference on the same link (links and tunnels stay up);
* ``[[caller_headers]]`` and ``[site] caller_headers`` -- read per request by the local cluster;
* ``[identity]`` -- new SVID, key and bundle paths are loaded and verified first (the SPIFFE ID
  must stay the same), then swapped in as a rotation would (:mod:`gateway.reload.identity`);
* ``[limits]`` -- the per-connection and per-request ones (header sizes and timeouts, idle and
  stream timeouts, the route timeout, tunnel buffers, caller HTTP/2 windows) for connections
  accepted and requests started after the reload; :data:`RESTART_LIMITS` need a restart;
* ``[[peers]]`` -- added peers are dialed, removed ones unlinked and their imports withdrawn,
  changed ones relinked (a priority change alone keeps the links); other peers' links stay;
* ``[[sources]]`` -- the discovery sources are restarted with the new list; the catalog keeps
  serving the last snapshot until the new sources have resynced, so no request sees a gap;
* ``[[routes]]`` -- recompiled and swapped whole for requests that start after the reload
  (their rate-limit buckets start full again; requests under way keep the route they got);
* ``http``/``sni`` listeners and ``[[service_ports]]`` -- added, removed or replaced one by one
  (:mod:`gateway.reload.listeners`); the others keep their live connections;
* ``[[service_traffic]]`` and ``[outlier_detection]`` -- rules added, removed, reordered or
  changed: each part that reads them (balancers, outlier detection, health checks, retries
  and breakers) is swapped for requests that start after the reload, only if its own
  settings changed (:mod:`gateway.reload.traffic_plan`; the swap and what state it keeps:
  :mod:`gateway.reload.traffic`).

Everything else needs a restart for now and is reported as a problem of the reload.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

from gateway.config.consul_gateways import consul_gateways_restart
from gateway.config.errors import Problem
from gateway.config.model import GatewayConfig
from gateway.reload.listeners import ListenerPlan, fixed_listener_changes, plan_listeners
from gateway.reload.traffic_plan import NO_CHANGE, TrafficPlan, plan_traffic

# The sections a reload applies live; every other section of GatewayConfig (``[peering]``,
# ``[mdns_announce]``, ``[metrics]``, ``[access_log]``, and any section added later until
# someone teaches the reload about it) needs a restart: unknown means "not live", never
# "silently ignored".
LIVE_SECTIONS = frozenset(
    {
        "site",  # only caller_headers; its other fields are checked on their own
        "identity",
        "listeners",
        "service_ports",
        "peers",
        "sources",
        "exports",
        "policies",
        "caller_headers",
        "limits",
        "routes",
        "service_traffic",  # planned part by part (traffic_plan.py)
        "outlier_detection",
    }
)


# Limits held by a listener or a link for its whole life (the connection cap, the send timeout,
# the TLS handshake bound shared with links, the HTTP/2 settings links announce once).
RESTART_LIMITS: tuple[str, ...] = (
    "max_connections",
    "send_timeout_s",
    "tls_handshake_timeout_s",
    "h2_max_concurrent_streams",
    "h2_max_header_list_bytes",
    "link_stream_window",
    "link_stream_window_max",
    "buffer_budget",
    "link_connection_window",
    "link_max_frame_size",
    "link_outbound_buffer",
    "link_max_per_peer",  # each peer's pool is made with its maximum when its dialer starts
    "max_concurrent_handshakes",  # peering makes its one handshake gate at start
    "link_h2_engine",
    "caller_h2_engine",  # a caller listener builds its connections' HTTP/2 limits at start
)


def config_version(text: str) -> str:
    """The version of a config: the first 12 hex digits of the SHA-256 of its file text.

    Why the text and not the decoded value: it is what the operator can check with
    ``sha256sum``, and it changes exactly when the file does.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The difference between the running config and a new valid one, as work to do."""

    policies: bool  # swap the admission policies
    exports: bool  # swap the export rules (admission and the live export streams)
    identity: bool  # load the identity from the new paths and swap it in
    peers: bool  # add, remove or change peers (only the changed ones' links are touched)
    limits: bool  # per-connection and per-request limits, for new connections and requests
    caller_headers: bool  # swap the caller-header rules
    resilience: bool  # swap the router's retries/breakers per service (= traffic.resilience)
    sources: bool  # restart discovery with the new sources
    sources_removed: tuple[str, ...]  # names whose endpoints must leave the catalog
    listeners: ListenerPlan  # caller listeners and service ports to stop and start
    problems: tuple[Problem, ...]  # why it cannot be applied live (empty: it can)
    routes: bool = False  # recompile [[routes]] and swap them into the router
    #: The [[service_traffic]] / [outlier_detection] parts to swap (balancers, outlier
    #: detection, health checks, retries and breakers).
    traffic: TrafficPlan = NO_CHANGE

    @property
    def changes(self) -> tuple[str, ...]:
        """The sections this plan changes (for logs and the admin API)."""
        out = []
        if self.policies:
            out.append("policies")
        if self.exports:
            out.append("exports")
        if self.caller_headers:
            out.append("caller_headers")
        if self.traffic.rules:
            out.append("service_traffic")
        if self.traffic.site_outlier:
            out.append("outlier_detection")
        if self.identity:
            out.append("identity")
        if self.limits:
            out.append("limits")
        if self.routes:
            out.append("routes")
        if self.peers:
            out.append("peers")
        if self.sources:
            out.append("sources")
        if not self.listeners.empty:
            out.append("listeners")
        return tuple(out)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.problems


def plan_reload(old: GatewayConfig, new: GatewayConfig) -> ReloadPlan:
    """The plan that turns a gateway running ``old`` into one running ``new``."""
    problems: list[Problem] = []
    if new.site != old.site:
        for name in ("name", "trust_domain", "mesh_domain"):
            if getattr(new.site, name) != getattr(old.site, name):
                problems.append(
                    Problem(f"site.{name}", "a site's identity cannot change; restart the gateway")
                )
        for name in ("locality", "locality_min_healthy_percent", "workers", "supervisor_nice"):
            if getattr(new.site, name) != getattr(old.site, name):
                problems.append(
                    Problem(f"site.{name}", "changing it needs a restart (not applied live yet)")
                )
    traffic, traffic_problems = plan_traffic(old, new)
    problems.extend(traffic_problems)
    for section in (f.name for f in fields(GatewayConfig)):
        if section not in LIVE_SECTIONS and getattr(new, section) != getattr(old, section):
            problems.append(
                Problem(section, f"changing [{section}] needs a restart (not applied live yet)")
            )
    for name in RESTART_LIMITS:
        if getattr(new.limits, name) != getattr(old.limits, name):
            problems.append(
                Problem(
                    f"limits.{name}",
                    "changing it needs a restart (listeners or links hold it for their lifetime)",
                )
            )
    for name in fixed_listener_changes(old, new):
        problems.append(
            Problem("listeners", f"changing listener {name!r} (east-west or admin) needs a restart")
        )
    problems += [Problem(path, msg) for path, msg in consul_gateways_restart(old, new)]
    old_names = {s.name for s in old.sources}
    new_names = {s.name for s in new.sources}
    return ReloadPlan(
        policies=new.policies != old.policies,
        exports=new.exports != old.exports,
        identity=new.identity != old.identity,
        peers=new.peers != old.peers,
        limits=new.limits != old.limits,
        caller_headers=(
            new.caller_headers != old.caller_headers
            or new.site.caller_headers != old.site.caller_headers
        ),
        resilience=traffic.resilience,
        sources=new.sources != old.sources,
        sources_removed=tuple(sorted(old_names - new_names)),
        listeners=plan_listeners(old, new),
        problems=tuple(problems),
        routes=new.routes != old.routes or new.site.mesh_domain != old.site.mesh_domain,
        traffic=traffic,
    )
