"""The KV store of the Consul-API test server (``/v1/kv/``).  TEST-ONLY.

Follows HashiCorp's "KV Store Endpoints" documentation and the state store behind it:

* ``GET /v1/kv/<key>`` -> ``[{"CreateIndex", "ModifyIndex", "LockIndex", "Key", "Flags",
  "Value" (base64, ``null`` for an empty value), "Session"?}]``; 404 (empty body) when absent;
  ``?recurse`` treats the key as a prefix (entries sorted by key, 404 when none); ``?keys``
  lists key names only (implies recurse) and ``?separator`` cuts each after the first
  separator past the prefix (deduplicated); ``?raw`` answers the bare value;
* ``X-Consul-Index`` is, for one key, that key's ``ModifyIndex`` -- or the KV table's index
  when it is absent; for a prefix, the highest ``ModifyIndex`` under it or of a key deleted
  under it (a tombstone, so a delete moves the index too), else the table's index.  Never 0.
  A blocking read (``index`` > 0) returns when that index moves past ``index`` or after
  ``wait`` (+ up to ``wait/16``), as the catalog reads do;
* ``PUT /v1/kv/<key>`` stores the request body as is (at most 512 KiB: 413 above) and answers
  ``true``; ``?flags=<uint64>``; ``?cas=<index>``: with 0 only if the key is absent, else only
  if its ``ModifyIndex`` equals ``index`` (a missing key is written, as Consul does) --
  ``false`` and nothing written otherwise;
* ``DELETE /v1/kv/<key>`` answers ``true`` (also for a missing key); ``?recurse`` deletes the
  prefix; ``?cas=<index>`` deletes only if ``ModifyIndex`` equals ``index`` (``true`` when
  the key is already gone);
* ACLs as the catalog: an unknown token is 403; the anonymous token (default deny) gets 403
  ``Permission denied`` on a single-key read and on writes, and an empty -- so 404 -- list
  with ``X-Consul-Results-Filtered-By-ACLs: true`` for ``recurse``/``keys``.

Deviations: sessions and locks (``acquire``/``release``) answer 400; ``consistent``/``stale``
are accepted and ignored (one server); tombstones are never reaped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from tests.consul_api.server import ConsulApiServer

MAX_VALUE_BYTES = 512 * 1024  # Consul's kv_max_value_size default
_UINT64 = 2**64

Answer = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Entry:
    key: str
    value: bytes
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0
    session: str = ""

    def json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode() if self.value else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
        if self.session:
            out["Session"] = self.session
        return out


class KvStore:
    """Keys, values and tombstones; indexes come from the server's one Raft index."""

    def __init__(self, bump: Callable[[], int]) -> None:
        self._bump = bump  # Store._bump: the next Raft index, shared with the catalog
        self.entries: dict[str, Entry] = {}
        self.tombstones: dict[str, int] = {}
        self.table_index = 0

    def _next(self) -> int:
        idx = self._bump()
        self.table_index = idx
        return idx

    # -- reads --------------------------------------------------------------------------------
    def get(self, key: str) -> tuple[int, Entry | None]:
        entry = self.entries.get(key)
        if entry is not None:
            return entry.modify_index, entry
        return max(self.table_index, 1), None

    def listing(self, prefix: str) -> tuple[int, list[Entry]]:
        found = sorted((e for k, e in self.entries.items() if k.startswith(prefix)), key=_key)
        if prefix:
            lindex = max((e.modify_index for e in found), default=0)
            graves = (i for k, i in self.tombstones.items() if k.startswith(prefix))
            lindex = max(lindex, max(graves, default=0))
        else:
            lindex = self.table_index
        return max(lindex or self.table_index, 1), found

    def keys(self, prefix: str, separator: str) -> tuple[int, list[str]]:
        index, found = self.listing(prefix)
        out: list[str] = []
        for entry in found:
            name = entry.key
            if separator:
                cut = name.find(separator, len(prefix))
                if cut >= 0:
                    name = name[: cut + len(separator)]
            if not out or out[-1] != name:
                out.append(name)
        return index, out

    # -- writes -------------------------------------------------------------------------------
    def put(self, key: str, value: bytes, flags: int, cas: int | None) -> bool:
        existing = self.entries.get(key)
        if cas is not None:
            if cas == 0 and existing is not None:
                return False
            if existing is not None and cas != 0 and cas != existing.modify_index:
                return False
        idx = self._next()
        if existing is None:
            self.entries[key] = Entry(key, value, flags, idx, idx)
        else:
            existing.value, existing.flags, existing.modify_index = value, flags, idx
        self.tombstones.pop(key, None)
        return True

    def delete(self, key: str, *, recurse: bool, cas: int | None) -> bool:
        if recurse:
            doomed = [k for k in self.entries if k.startswith(key)]
        else:
            existing = self.entries.get(key)
            if cas is not None and (existing is None or existing.modify_index != cas):
                return existing is None
            doomed = [key] if existing is not None else []
        if doomed:
            idx = self._next()
            for name in doomed:
                del self.entries[name]
                self.tombstones[name] = idx
        return True


def _key(entry: Entry) -> str:
    return entry.key


def _flag(params: dict[str, str], name: str) -> bool:
    """Consul's boolean query parameters: present (any value but "false"/"0") means true."""
    return name in params and params[name].lower() not in ("false", "0")


def _uint(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    text = params[name]
    if not text.isdigit() or int(text) >= _UINT64:
        raise KvError(400, f"Invalid {name} index" if name == "cas" else f"Invalid {name}")
    return int(text)


class KvError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status, self.body = status, body


class KvApi:
    """The ``/v1/kv/`` endpoints of a :class:`ConsulApiServer`."""

    def __init__(self, server: ConsulApiServer) -> None:
        self.server = server
        self.store = KvStore(server.store._bump)

    def put(self, key: str, value: bytes, *, flags: int = 0, cas: int | None = None) -> bool:
        """``PUT /v1/kv/<key>`` in-process."""
        ok = self.store.put(key, value, flags, cas)
        self.server._wake()
        return ok

    async def respond(
        self, method: str, key: str, params: dict[str, str], body: bytes, full_view: bool
    ) -> Answer:
        """One KV request (the server checked the token, ``dc`` and the fail switch)."""
        try:
            if method == "GET":
                return await self._read(key, params, full_view)
            if not full_view:
                raise KvError(403, "Permission denied: anonymous token lacks permission")
            if method == "PUT":
                return self._put(key, params, body)
            if method == "DELETE":
                recurse, cas = _flag(params, "recurse"), _uint(params, "cas")
                ok = self.store.delete(key, recurse=recurse, cas=cas)
                self.server._wake()
                return _json(json.dumps(ok))
        except KvError as err:
            return err.status, [("Content-Type", "text/plain; charset=utf-8")], err.body.encode()
        return 405, [], b""

    def _put(self, key: str, params: dict[str, str], body: bytes) -> Answer:
        if not key:
            raise KvError(400, "Missing key name")
        if "acquire" in params or "release" in params:
            raise KvError(400, "sessions are not supported by this test server")
        if len(body) > MAX_VALUE_BYTES:
            raise KvError(
                413, f"Request body({len(body)} bytes) too large, max size: {MAX_VALUE_BYTES} bytes"
            )
        flags = _uint(params, "flags") or 0
        ok = self.put(key, body, flags=flags, cas=_uint(params, "cas"))
        return _json(json.dumps(ok))

    async def _read(self, key: str, params: dict[str, str], full_view: bool) -> Answer:
        keys = _flag(params, "keys")
        recurse = keys or _flag(params, "recurse")
        if not recurse and not full_view:
            raise KvError(403, "Permission denied: anonymous token lacks permission")
        separator = params.get("separator", "")

        def current() -> int:
            if recurse:
                return self.store.listing(key)[0]
            return self.store.get(key)[0]

        index, wait = _blocking(params)
        server = self.server
        if index > 0:
            deadline = trio.current_time() + wait + server.random.uniform(0, wait / 16)
            abandoned = server.abandoned
            server.parked += 1
            try:
                with trio.move_on_at(deadline):
                    while current() <= index and not server.failing:
                        if abandoned != server.abandoned:
                            break
                        await server.changed.wait()
            finally:
                server.parked -= 1
            if server.failing:
                raise KvError(500, "rpc error making call: No cluster leader")
        headers = [
            ("X-Consul-Index", str(current())),
            ("X-Consul-KnownLeader", "true"),
            ("X-Consul-LastContact", "0"),
        ]
        if recurse and not full_view:
            headers.append(("X-Consul-Results-Filtered-By-ACLs", "true"))
        if keys:
            names = self.store.keys(key, separator)[1] if full_view else []
            return _found(headers, json.dumps(names).encode(), bool(names))
        if recurse:
            found = self.store.listing(key)[1] if full_view else []
            return _found(headers, json.dumps([e.json() for e in found]).encode(), bool(found))
        entry = self.store.get(key)[1]
        if entry is None:
            return 404, headers, b""
        if _flag(params, "raw"):
            return 200, [*headers, ("Content-Type", "application/octet-stream")], entry.value
        return _found(headers, json.dumps([entry.json()]).encode(), True)


def _found(headers: list[tuple[str, str]], payload: bytes, any_: bool) -> Answer:
    if not any_:
        return 404, headers, b""
    return 200, [*headers, ("Content-Type", "application/json")], payload


def _json(text: str) -> Answer:
    return 200, [("Content-Type", "application/json")], text.encode()


def _blocking(params: dict[str, str]) -> tuple[int, float]:
    from tests.consul_api.server import _blocking_params, _Reply

    try:
        return _blocking_params(params)
    except _Reply as reply:
        raise KvError(reply.status, reply.body) from None
