"""Announce selected local services over mDNS / DNS-SD, so that other gateways (or any DNS-SD
browser) on the link discover them.

Each :class:`AnnouncedService` becomes one DNS-SD instance of ``service_type``: a PTR, an SRV
(``port``, target ``host``), an A/AAAA record for ``address`` and a TXT record with the keys of
:mod:`discovery.sources.mdns_txt` (``svc``, ``ns``, ``proto``, ``spiffe``, ``weight``,
``locality``, ``health``, ``txtvers=1``).  Before anything is sent, every service is mapped back
through :func:`~discovery.sources.mdns_txt.endpoint_from_observation`: what we announce is
exactly what our own ``mdns`` source accepts, and a bad entry fails fast with
:class:`AnnounceConfigError` instead of being announced and rejected by every peer.

Lifetime: ``serve_mdns_announcer`` probes and announces (RFC 6762 section 8; a clashing
instance name is renamed, which is harmless because the service name travels in ``svc``), calls
``task_status.started(instance_names)``, and keeps answering queries until cancelled.  On exit
it sends goodbye packets (TTL 0) for every instance and closes zeroconf in a shielded worker
thread, so browsers drop the endpoints at once rather than at TTL expiry and no zeroconf thread
outlives the announcer.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from zeroconf import InterfaceChoice, ServiceInfo, Zeroconf

from discovery.model import Protocol
from discovery.sources.mdns_txt import (
    MdnsObservation,
    MdnsRecordError,
    encode_txt,
    endpoint_from_observation,
    txt_for_endpoint,
)
from foundation.errors import ConfigError
from foundation.spiffe_id import SpiffeId

DEFAULT_SERVICE_TYPE = "_isthmus._tcp.local."


class AnnounceConfigError(ConfigError):
    """A service selected for announcement would not map back to a valid endpoint."""


@dataclass(frozen=True, slots=True)
class AnnouncedService:
    """One local service to announce: where callers on the link reach it, and its attributes."""

    service: str  # DNS label; travels as TXT ``svc``
    address: str  # IP address callers connect to (usually a gateway listener)
    port: int
    namespace: str = "default"
    protocol: Protocol = "http1"
    spiffe_id: SpiffeId | None = None
    weight: int = 1
    locality: str = ""
    healthy: bool = True
    instance: str | None = None  # instance label; default "<service>-<namespace>-<hostname>"
    host: str | None = None  # SRV target; default "isthmus-<address>.local."
    service_type: str = DEFAULT_SERVICE_TYPE
    ttl_s: int = 120  # RFC 6762 recommends 120 s for records naming a host

    def instance_label(self) -> str:
        if self.instance is not None:
            return self.instance
        return f"{self.service}-{self.namespace}-{socket.gethostname()}"[:63]

    def host_name(self) -> str:
        if self.host is not None:
            return self.host
        return "isthmus-" + self.address.replace(".", "-").replace(":", "-") + ".local."


def service_info(svc: AnnouncedService) -> ServiceInfo:
    """Build the zeroconf record set for one service, refusing what our source would refuse."""
    props = txt_for_endpoint(
        service=svc.service,
        namespace=svc.namespace,
        protocol=svc.protocol,
        spiffe_id=svc.spiffe_id,
        weight=svc.weight,
        locality=svc.locality,
        healthy=svc.healthy,
    )
    name = f"{svc.instance_label()}.{svc.service_type}"
    try:
        txt = encode_txt(props)
        endpoint_from_observation(
            MdnsObservation(name, svc.service_type, svc.port, svc.host_name(), (svc.address,), txt),
            default_namespace=svc.namespace,
        )
    except (MdnsRecordError, ValueError) as exc:
        raise AnnounceConfigError(f"cannot announce {svc.service}.{svc.namespace}: {exc}") from None
    return ServiceInfo(
        svc.service_type,
        name,
        port=svc.port,
        properties=txt,
        server=svc.host_name(),
        parsed_addresses=[svc.address],
        host_ttl=svc.ttl_s,
        other_ttl=svc.ttl_s,
    )


def _open(interfaces: Sequence[str]) -> Zeroconf:
    return Zeroconf(interfaces=list(interfaces) if interfaces else InterfaceChoice.All)


def _register(zc: Zeroconf, info: ServiceInfo) -> None:
    zc.register_service(info, allow_name_change=True)


async def serve_mdns_announcer(
    services: Sequence[AnnouncedService],
    *,
    interfaces: Sequence[str] = (),
    task_status: trio.TaskStatus[tuple[str, ...]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Announce ``services`` until cancelled; goodbye packets for all of them on exit.

    ``task_status.started`` receives the announced instance names (after any renaming).
    """
    infos = [service_info(s) for s in services]  # validate everything before touching the net
    zc = await trio.to_thread.run_sync(_open, tuple(interfaces))
    try:
        async with trio.open_nursery() as nursery:  # probe all instances concurrently
            for info in infos:
                nursery.start_soon(trio.to_thread.run_sync, functools.partial(_register, zc, info))
        task_status.started(tuple(info.name for info in infos))
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(zc.close)  # sends goodbyes, joins zeroconf's thread
