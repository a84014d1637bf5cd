"""Topology B, the reference: client -> HAProxy A -> mTLS (TLS 1.3) -> HAProxy B -> backend.

Two HAProxy processes from Debian, each with ``nbthread 1`` so that CPU seconds compare with
one Isthmus gateway process.  They get two trust domains and SVIDs from the project's own
development CA (``overlay.identity.ca``), exactly like two Isthmus sites: HAProxy A presents
its SVID as a client certificate and verifies B's against B's bundle; B requires and
verifies A's (``verify required``, ``ssl-min-ver TLSv1.3``).

Frontends of HAProxy A (one process, several ports, so one PID carries all the CPU):

* ``l7``      http mode, to B over mTLS (HTTP/2 on the link, like an Isthmus link, pooled);
* ``l7local`` http mode, straight to the backend (the one-hop reference);
* ``l4bulk``  tcp mode, to B over mTLS, to the iperf3 sink;
* ``l4web``   tcp mode, to B over mTLS, to nginx as an opaque TCP service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.ca import init_ca, issue_svid

from .backend import BackendAddrs
from .procs import Fleet, wait_port


@dataclass(frozen=True)
class HaproxyAddrs:
    a_host: str
    b_host: str
    l7_port: int = 27080
    l7_local_port: int = 27081
    l4_bulk_port: int = 27201
    l4_web_port: int = 27082
    b_l7_port: int = 27443
    b_l4_bulk_port: int = 27444
    b_l4_web_port: int = 27445


@dataclass(frozen=True)
class HaproxyChain:
    addrs: HaproxyAddrs
    pid_a: int
    pid_b: int


def bench_identity(root: Path, name: str) -> tuple[Path, Path]:
    """A CA for trust domain ``<name>.<root's name>.bench`` and an SVID under ``root``;
    -> (crt+key pem, bundle).  Also used for the trio floor relays of bench_dataplane."""
    td = TrustDomain(f"{name}.{root.name}.bench")
    ca_dir = root / "ca" / name
    if not (ca_dir / "ca_key.pem").exists():
        init_ca(ca_dir, td)
    paths = issue_svid(ca_dir, SpiffeId.parse(f"spiffe://{td}/haproxy/{name}"), root / name)
    combined = root / name / "crt_key.pem"
    combined.write_bytes(paths.svid.read_bytes() + paths.key.read_bytes())
    combined.chmod(0o600)
    return combined, paths.bundle


_GLOBAL = """global
    nbthread 1
    maxconn 4000
    ssl-server-verify required
defaults
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 120s
"""


def config_a(a: HaproxyAddrs, backend: BackendAddrs, crt: Path, peer_bundle: Path) -> str:
    tls = f"ssl crt {crt} ca-file {peer_bundle} verify required ssl-min-ver TLSv1.3"
    local = backend.http_hosts[0]
    return (
        _GLOBAL
        + f"""
frontend l7
    mode http
    bind {a.a_host}:{a.l7_port}
    default_backend to_b_l7
backend to_b_l7
    mode http
    http-reuse always
    server b {a.b_host}:{a.b_l7_port} {tls} alpn h2
frontend l7local
    mode http
    bind {a.a_host}:{a.l7_local_port}
    default_backend local
backend local
    mode http
    http-reuse always
    server nginx {local}:{backend.http_port}
frontend l4bulk
    mode tcp
    bind {a.a_host}:{a.l4_bulk_port}
    default_backend to_b_bulk
backend to_b_bulk
    mode tcp
    server b {a.b_host}:{a.b_l4_bulk_port} {tls}
frontend l4web
    mode tcp
    bind {a.a_host}:{a.l4_web_port}
    default_backend to_b_web
backend to_b_web
    mode tcp
    server b {a.b_host}:{a.b_l4_web_port} {tls}
"""
    )


def config_b(a: HaproxyAddrs, backend: BackendAddrs, crt: Path, peer_bundle: Path) -> str:
    tls = f"ssl crt {crt} ca-file {peer_bundle} verify required ssl-min-ver TLSv1.3"
    remote = backend.http_hosts[-1]
    return (
        _GLOBAL
        + f"""
frontend l7_in
    mode http
    bind {a.b_host}:{a.b_l7_port} {tls} alpn h2,http/1.1
    default_backend nginx
backend nginx
    mode http
    http-reuse always
    server nginx {remote}:{backend.http_port}
frontend l4bulk_in
    mode tcp
    bind {a.b_host}:{a.b_l4_bulk_port} {tls}
    default_backend iperf
backend iperf
    mode tcp
    server iperf {backend.iperf_host}:{backend.iperf_port}
frontend l4web_in
    mode tcp
    bind {a.b_host}:{a.b_l4_web_port} {tls}
    default_backend web
backend web
    mode tcp
    server web {backend.tcp_alias_host}:{backend.tcp_alias_port}
"""
    )


async def start_haproxy_chain(
    fleet: Fleet, addrs: HaproxyAddrs, backend: BackendAddrs, root: Path
) -> HaproxyChain:
    """Write certificates and configs, start both HAProxy processes, wait for every port."""
    crt_a, bundle_a = bench_identity(root, "a")
    crt_b, bundle_b = bench_identity(root, "b")
    conf_a = root / "haproxy-a.cfg"
    conf_b = root / "haproxy-b.cfg"
    conf_a.write_text(config_a(addrs, backend, crt_a, bundle_b))
    conf_b.write_text(config_b(addrs, backend, crt_b, bundle_a))
    for conf in (conf_a, conf_b):  # fail fast with HAProxy's own words on a config error
        await fleet.check_config(["haproxy", "-c", "-q", "-f", str(conf)])
    child_b = await fleet.start("haproxy-b", ["haproxy", "-db", "-f", str(conf_b)])
    child_a = await fleet.start("haproxy-a", ["haproxy", "-db", "-f", str(conf_a)])
    for port in (addrs.b_l7_port, addrs.b_l4_bulk_port, addrs.b_l4_web_port):
        await wait_port(addrs.b_host, port, fleet=fleet)
    for port in (addrs.l7_port, addrs.l7_local_port, addrs.l4_bulk_port, addrs.l4_web_port):
        await wait_port(addrs.a_host, port, fleet=fleet)
    fleet.check_alive()
    return HaproxyChain(addrs, child_a.process.pid, child_b.process.pid)
