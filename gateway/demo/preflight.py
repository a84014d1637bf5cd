"""Before the demo starts anything: every address and port it will bind, and whether it can.

Why a preflight: the demo's supervisor waits for each site's admin API to answer.  If another
demo (or anything else) already holds those addresses, the new gateways fail to bind, but the
*old* ones answer -- so without this check a second demo reported a false "federated" success
before failing with a traceback.  Checking every port first turns that into one clear line
("address 127.0.1.1:15000 is already in use") and a non-zero exit, with nothing started.

``planned_binds`` is pure (the topology in, the list out); ``check_binds`` is the thin
adapter that tries each bind on a real socket and releases it at once.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, replace

from gateway.demo.topology import Topology


@dataclass(frozen=True)
class Bind:
    """One TCP address the demo will listen on, and what listens there (for messages)."""

    address: str
    port: int
    what: str


class PortUnavailable(Exception):
    """An address the demo needs cannot be bound (in use, or not on this machine)."""


def planned_binds(topology: Topology) -> list[Bind]:
    """Every (address, port) the demo's gateways and example services listen on.

    Raises ``PortUnavailable`` when the topology itself asks for one port twice on an address
    (e.g. ``--admin-port`` equal to ``--http-port``), which no machine could satisfy.
    """
    t = topology
    binds: list[Bind] = []
    for site in t.sites:
        a = str(site.address)
        binds += [
            Bind(a, t.east_west_port, f"{site.name} east-west listener"),
            Bind(a, t.admin_port, f"{site.name} admin listener"),
            Bind(a, t.http_port, f"{site.name} HTTP listener"),
            Bind(a, t.sni_port, f"{site.name} SNI listener"),
        ]
        binds += [
            Bind(a, sp.port, f"{site.name} service port {sp.target}") for sp in t.service_ports
        ]
        binds += [
            Bind(a, svc.port, f"{site.name} example service {svc.service}.{svc.namespace}")
            for svc in site.services
        ]
    seen: dict[tuple[str, int], Bind] = {}
    for b in binds:
        if b.port == 0:
            continue  # port 0 asks the kernel for a free port: never a clash
        first = seen.setdefault((b.address, b.port), b)
        if first is not b:
            raise PortUnavailable(
                f"address {b.address}:{b.port} is planned twice: {first.what} and {b.what}"
            )
    return binds


def check_binds(binds: list[Bind]) -> None:
    """Try to bind each address (and release it); raise ``PortUnavailable`` on the first failure.

    ``SO_REUSEADDR`` is set as the gateway sets it, so a port left in TIME_WAIT by a demo that
    just stopped counts as free, while a port another process listens on does not.
    """
    for b in binds:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((b.address, b.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortUnavailable(
                        f"address {b.address}:{b.port} is already in use ({b.what}); stop what "
                        "holds it, or move the demo: --base-address, --admin-port, --http-port"
                    ) from None
                raise PortUnavailable(
                    f"address {b.address}:{b.port} cannot be bound ({b.what}): {exc.strerror}"
                ) from None


def relocate(
    topology: Topology,
    *,
    base_address: ipaddress.IPv4Address | None = None,
    ports: dict[str, int] | None = None,
) -> Topology:
    """The topology moved: site ``i`` on ``base_address + 256 * i``, listener ports replaced.

    ``ports`` maps ``Topology`` field names (``admin_port``, ``http_port``, ...) to ports.
    Addresses must stay in 127.0.0.0/8: the demo is one machine's loopback, nothing else.
    """
    changed = topology
    if base_address is not None:
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        sites = []
        for i, site in enumerate(topology.sites):
            try:
                address = base_address + 256 * i
            except ipaddress.AddressValueError:
                address = None
            if address is None or address not in loopback:
                raise ValueError(
                    f"--base-address {base_address}: site {site.name} would be outside "
                    "127.0.0.0/8 (the demo runs on loopback only)"
                )
            sites.append(replace(site, address=address))
        changed = replace(changed, sites=tuple(sites))
    if ports:
        unknown = set(ports) - _PORT_FIELDS
        if unknown:
            raise ValueError(f"not a demo listener port: {sorted(unknown)}")
        changed = replace(
            changed,
            admin_port=ports.get("admin_port", changed.admin_port),
            http_port=ports.get("http_port", changed.http_port),
            east_west_port=ports.get("east_west_port", changed.east_west_port),
            sni_port=ports.get("sni_port", changed.sni_port),
        )
    return changed


_PORT_FIELDS = {"admin_port", "http_port", "east_west_port", "sni_port"}
