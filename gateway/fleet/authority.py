"""Writing the fleet document to Consul KV: apply (CAS), history, rollback.

Layout under ``prefix``: ``current`` holds the canonical JSON of the document every gateway
runs; ``history/<version>`` holds each version applied, so that ``isthmus rollback VERSION``
can restore one.  Why compare-and-set: two operators applying at once must not silently
overwrite each other -- each write names the ``ModifyIndex`` of the ``current`` it read,
and the second one is refused (:class:`Conflict`) instead of losing the first one's change.
History is written before ``current`` (a version in ``current`` is always in history) and
trimmed to the newest ``keep`` entries by ``ModifyIndex``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.fleet.consul_kv import ConsulKv
from gateway.fleet.document import (
    EMPTY,
    MAX_DOCUMENT_BYTES,
    MAX_RESOURCES,
    FleetDocument,
    FleetDocumentInvalid,
)
from gateway.fleet.watch import current_key, decode_value, history_key

HISTORY_KEEP = 20


class AuthorityError(Exception):
    """The fleet authority refused or holds something unusable (the message says what)."""


class Conflict(AuthorityError):
    """``current`` changed between the read and the write (another apply won)."""


@dataclass(frozen=True, slots=True)
class Current:
    """What ``current`` holds: its document (EMPTY when absent) and ModifyIndex (0: absent)."""

    document: FleetDocument
    modify_index: int
    problems: tuple[str, ...] = ()  # set when the stored value does not decode


async def read_current(kv: ConsulKv, prefix: str) -> Current:
    _, entry = await kv.get(current_key(prefix))
    if entry is None:
        return Current(EMPTY, 0)
    doc, version, problems = decode_value(
        entry.value, max_bytes=MAX_DOCUMENT_BYTES, max_resources=MAX_RESOURCES
    )
    if doc is None:
        shown = tuple(p.render(None) for p in problems)
        return Current(EMPTY, entry.modify_index, (f"stored version {version}:", *shown))
    return Current(doc, entry.modify_index)


async def write(
    kv: ConsulKv, prefix: str, doc: FleetDocument, read: Current, *, keep: int = HISTORY_KEEP
) -> None:
    """Make ``doc`` the current document, if ``current`` is still what ``read`` saw."""
    value = doc.canonical_json().encode()
    if len(value) > MAX_DOCUMENT_BYTES:
        raise FleetDocumentInvalid([("", f"{len(value)} bytes; at most {MAX_DOCUMENT_BYTES}")])
    await kv.put(history_key(prefix, doc.version), value)
    if not await kv.put(current_key(prefix), value, cas=read.modify_index):
        raise Conflict(
            f"{current_key(prefix)} changed since it was read (another apply or rollback?); "
            "nothing was changed: run `isthmus diff` and try again"
        )
    await trim_history(kv, prefix, keep)


async def trim_history(kv: ConsulKv, prefix: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` history entries; the versions deleted."""
    entries = await kv.entries(f"{prefix}/history/")
    entries.sort(key=lambda e: e.modify_index)
    doomed = entries[: max(0, len(entries) - keep)]
    for entry in doomed:
        await kv.delete(entry.key, cas=entry.modify_index)
    return [e.key.rsplit("/", 1)[-1] for e in doomed]


async def history(kv: ConsulKv, prefix: str) -> list[str]:
    """The versions kept, oldest first."""
    entries = await kv.entries(f"{prefix}/history/")
    entries.sort(key=lambda e: e.modify_index)
    return [e.key.rsplit("/", 1)[-1] for e in entries]


async def load_version(kv: ConsulKv, prefix: str, version: str) -> FleetDocument:
    """The document of history ``version``; :class:`AuthorityError` if not kept or unusable."""
    if not version.isalnum() or len(version) > 64:
        raise AuthorityError(f"{version!r} is not a version (12 hex digits)")
    _, entry = await kv.get(history_key(prefix, version))
    if entry is None:
        kept = ", ".join(await history(kv, prefix)) or "none"
        raise AuthorityError(f"version {version} is not in the history (kept: {kept})")
    doc, found, problems = decode_value(
        entry.value, max_bytes=MAX_DOCUMENT_BYTES, max_resources=MAX_RESOURCES
    )
    if doc is None or found != version:
        why = "; ".join(p.render(None) for p in problems) or f"it holds version {found}"
        raise AuthorityError(f"history entry {version} is unusable: {why}")
    return doc
