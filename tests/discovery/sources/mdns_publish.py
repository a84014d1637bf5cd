"""Test harness: a DNS-SD publisher (plain zeroconf, no Isthmus code) driven over stdin.

Usage (inside a namespace)::

    python -m tests.discovery.sources.mdns_publish ADDRESS

Commands, one JSON object per stdin line; each answers ``{"ok": ..., "t": monotonic}``:

* ``{"op": "register", "label": "api-1", "port": 8080, "txt": {...} | "txt_hex": "..",
  "ttl": 120, "type": "_isthmus._tcp.local."}`` -- register (probe + announce) one instance;
* ``{"op": "unregister", "label": "api-1"}`` -- send goodbye packets for it;
* ``{"op": "flood", "count": 10000, "ttl": 120}`` -- multicast one unsolicited response
  announcing ``count`` instances (PTR+SRV+TXT+A each, split into packets by zeroconf), the way
  a hostile or broken host on the link could.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

from zeroconf import ServiceInfo, Zeroconf
from zeroconf._dns import DNSAddress, DNSPointer, DNSService, DNSText
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import (
    _CLASS_IN,
    _CLASS_UNIQUE,
    _FLAGS_AA,
    _FLAGS_QR_RESPONSE,
    _TYPE_A,
    _TYPE_PTR,
    _TYPE_SRV,
    _TYPE_TXT,
)

DEFAULT_TYPE = "_isthmus._tcp.local."


def reply(obj: dict[str, Any]) -> None:
    obj["t"] = time.monotonic()
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def flood(zc: Zeroconf, address: str, count: int, ttl: int, stype: str) -> None:
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    server = "flood-host.local."
    out.add_answer_at_time(
        DNSAddress(server, _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, ttl, socket.inet_aton(address)), 0
    )
    for i in range(count):
        name = f"flood-{i}.{stype}"
        out.add_answer_at_time(DNSPointer(stype, _TYPE_PTR, _CLASS_IN, ttl, name), 0)
        out.add_answer_at_time(
            DNSService(name, _TYPE_SRV, _CLASS_IN | _CLASS_UNIQUE, ttl, 0, 0, 10000 + i, server),
            0,
        )
        out.add_answer_at_time(
            DNSText(name, _TYPE_TXT, _CLASS_IN | _CLASS_UNIQUE, ttl, b"\x0bsvc=flooded"), 0
        )
    zc.send(out)


def main(address: str) -> None:
    zc = Zeroconf(interfaces=[address])
    infos: dict[str, ServiceInfo] = {}
    reply({"ok": "started"})
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd["op"]
            stype = cmd.get("type", DEFAULT_TYPE)
            if op == "register":
                props: bytes | dict[str, str]
                props = bytes.fromhex(cmd["txt_hex"]) if "txt_hex" in cmd else cmd.get("txt", {})
                ttl = int(cmd.get("ttl", 120))
                info = ServiceInfo(
                    stype,
                    f"{cmd['label']}.{stype}",
                    port=int(cmd["port"]),
                    properties=props,
                    server=cmd.get("server", f"{cmd['label']}-host.local."),
                    parsed_addresses=[address],
                    host_ttl=ttl,
                    other_ttl=ttl,
                )
                zc.register_service(info, cooperating_responders=True)
                infos[cmd["label"]] = info
                reply({"ok": op, "label": cmd["label"]})
            elif op == "unregister":
                t0 = time.monotonic()
                zc.unregister_service(infos.pop(cmd["label"]))
                reply({"ok": op, "label": cmd["label"], "t_start": t0})
            elif op == "flood":
                flood(zc, address, int(cmd["count"]), int(cmd.get("ttl", 120)), stype)
                reply({"ok": op})
            else:
                reply({"ok": False, "error": f"unknown op {op!r}"})
    finally:
        zc.close()


if __name__ == "__main__":
    main(sys.argv[1])
