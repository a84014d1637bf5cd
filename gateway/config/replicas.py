"""A peer site's replicas in ``[[peers]]``: one ``address`` + ``port``, or ``addresses``.

Why a list: a site may run several gateways (same site name, same trust domain) so that one
can restart or die without the site going dark; peers link to each of them
(docs/replicas.md).  The single ``address``/``port`` form stays the common case and means one
replica.
"""

from __future__ import annotations

#: A bound on the replicas of one site (each is a link to keep; more is a config mistake).
MAX_REPLICAS = 16


def host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as (host, port); ``ValueError`` saying what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{text!r} is not host:port")
    if len(port_text) > 5:
        raise ValueError(f"{text!r}: the port is not in 1..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: an IPv6 address goes in brackets ([::1]:7001)")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is not in 1..65535")
    if not host or any(c.isspace() or c in "[]" for c in host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or IP address")
    return host, port


def replica_problems(address: str, port: int, addresses: tuple[str, ...]) -> list[tuple[str, str]]:
    """Problems of a peer's address fields (paths relative to the peer's table)."""
    if addresses:
        if address or port:
            return [("addresses", "give either address and port, or addresses, not both")]
        if len(addresses) > MAX_REPLICAS:
            return [("addresses", f"at most {MAX_REPLICAS} replicas per peer site")]
        out: list[tuple[str, str]] = []
        seen: set[tuple[str, int]] = set()
        for i, text in enumerate(addresses):
            try:
                hp = host_port(text)
            except ValueError as exc:
                out.append((f"addresses[{i}]", str(exc)))
                continue
            if hp in seen:
                out.append((f"addresses[{i}]", f"{text!r} is listed twice"))
            seen.add(hp)
        return out
    # Without ``addresses`` the one-gateway form is required, as it always was.
    out = []
    if not address:
        out.append(("address", "is required"))
    elif any(c.isspace() for c in address):
        out.append(("address", f"{address!r} is not a host name or IP address"))
    if port == 0:
        out.append(("port", "is required"))
    return out
