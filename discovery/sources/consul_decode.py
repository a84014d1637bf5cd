"""Decoding Consul's health answers: orjson when installed, the standard library's json otherwise.

Why: under churn every watched service's blocking query answers every second -- at 1 % churn per
second of 100k endpoints in 500 services, ~430 answers of ~200 instances (~93 KiB each, ~40 MB
of JSON) per second.  ``json.loads`` of one such answer takes ~0.54 ms of CPU, orjson's ~0.23
ms (``scripts/bench_consul_decode.py``): ~0.13 s of CPU per second less for the gateway, on a
worker thread that still holds the GIL while it decodes.  orjson is a dependency (wheels on PyPI);
the pure-Python path stays for platforms without a wheel, gives the same values, and the tests
run the source on both (:data:`DECODERS`).

The health query is built here rather than through py-consul's ``health.service`` only so that
its JSON callback can be ours; the query string is the one py-consul builds for the arguments
the source uses (``index`` + ``wait``, ``tag`` per tag, ``dc``, ``node-meta`` as ``k:v``) and
the token travels in the same ``X-Consul-Token`` header.  A body that is not JSON, or nests
too deep, is :class:`ConsulMalformedResponse` ("undecodable JSON: ...") with either decoder; an
answer without ``X-Consul-Index`` is py-consul's ``ConsulException``, as before.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from consul import base
from consul.exceptions import ConsulException

from discovery.sources.consul_parse import ConsulMalformedResponse

Loads = Callable[[str], Any]
_ERROR_CHARS = 120


def _orjson() -> Loads | None:
    try:
        import orjson
    except ImportError:  # no wheel for this platform: the standard library decodes
        return None
    loads: Loads = orjson.loads
    return loads


DECODERS: dict[str, Loads] = {"json": json.loads}
if (_fast := _orjson()) is not None:
    DECODERS["orjson"] = _fast

#: What the source decodes with: orjson when it is installed.
DEFAULT_DECODER = "orjson" if "orjson" in DECODERS else "json"


class _Http(Protocol):
    def get(
        self,
        callback: Callable[[base.Response], Any],
        path: str,
        params: list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Awaitable[Any]: ...


def indexed_json(loads: Loads) -> Callable[[base.Response], tuple[str, Any]]:
    """py-consul's ``CB.json(index=True)`` with ``loads``: (``X-Consul-Index``, decoded body).

    The HTTP client has already turned every status >= 400 into a typed error.
    """

    def callback(response: base.Response) -> tuple[str, Any]:
        try:
            data = loads(response.body)
        except (ValueError, RecursionError) as err:  # either decoder: bad or too deep
            raise ConsulMalformedResponse(
                f"undecodable JSON: {type(err).__name__}: {str(err)[:_ERROR_CHARS]}"
            ) from err
        if "X-Consul-Index" not in response.headers:
            raise ConsulException(f"Missing index header: {response.headers}")
        return response.headers["X-Consul-Index"], data

    return callback


def health_service(
    http: _Http,
    name: str,
    *,
    index: int | None,
    wait: str,
    tags: Sequence[str],
    node_meta: Mapping[str, str],
    dc: str | None,
    headers: dict[str, str],
    loads: Loads,
) -> Awaitable[tuple[str, Any]]:
    """``GET /v1/health/service/<name>`` as py-consul's ``health.service`` sends it for these
    arguments, decoded with ``loads``: an awaitable of (index, JSON)."""
    params: list[tuple[str, Any]] = []
    if index:
        params += [("index", index), ("wait", wait)]
    params += [("tag", tag) for tag in tags]
    if dc:
        params.append(("dc", dc))
    params += [("node-meta", f"{key}:{value}") for key, value in node_meta.items()]
    return http.get(indexed_json(loads), f"/v1/health/service/{name}", params, headers)
