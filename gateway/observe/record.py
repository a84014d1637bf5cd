"""One exchange's record, and its access-log line (pure).

Why a mutable record: the data path fills it in as the exchange goes (the site that answered,
the response head, the bytes); at the end it becomes one JSON line and a few metric updates.
It holds no header values, only the method, the path *without its query* (queries carry
tokens often enough), the addresses and the caller's SPIFFE ID -- so no credential can reach
an access line.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CURRENT_RECORD", "ExchangeRecord", "access_line", "note_endpoint", "status_class"]

MAX_PATH_CHARS = 512
MAX_REASON_CHARS = 200


@dataclass(slots=True)
class ExchangeRecord:
    """What happened to one request or tunnel at one gateway."""

    side: str  # "origin" (entered the overlay here) or "destination" (from a peer)
    listener: str
    request_id: str
    started: float  # trio clock
    wall_time: float  # time.time() at the start, for the line's timestamp
    method: str
    authority: str
    path: str
    caller_site: str
    caller_id: str | None
    service: str = ""  # "name.namespace" once the address parsed
    site: str = ""  # the site that answered (or the last one tried)
    endpoint: str = ""
    status: int = 0  # 0: no response (reset, caller gone)
    error: str = ""
    bytes_in: int = 0  # request body bytes from the caller
    bytes_out: int = 0  # response body bytes to the caller
    head_at: float | None = None
    ended: float | None = None
    tunnel: bool = False
    tried: list[tuple[str, str]] = field(default_factory=list)  # (site, why it was skipped)
    retries: int = 0  # attempts made again after a failure (gateway/router/retry.py)
    retry_denied: str = ""  # why the last retry was refused: "budget" or "breaker"
    breaker: str = ""  # the circuit breaker that refused the request (max_requests...)
    route: str = ""  # the ``[[routes]]`` entry that took the request (its label), if any
    fault: str = ""  # the fault that route injected: "delay", "abort" (after any delay), "reset"

    @property
    def failovers(self) -> int:
        return len(self.tried)


#: The record of the exchange the current task serves (set when the observer begins one), so
#: the part that picks the endpoint -- the local cluster, several calls down -- can name it on
#: the access line without every layer between passing the record along.
CURRENT_RECORD: contextvars.ContextVar[ExchangeRecord | None] = contextvars.ContextVar(
    "isthmus_current_record", default=None
)


def note_endpoint(address: str, port: int) -> None:
    """Name the endpoint the current exchange goes to (the last one tried), if observed."""
    rec = CURRENT_RECORD.get()
    if rec is not None:
        rec.endpoint = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def status_class(status: int) -> str:
    """``2xx``...``5xx``, or ``none`` when no response went out (reset, caller gone)."""
    return _STATUS_CLASS[status // 100] if 100 <= status <= 599 else "none"


_STATUS_CLASS = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def access_line(rec: ExchangeRecord, local_site: str) -> str:
    """The record as one JSON line (no trailing newline)."""
    ended = rec.ended if rec.ended is not None else rec.started
    doc: dict[str, Any] = {
        "time": dt.datetime.fromtimestamp(rec.wall_time, dt.UTC).isoformat(timespec="milliseconds"),
        "request_id": rec.request_id,
        "side": rec.side,
        "gateway_site": local_site,
        "listener": rec.listener,
        "origin_site": rec.caller_site,
        "destination_site": rec.site or None,
        "caller_id": rec.caller_id,
        "address": rec.authority,
        "service": rec.service or None,
        "route": rec.route or None,
        "endpoint": rec.endpoint or None,
        "kind": "tunnel" if rec.tunnel else "request",
        "method": rec.method,
        "path": _clip(rec.path.split("?", 1)[0], MAX_PATH_CHARS),
        "status": rec.status or None,
        "error": _clip(rec.error, MAX_REASON_CHARS) or None,
        "bytes_in": rec.bytes_in,
        "bytes_out": rec.bytes_out,
        "duration_ms": _ms(ended - rec.started),
        "head_ms": _ms(None if rec.head_at is None else rec.head_at - rec.started),
        "failovers": rec.failovers,
        "retries": rec.retries,
        "tried": [{"site": s, "skipped": _clip(why, MAX_REASON_CHARS)} for s, why in rec.tried],
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True)
