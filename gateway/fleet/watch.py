"""The gateway side of the fleet document: watch ``<prefix>/current`` in Consul KV, apply.

Theory of operation
-------------------
One task runs a blocking query on the key (``index`` = the last ``X-Consul-Index``, ``wait``
= ``[fleet] wait_s``), as the Consul discovery source does on the catalog: Consul answers as
soon as the key is written, so a change reaches every watching gateway in one round trip (push,
not poll).  When the key's ``ModifyIndex`` moves, the value is decoded whole
(:func:`decode_value`: size, UTF-8, JSON, the document's structure and each spec) and handed
to the reloader, which merges it with the site's own file, validates the result with the
config loader and applies it with the reload machinery -- or rejects it, keeping the version
that runs.  A key that is absent means the empty document (no fleet resources).

Errors (agent unreachable, 5xx, 403, malformed answers) are logged once per new reason,
recorded in :class:`~gateway.fleet.state.FleetState` (``unreachable``) and retried after
exponential backoff with full jitter; the running version is never dropped.  An index that
goes backwards (a snapshot restore) restarts from a plain read (:func:`next_index`).  Every
request is bounded by the HTTP client's deadlines; an answer faster than ``_MIN_ROUND_S``
is followed by a pause, as HashiCorp asks of blocking-query clients.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Callable

import trio

from discovery.backoff import Backoff
from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul_parse import (
    ConsulAclDenied,
    ConsulConfigError,
    ConsulError,
    next_index,
)
from gateway.config.errors import Problem
from gateway.config.fleet import FleetConfig
from gateway.fleet.consul_kv import ConsulKv, KvEntry, open_kv, read_token
from gateway.fleet.document import EMPTY, FleetDocument, FleetDocumentInvalid, parse_document
from gateway.fleet.state import FleetState

log = logging.getLogger("isthmus.fleet")

_MIN_ROUND_S = 0.1
_REASON_CHARS = 300

Apply = Callable[[FleetDocument], Awaitable[object]]


def current_key(prefix: str) -> str:
    return f"{prefix}/current"


def history_key(prefix: str, version: str) -> str:
    return f"{prefix}/history/{version}"


def decode_value(
    value: bytes, *, max_bytes: int, max_resources: int
) -> tuple[FleetDocument | None, str, tuple[Problem, ...]]:
    """The document stored in a KV value, its version, and its problems (paths ``fleet.``)."""
    raw_version = hashlib.sha256(value).hexdigest()[:12]
    if len(value) > max_bytes:
        return None, raw_version, (Problem("fleet", f"larger than {max_bytes} bytes"),)
    try:
        data = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return None, raw_version, (Problem("fleet", f"not a JSON document: {err}"[:200]),)
    try:
        doc = parse_document(data, max_resources=max_resources)
    except FleetDocumentInvalid as err:
        problems = tuple(Problem(f"fleet.{p}" if p else "fleet", m) for p, m in err.problems)
        return None, raw_version, problems
    return doc, doc.version, ()


class FleetWatch:
    """Watches the fleet document of one prefix and applies each new version."""

    def __init__(
        self,
        kv: ConsulKv,
        config: FleetConfig,
        state: FleetState,
        apply: Apply,
        *,
        wall_clock: Callable[[], float],
        rng: random.Random | None = None,
        reread_token: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.kv, self.config, self.state, self.apply = kv, config, state, apply
        self.wall_clock = wall_clock
        self.random = rng or random.Random()
        self.backoff = Backoff(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s)
        self.reread_token = reread_token
        self.key = current_key(config.prefix)
        self.seen: int | None = None  # ModifyIndex of the value last handled (0: absent)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        index, attempt = 0, 0
        while True:
            started = trio.current_time()
            try:
                received, entry = await self.kv.get(
                    self.key, index=index, wait_s=self.config.wait_s
                )
            except ConsulError as err:
                await self._failed(err, attempt)
                attempt += 1
                index = 0  # after an outage, read at once rather than block on an old index
                continue
            if attempt or self.state.error is not None:
                log.info("fleet: %s answers again", self.key)
            attempt = 0
            await self._handle(entry)
            index = next_index(index, received)
            rest = _MIN_ROUND_S - (trio.current_time() - started)
            if rest > 0:
                await trio.sleep(rest)

    async def _handle(self, entry: KvEntry | None) -> None:
        modify = 0 if entry is None else entry.modify_index
        if modify == self.seen:
            self.state.error = None
            return
        self.seen = modify
        doc: FleetDocument | None
        problems: tuple[Problem, ...]
        if entry is None:
            doc, version, problems = EMPTY, EMPTY.version, ()
        else:
            doc, version, problems = decode_value(
                entry.value,
                max_bytes=self.config.max_document_bytes,
                max_resources=self.config.max_resources,
            )
        self.state.record_read(version)
        if doc is None:
            self.state.record_rejected(version, problems, self.wall_clock())
            log.warning(
                "fleet version %s rejected, %d problem(s); version %s keeps running",
                version,
                len(problems),
                self.state.version,
            )
            for problem in problems:
                log.warning("fleet version %s: %s", version, problem.render(None))
            return
        if doc.version == self.state.version:
            return
        try:
            await self.apply(doc)
        except Exception:  # a bug costs this version only, never the gateway (as SIGHUP)
            log.exception("fleet version %s: applying it failed", doc.version)
            problem = Problem("fleet", "applying it failed (see the gateway's log)")
            self.state.record_rejected(doc.version, (problem,), self.wall_clock())

    async def _failed(self, err: ConsulError, attempt: int) -> None:
        reason = f"{type(err).__name__}: {err}"[:_REASON_CHARS]
        level = logging.DEBUG if self.state.error == reason else logging.WARNING
        log.log(level, "fleet: reading %s failed: %s", self.key, reason)
        self.state.record_error(reason)
        if isinstance(err, ConsulAclDenied) and self.reread_token is not None:
            try:
                self.kv.token = await self.reread_token()  # a rotated token file is picked up
            except ConsulConfigError as token_err:
                log.warning("fleet: %s", token_err)
        await trio.sleep(self.backoff.delay(attempt, self.random.random()))


async def serve_fleet(
    source: ConsulSourceConfig,
    config: FleetConfig,
    state: FleetState,
    apply: Apply,
    *,
    wall_clock: Callable[[], float],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch the fleet document through the agent of the Consul source ``source`` until
    cancelled.  Reports started at once: a gateway comes up (on its own file) while Consul
    is down, and catches up when it answers."""
    task_status.started()
    backoff = Backoff(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s)
    for attempt in itertools.count():
        try:
            kv = await open_kv(source)
            break
        except ConsulConfigError as err:  # e.g. a token file not written yet
            log.warning("fleet: %s", err)
            state.record_error(str(err)[:_REASON_CHARS])
            await trio.sleep(backoff.delay(attempt, random.random()))
    watch = FleetWatch(
        kv,
        config,
        state,
        apply,
        wall_clock=wall_clock,
        reread_token=functools.partial(read_token, source),
    )
    await watch.run()
