"""The fleet document: fleet-wide settings as named resources, versioned as a whole.

Why one document and not one key per resource: a change that spans resources (a policy and
the export it needs) must reach a site whole or not at all, and "which version runs where"
needs one answer per site.  So the authority (Consul KV) holds one document; its version is
the SHA-256 of its canonical form, and every gateway reports the version it runs.

A resource is ``{kind, name, targets, spec}``: ``kind`` names the gateway config section it
adds entries to (:data:`FLEET_KINDS`: the sections a reload applies live and that are
fleet-wide by nature), ``spec`` is one table of that section exactly as a site's own file
would write it, and ``targets`` is ``["*"]`` (every site) or a list of site names.  A site's
own file keeps what is local (identity, listeners, peers, sources, limits).

The canonical form sorts resources by (kind, name) and targets by name, and serialises JSON
with sorted keys and no spaces, so the version does not depend on the order of a file, and a
site applies the resources of a kind in name order (a ``[[service_traffic]]`` first-match
list is ordered by name: name them ``10-...``, ``20-...`` when order matters).

Pure: no I/O; problems are ``(path, message)`` pairs with paths like
``resources[3].spec.retries.max`` (``fleet.`` is prefixed where a site reports them).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from foundation.names import label_problem
from gateway.config.decode import Decoder
from gateway.config.model import GatewayConfig

#: The config sections fleet resources may add to.  Open: a section joins when the reload
#: applies it live.  Routes are first-match per address: a site's own routes come first, the
#: fleet's follow in name order.
FLEET_KINDS: tuple[str, ...] = (
    "policies",
    "exports",
    "service_traffic",
    "caller_headers",
    "routes",
)
ALL_SITES = "*"
#: Consul's default bound on one KV value; the document is one value.
MAX_DOCUMENT_BYTES = 512 * 1024
MAX_RESOURCES = 1000
_MAX_TARGETS = 1000

Problems = list[tuple[str, str]]
Change = Literal["added", "removed", "changed"]


class FleetDocumentInvalid(ValueError):
    """A fleet document was rejected; ``problems`` lists every (path, message)."""

    def __init__(self, problems: Problems) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p or '<root>'}: {m}" for p, m in problems))


@dataclass(frozen=True)
class Resource:
    kind: str
    name: str
    targets: tuple[str, ...]
    spec: Mapping[str, Any]

    def applies_to(self, site: str) -> bool:
        return ALL_SITES in self.targets or site in self.targets

    def canonical(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "targets": list(self.targets),
            "spec": self.spec,
        }


@dataclass(frozen=True)
class FleetDocument:
    """Resources in canonical order; :attr:`version` names the whole."""

    resources: tuple[Resource, ...] = ()

    def canonical_json(self) -> str:
        body = {"resources": [r.canonical() for r in self.resources]}
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def version(self) -> str:
        """The first 12 hex digits of the SHA-256 of the canonical JSON (as config versions)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]

    def for_site(self, site: str) -> tuple[tuple[int, Resource], ...]:
        """The resources targeting ``site``, with their index in the document."""
        return tuple((i, r) for i, r in enumerate(self.resources) if r.applies_to(site))

    def get(self, kind: str, name: str) -> Resource | None:
        return next((r for r in self.resources if (r.kind, r.name) == (kind, name)), None)


EMPTY = FleetDocument()


def parse_document(data: Any, *, max_resources: int = MAX_RESOURCES) -> FleetDocument:
    """Decode ``{"resources": [...]}`` (from TOML or JSON); :class:`FleetDocumentInvalid`
    with every problem of the structure and of each resource's spec."""
    problems: Problems = []
    if not isinstance(data, dict):
        raise FleetDocumentInvalid([("", "a fleet document must be a table")])
    for key in data:
        if key != "resources":
            problems.append((str(key), "unknown key (a fleet document has only 'resources')"))
    raw = data.get("resources", [])
    if not isinstance(raw, list):
        raise FleetDocumentInvalid([*problems, ("resources", "must be an array of tables")])
    if len(raw) > max_resources:
        raise FleetDocumentInvalid(
            [*problems, ("resources", f"{len(raw)} resources; at most {max_resources}")]
        )
    found: list[tuple[int, Resource]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(raw):
        resource = _resource(item, f"resources[{i}]", problems)
        if resource is None:
            continue
        key = (resource.kind, resource.name)
        if key in seen:
            problems.append(
                (f"resources[{i}].name", f"{key[0]} {key[1]!r} is also resources[{seen[key]}]")
            )
            continue
        seen[key] = i
        found.append((i, resource))
    # Paths name each resource's index in the text decoded (the file being applied); a site
    # names the index in the canonical document it read (see gateway.fleet.merge).
    for i, resource in found:
        for path, message in spec_problems(resource):
            problems.append((f"resources[{i}].spec{path}", message))
    ordered = sorted(found, key=lambda ir: (ir[1].kind, ir[1].name))
    if problems:
        raise FleetDocumentInvalid(problems)
    return FleetDocument(tuple(r for _, r in ordered))


def _resource(item: Any, path: str, problems: Problems) -> Resource | None:
    if not isinstance(item, dict):
        problems.append((path, "must be a table"))
        return None
    before = len(problems)
    for key in item:
        if key not in ("kind", "name", "targets", "spec"):
            problems.append((f"{path}.{key}", "unknown key"))
    kind, name = item.get("kind"), item.get("name")
    if kind not in FLEET_KINDS:
        problems.append((f"{path}.kind", f"must be one of {', '.join(FLEET_KINDS)}, not {kind!r}"))
    if not isinstance(name, str) or (why := label_problem(name)) is not None:
        problems.append((f"{path}.name", "must be a DNS label" if name is None else str(why)))
    targets = item.get("targets", [ALL_SITES])
    if not isinstance(targets, list) or not targets or len(targets) > _MAX_TARGETS:
        problems.append((f"{path}.targets", f'must list "*" or 1..{_MAX_TARGETS} site names'))
        targets = []
    for j, site in enumerate(targets):
        if site != ALL_SITES and (not isinstance(site, str) or label_problem(site)):
            problems.append((f"{path}.targets[{j}]", f'{site!r} is neither "*" nor a site name'))
    spec = item.get("spec", {})
    if not isinstance(spec, dict):
        problems.append((f"{path}.spec", "must be a table"))
    else:
        try:
            spec = json.loads(json.dumps(spec, allow_nan=False))
        except (TypeError, ValueError) as err:
            problems.append((f"{path}.spec", f"holds a value JSON cannot carry: {err}"))
    if len(problems) > before:
        return None
    return Resource(str(kind), str(name), tuple(sorted(set(targets))), spec)


def section_type(kind: str) -> Any:
    """The dataclass one table of config section ``kind`` decodes into."""
    hint = typing.get_type_hints(GatewayConfig)[kind]
    return typing.get_args(hint)[0]


def spec_problems(resource: Resource) -> Problems:
    """Problems of the spec alone, decoded as the site's loader would (paths relative to the
    spec, starting with "." or "": cross-site checks -- an export's peers -- are the sites')."""
    decoder = Decoder(Path("/"))
    decoder.decode_root(section_type(resource.kind), dict(resource.spec))
    return [(f".{p}" if p else "", m) for p, m in decoder.problems]


def load_document_text(text: str, *, filename: str = "") -> FleetDocument:
    """A fleet document from a file: TOML (``[[resources]]``) or, starting with ``{``, JSON."""
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise FleetDocumentInvalid([("", f"larger than {MAX_DOCUMENT_BYTES} bytes")])
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise FleetDocumentInvalid(
            [("", f"{filename or 'document'}: not TOML/JSON: {err}")]
        ) from None
    return parse_document(data)


def diff(old: FleetDocument, new: FleetDocument) -> list[tuple[Change, str, str]]:
    """Per resource: (added | removed | changed, kind, name), in canonical order."""
    out: list[tuple[Change, str, str]] = []
    before = {(r.kind, r.name): r for r in old.resources}
    after = {(r.kind, r.name): r for r in new.resources}
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a is None:
            out.append(("added", *key))
        elif b is None:
            out.append(("removed", *key))
        elif a != b:
            out.append(("changed", *key))
    return out
