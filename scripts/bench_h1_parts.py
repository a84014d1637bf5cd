#!/usr/bin/env python3
"""CPU per request of the HTTP/1.1 gateway path's own pieces, variants in the same run.

What one small request costs in the parts this benchmark can isolate (process CPU, best of
several rounds, the same inputs for every variant):

* the caller's request head and the endpoint's response head, parsed by llhttp
  (``gateway/http/h1_fast.py``, when httptools is installed) and by the pure-Python
  reference (``gateway/http/headers.py``);
* from the parsed head to the HTTP/1.1 head the endpoint gets (``request_from_h1``, the
  caller headers, ``request_head``);
* the metrics bookkeeping of one exchange (``Observer.begin_origin`` + ``finish``).

The trio scheduling, the sockets and the wrappers between these parts are not in it: the
whole path is ``scripts/bench_dataplane.py``'s ``isthmus 1-hop`` against its trio floor.
Run against another tree with ``PYTHONPATH=<tree>`` to compare before and after.

Usage: ``.venv/bin/python scripts/bench_h1_parts.py [requests]``.
"""

from __future__ import annotations

import sys
import time
import timeit
from collections.abc import Callable

from gateway.http.caller_headers import for_endpoint
from gateway.http.exchange import CallContext
from gateway.http.headers import parse_request_head, parse_response_head
from gateway.listener.h1 import request_from_h1
from gateway.observe.observer import Observer
from gateway.upstream.endpoint_h1 import request_head

REQUEST = (
    b"GET /small HTTP/1.1\r\nHost: echo.default.isthmus:8080\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Fri, 04 Dec 2026 17:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
)


def runs() -> dict[str, Callable[[], object]]:
    head = parse_request_head(REQUEST)
    ctx = CallContext("a", None, 1e9)
    observer = Observer(
        local_site="a", mesh_domain="isthmus", sites=["b"], known=lambda s: True, clock=lambda: 1.0
    )
    request = request_from_h1(head, scheme=b"http")

    def observed() -> None:
        rec = observer.begin_origin(request, ctx)
        rec.status, rec.head_at, rec.bytes_out, rec.site = 200, 1.0, 12, "a"
        observer.finish(rec)

    def to_endpoint() -> None:
        out = for_endpoint(request_from_h1(head, scheme=b"http"), ctx, now=0.0, enabled=True)
        request_head(out)

    out: dict[str, Callable[[], object]] = {
        "request head, pure Python": lambda: parse_request_head(REQUEST),
        "response head, pure Python": lambda: parse_response_head(RESPONSE),
    }
    try:
        from gateway.http import h1_fast
    except ImportError:  # a tree before llhttp
        h1_fast = None  # type: ignore[assignment]
    if h1_fast is not None and h1_fast.AVAILABLE:
        out["request head, llhttp"] = lambda: h1_fast.parse_request_head_fast(REQUEST)
        out["response head, llhttp"] = lambda: h1_fast.parse_response_head_fast(RESPONSE)
    out["head -> endpoint's head"] = to_endpoint
    out["metrics of one exchange"] = observed
    return out


def main(argv: list[str]) -> None:
    requests = int(argv[0]) if argv else 20_000
    for name, fn in runs().items():
        best = min(timeit.Timer(fn, timer=time.process_time).repeat(number=requests, repeat=7))
        print(f"  {name:30s} {best / requests * 1e6:6.2f} us CPU per request")


if __name__ == "__main__":
    main(sys.argv[1:])
