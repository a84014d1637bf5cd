"""Which caller listeners a reload starts, stops or replaces (pure).

Caller listeners are the ``http`` and ``sni`` listeners and the service ports: each is keyed
by kind and name (a listener and a service port may share a name).  A key only in the new
config is started, one only in the old is stopped (its own connections end with it; every
other listener's connections are untouched), and one whose settings changed is replaced.
The ``east-west`` and ``admin`` listeners are not caller listeners: changing them needs a
restart (peers' links and the reload's own answer run on them).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.model import GatewayConfig, ListenerConfig, ServicePortConfig

CallerBind = ListenerConfig | ServicePortConfig
CALLER_KINDS = ("http", "sni")


def bind_key(bind: CallerBind) -> str:
    if isinstance(bind, ServicePortConfig):
        return f"service port {bind.name}"
    return f"listener {bind.name}"


def caller_binds(config: GatewayConfig) -> tuple[CallerBind, ...]:
    """The caller listeners then the service ports of ``config``, in config order."""
    listeners = tuple(li for li in config.listeners if li.kind in CALLER_KINDS)
    return listeners + config.service_ports


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    stop: tuple[str, ...]  # keys to stop: removed, or replaced (stopped before restarting)
    start: tuple[CallerBind, ...]  # binds to start: added, or the new form of replaced ones

    @property
    def empty(self) -> bool:
        return not self.stop and not self.start


def plan_listeners(old: GatewayConfig, new: GatewayConfig) -> ListenerPlan:
    before = {bind_key(b): b for b in caller_binds(old)}
    after = {bind_key(b): b for b in caller_binds(new)}
    stop = tuple(k for k, b in before.items() if after.get(k) != b)
    start = tuple(b for k, b in after.items() if before.get(k) != b)
    return ListenerPlan(stop, start)


def fixed_listener_changes(old: GatewayConfig, new: GatewayConfig) -> tuple[str, ...]:
    """Names of east-west/admin listeners added, removed or changed (restart only)."""
    before = {li.name: li for li in old.listeners if li.kind not in CALLER_KINDS}
    after = {li.name: li for li in new.listeners if li.kind not in CALLER_KINDS}
    return tuple(sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n)))
