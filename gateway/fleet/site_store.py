"""The control site's copy of the fleet document: ``current``, and a history of 20 versions.

The same semantics as the Consul KV authority (:mod:`gateway.fleet.authority`), on the control
site's disk instead of in Consul: ``current.json`` holds the canonical JSON of the document
every site should run; ``history/<version>.json`` each version applied, newest last in
``history.json``, so ``isthmus rollback VERSION`` can restore one.  A write names the version
it read (compare-and-set): two operators applying at once cannot silently overwrite each other
(:class:`~gateway.fleet.authority.Conflict`).  History is written before ``current``, and every
file is replaced atomically (write to a temporary file, ``fsync``, ``rename``), so a crash leaves
either the old or the new version, never half of one.  Blocking file I/O: the adapter calls
these methods in a worker thread, one at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from gateway.config.fleet import FleetConfig
from gateway.fleet.authority import HISTORY_KEEP, AuthorityError, Conflict
from gateway.fleet.document import EMPTY, FleetDocument
from gateway.fleet.watch import decode_value

_VERSION_CHARS = frozenset("0123456789abcdef")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class SiteStore:
    """The fleet document in ``root`` (see the module docstring)."""

    def __init__(
        self, root: Path, *, max_bytes: int, max_resources: int, keep: int = HISTORY_KEEP
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_resources = max_resources
        self.keep = keep

    def _decode(self, data: bytes, what: str) -> FleetDocument:
        doc, version, problems = decode_value(
            data, max_bytes=self.max_bytes, max_resources=self.max_resources
        )
        if doc is None:
            why = "; ".join(p.render(None) for p in problems)
            raise AuthorityError(f"{what} (version {version}) is unusable: {why}")
        return doc

    def read_current(self) -> FleetDocument:
        """The current document (EMPTY when none was ever applied)."""
        try:
            data = (self.root / "current.json").read_bytes()
        except FileNotFoundError:
            return EMPTY
        return self._decode(data, f"{self.root / 'current.json'}")

    def history(self) -> list[str]:
        """The versions kept, oldest first."""
        try:
            raw = json.loads((self.root / "history.json").read_text())
        except FileNotFoundError:
            return []
        except ValueError as err:
            raise AuthorityError(f"{self.root / 'history.json'}: {err}") from None
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise AuthorityError(f"{self.root / 'history.json'}: not a list of versions")
        return [v for v in raw if _is_version(v)]

    def load_version(self, version: str) -> FleetDocument:
        """The document of history ``version``; :class:`AuthorityError` if not kept."""
        if not _is_version(version):
            raise AuthorityError(f"{version!r} is not a version (12 hex digits)")
        kept = self.history()
        if version not in kept:
            raise AuthorityError(
                f"version {version} is not in the history (kept: {', '.join(kept) or 'none'})"
            )
        doc = self._decode((self.root / "history" / f"{version}.json").read_bytes(), version)
        if doc.version != version:
            raise AuthorityError(f"history entry {version} holds version {doc.version}")
        return doc

    def write(self, doc: FleetDocument, expect: str | None) -> FleetDocument:
        """Make ``doc`` current if the current version is still ``expect`` (None: do not
        check); the document it replaced."""
        old = self.read_current()
        if expect is not None and old.version != expect:
            raise Conflict(
                f"the current version is {old.version}, not {expect} (another apply or "
                "rollback?); nothing was changed: run `isthmus diff` and try again"
            )
        data = doc.canonical_json().encode()
        if len(data) > self.max_bytes:
            raise AuthorityError(f"{len(data)} bytes; at most {self.max_bytes}")
        (self.root / "history").mkdir(parents=True, exist_ok=True)
        _write_atomic(self.root / "history" / f"{doc.version}.json", data)
        kept = [v for v in self.history() if v != doc.version] + [doc.version]
        doomed, kept = kept[: max(0, len(kept) - self.keep)], kept[-self.keep :]
        _write_atomic(self.root / "history.json", json.dumps(kept).encode())
        for version in doomed:
            (self.root / "history" / f"{version}.json").unlink(missing_ok=True)
        _write_atomic(self.root / "current.json", data)
        return old

    def remember(self, doc: FleetDocument) -> None:
        """At a site that takes pushes: remember the version applied (``current.json`` only),
        to restart on while the control site is unreachable."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.root / "current.json", doc.canonical_json().encode())


def _is_version(value: str) -> bool:
    return 0 < len(value) <= 64 and _VERSION_CHARS.issuperset(value)


def store_of(fleet: FleetConfig) -> SiteStore:
    """The store of a control site's ``[fleet]`` (``store_dir`` is checked by the config)."""
    assert fleet.store_dir is not None, "checked by the config (fleet.store_dir)"
    return SiteStore(
        fleet.store_dir, max_bytes=fleet.max_document_bytes, max_resources=fleet.max_resources
    )
