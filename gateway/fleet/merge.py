"""A site's config = its own file + the fleet resources targeting it, validated as one.

Why merge the *data* and decode once: the same loader as ``isthmus config check`` then judges
the result, cross-section rules included (an export naming a peer this site does not have),
and reports every problem at once.  Each resource's spec becomes one more table of its section,
after the file's own tables, in the document's (canonical, name) order.  A problem inside a
fleet table is reported at the resource it came from -- ``fleet.resources[3].spec.retries.max``
-- and a problem of the file keeps its line, so an operator sees at once whose mistake it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gateway.config.decode import Decoder
from gateway.config.errors import ConfigInvalid, Problem
from gateway.config.load import parse_toml
from gateway.config.locate import find_line, line_index
from gateway.config.model import GatewayConfig
from gateway.fleet.document import FLEET_KINDS, FleetDocument

#: Per section: how many tables the file has, then the document index of each fleet table.
Owners = dict[str, tuple[int, tuple[int, ...]]]
_ITEM = re.compile(r"^([a-z_]+)\[(\d+)\](.*)$")


def merge_data(
    data: dict[str, Any], doc: FleetDocument, site: str
) -> tuple[dict[str, Any], Owners]:
    """The file's TOML ``data`` with the specs targeting ``site`` appended to their sections."""
    merged = dict(data)
    owners: Owners = {}
    for kind in FLEET_KINDS:
        mine = [(i, r) for i, r in doc.for_site(site) if r.kind == kind]
        local = merged.get(kind, [])
        if not mine or not isinstance(local, list):
            continue  # a malformed local section is the file's problem, reported as such
        merged[kind] = [*local, *(dict(r.spec) for _, r in mine)]
        owners[kind] = (len(local), tuple(i for i, _ in mine))
    return merged, owners


def fleet_path(path: str, owners: Owners) -> str | None:
    """``policies[4].allow_ids[0]`` -> ``fleet.resources[7].spec.allow_ids[0]`` when table 4 of
    ``policies`` came from the fleet document; None when it is the file's own."""
    match = _ITEM.match(path)
    if match is None or match.group(1) not in owners:
        return None
    local, indexes = owners[match.group(1)]
    n = int(match.group(2))
    if n < local or n - local >= len(indexes):
        return None
    return f"fleet.resources[{indexes[n - local]}].spec{match.group(3)}"


def load_with_fleet(
    text: str, doc: FleetDocument, *, base_dir: Path, filename: str | None = None
) -> GatewayConfig:
    """The site's config from its file ``text`` plus ``doc``; :class:`ConfigInvalid` listing
    every problem (the file's with their lines, the fleet's at their resource)."""
    data = parse_toml(text, filename=filename)
    site = data.get("site")
    name = site.get("name") if isinstance(site, dict) else None
    merged, owners = merge_data(data, doc, name if isinstance(name, str) else "")
    decoder = Decoder(base_dir)
    config = decoder.decode_root(GatewayConfig, merged)
    if decoder.problems or config is None:
        index = line_index(text)
        problems = []
        for path, message in decoder.problems:
            moved = fleet_path(path, owners)
            if moved is not None:
                problems.append(Problem(moved, _named(moved, message, doc)))
            else:
                problems.append(Problem(path, message, find_line(index, path)))
        problems.sort(key=lambda p: (p.line or 0, p.path))
        raise ConfigInvalid(problems, filename)
    return config


def warnings_with_fleet(config: GatewayConfig, doc: FleetDocument) -> list[tuple[str, str]]:
    """``config.warnings()`` with paths into the fleet document where they belong."""
    owners: Owners = {}
    for kind in FLEET_KINDS:
        mine = tuple(i for i, r in doc.for_site(config.site.name) if r.kind == kind)
        if mine:
            owners[kind] = (len(getattr(config, kind)) - len(mine), mine)
    out = []
    for path, message in config.warnings():
        moved = fleet_path(path, owners)
        out.append((path, message) if moved is None else (moved, _named(moved, message, doc)))
    return out


def _named(path: str, message: str, doc: FleetDocument) -> str:
    """``message`` naming the resource of ``path`` (its index is the canonical one, which
    may differ from its place in the file an operator applied)."""
    match = re.match(r"^fleet\.resources\[(\d+)\]", path)
    if match is None:
        return message
    resource = doc.resources[int(match.group(1))]
    return f"{message} (resource {resource.kind}/{resource.name})"
