"""The one backend every topology reaches: nginx (small and 1 MiB responses) and iperf3.

The backend must never be the bottleneck, so it is C, not the Python demo services: nginx
answers ``GET /`` with a small fixed body and ``GET /1m`` with a static 1 MiB file; iperf3 is
the sink of the single long TCP stream.  nginx runs as one process (``master_process off``)
so that the PID we started is the PID we stop.  All three topologies reach the very same
sockets; only the path in front of them changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .procs import Fleet, wait_port

SMALL_PATH = "/"
SMALL_BODY = b"ok isthmus bench\n"
BULK_PATH = "/1m"
BULK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class BackendAddrs:
    """Where the backend listens: HTTP on every ``http_hosts``; raw-TCP aliases; iperf3."""

    http_hosts: tuple[str, ...]
    http_port: int
    tcp_alias_host: str  # the same nginx, reached as an opaque TCP service
    tcp_alias_port: int
    iperf_host: str
    iperf_port: int


def nginx_config(addrs: BackendAddrs, root: Path) -> str:
    listens = [f"listen {h}:{addrs.http_port};" for h in addrs.http_hosts]
    listens.append(f"listen {addrs.tcp_alias_host}:{addrs.tcp_alias_port};")
    user = "user root;" if os.geteuid() == 0 else ""
    body = SMALL_BODY.decode().replace("\n", "\\n")
    return f"""
{user}
worker_processes 1;
master_process off;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    sendfile on;
    tcp_nodelay on;
    server {{
        {" ".join(listens)}
        root {root}/www;
        location = {SMALL_PATH} {{ default_type text/plain; return 200 "{body}"; }}
        location = {BULK_PATH} {{ default_type application/octet-stream; }}
    }}
}}
"""


async def start_backend(fleet: Fleet, addrs: BackendAddrs, root: Path) -> None:
    """Start nginx and the iperf3 server; return once every socket accepts."""
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "www" / BULK_PATH.lstrip("/")).write_bytes(os.urandom(BULK_SIZE))
    conf = root / "nginx.conf"
    conf.write_text(nginx_config(addrs, root))
    await fleet.start(
        "nginx", ["nginx", "-p", str(root), "-e", str(root / "nginx-error.log"), "-c", str(conf)]
    )
    iperf = ["iperf3", "-s", "-B", addrs.iperf_host, "-p", str(addrs.iperf_port)]
    await fleet.start("iperf3-server", iperf)
    for host in addrs.http_hosts:
        await wait_port(host, addrs.http_port, fleet=fleet)
    await wait_port(addrs.tcp_alias_host, addrs.tcp_alias_port, fleet=fleet)
    await wait_port(addrs.iperf_host, addrs.iperf_port, fleet=fleet)
    fleet.check_alive()
