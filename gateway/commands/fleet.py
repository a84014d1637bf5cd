"""``isthmus apply FILE``, ``isthmus diff FILE``, ``isthmus rollback VERSION``: the fleet
document in Consul KV (docs/fleet.md).

Where the authority is: ``--consul URL`` (with ``--token-file`` or ``CONSUL_HTTP_TOKEN``), or
the Consul source named by ``[fleet]`` in a site's config (``-c CONFIG``: its address, token,
TLS and prefix), else ``http://127.0.0.1:8500``.  FILE is validated before anything is
written: its structure and each resource's spec, and -- with ``--check-site CONFIG``, as many
as wanted -- the result merged into each of those sites' own files.  The sites validate again
when they read it (they know their own file); a version one of them rejects is reported by
``isthmus status --fleet``.  Exit codes: 0 done (or nothing to do), 1 the authority
unreachable, 2 invalid input, 3 refused (a concurrent apply changed the document first, or
the authority's ACLs deny the token).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul_parse import ConsulAclDenied, ConsulError
from foundation.redact import remember_secret
from gateway.commands import fleet_site
from gateway.config.errors import ConfigInvalid
from gateway.config.fleet import FleetConfig, fleet_consul
from gateway.config.load import load_file, read_config_text
from gateway.fleet.authority import (
    AuthorityError,
    Conflict,
    Current,
    history,
    load_version,
    read_current,
    write,
)
from gateway.fleet.consul_kv import ConsulKv, open_kv
from gateway.fleet.document import (
    FleetDocument,
    FleetDocumentInvalid,
    diff,
    load_document_text,
)
from gateway.fleet.merge import load_with_fleet

EXIT_OK, EXIT_UNREACHABLE, EXIT_INVALID, EXIT_REFUSED = 0, 1, 2, 3
DEFAULT_CONSUL = "http://127.0.0.1:8500"


def register(sub: Any) -> None:
    apply = sub.add_parser("apply", help="write a fleet document to the authority (Consul KV)")
    apply.add_argument("file", type=Path, help="fleet document (TOML [[resources]] or JSON)")
    apply.add_argument(
        "--check-site",
        type=Path,
        action="append",
        default=[],
        metavar="CONFIG",
        help="also validate the document merged into this site's config (repeatable)",
    )
    _authority_arguments(apply)
    apply.set_defaults(func=_apply)
    show = sub.add_parser("diff", help="show what applying a fleet document would change")
    show.add_argument("file", type=Path)
    _authority_arguments(show)
    show.set_defaults(func=_diff)
    back = sub.add_parser("rollback", help="make an earlier fleet version current again")
    back.add_argument("version", nargs="?", help="the version (omit to list the kept ones)")
    _authority_arguments(back)
    back.set_defaults(func=_rollback)


def _authority_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consul", metavar="URL", help=f"Consul agent (default {DEFAULT_CONSUL})")
    parser.add_argument("--token-file", type=Path, help="Consul ACL token file")
    parser.add_argument("--prefix", help="KV prefix (default: [fleet] prefix, or isthmus/fleet)")
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        help="a site's config: its [fleet] Consul source and prefix, or its SVID for --site",
    )
    fleet_site.add_arguments(parser)


def authority(args: argparse.Namespace) -> tuple[ConsulSourceConfig, str]:
    """The Consul source config and prefix the arguments name (ValueError/ConfigInvalid)."""
    source: ConsulSourceConfig | None = None
    prefix = FleetConfig().prefix
    if args.config is not None:
        config = load_file(args.config)
        source = fleet_consul(config)
        prefix = config.fleet.prefix
        if source is None and not args.consul:
            raise ValueError(f"{args.config}: no Consul source for [fleet]; pass --consul URL")
    token = os.environ.get("CONSUL_HTTP_TOKEN") or None
    if source is None or args.consul:
        source = ConsulSourceConfig(
            kind="consul",
            name="fleet-cli",
            address=args.consul or DEFAULT_CONSUL,
            token=None if args.token_file else token,
            token_file=args.token_file,
        )
    remember_secret(source.token)
    return source, args.prefix or prefix


def _run(
    args: argparse.Namespace, command: str, body: Callable[[ConsulKv, str], Awaitable[int]]
) -> int:
    try:
        source, prefix = authority(args)
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_INVALID
    except (ValueError, OSError) as exc:
        print(f"isthmus {command}: {exc}", file=sys.stderr)
        return EXIT_INVALID

    async def main() -> int:
        kv = await open_kv(source)
        return await body(kv, prefix)

    try:
        return trio.run(main)
    except Conflict as exc:
        print(f"isthmus {command}: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except AuthorityError as exc:
        print(f"isthmus {command}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except ConsulAclDenied as exc:
        print(f"isthmus {command}: refused by the authority (ACL token): {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ConsulError as exc:
        print(f"isthmus {command}: the authority at {source.address}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def read_document(path: Path, sites: list[Path]) -> FleetDocument | None:
    """FILE decoded and validated (also against each ``sites`` config); None after printing
    every problem."""
    try:
        doc = load_document_text(read_config_text(path), filename=str(path))
    except FleetDocumentInvalid as exc:
        for where, message in exc.problems:
            print(f"{path}: {where or '<root>'}: {message}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found; nothing written", file=sys.stderr)
        return None
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        return None
    bad = False
    for site in sites:
        try:
            load_with_fleet(
                read_config_text(site), doc, base_dir=site.parent.resolve(), filename=str(site)
            )
        except ConfigInvalid as exc:
            print(exc.report(), file=sys.stderr)
            bad = True
    if bad:
        print("the document is invalid for a site above; nothing written", file=sys.stderr)
        return None
    return doc


def print_diff(old: FleetDocument, new: FleetDocument) -> None:
    marks = {"added": "+", "removed": "-", "changed": "~"}
    for change, kind, name in diff(old, new):
        print(f"  {marks[change]} {kind}/{name} ({change})")


def _stored_problems(current: Current) -> None:
    for line in current.problems:
        print(f"warning: the current document does not decode: {line}", file=sys.stderr)


def _apply(args: argparse.Namespace) -> int:
    doc = read_document(args.file, args.check_site)
    if doc is None:
        return EXIT_INVALID
    if fleet_site.wanted(args):
        return _site_apply(args, doc)

    async def body(kv: ConsulKv, prefix: str) -> int:
        current = await read_current(kv, prefix)
        _stored_problems(current)
        if current.modify_index and not current.problems and current.document == doc:
            print(f"unchanged; version {doc.version} is current")
            return EXIT_OK
        await write(kv, prefix, doc, current)
        old = current.document.version if current.modify_index else "none"
        print(f"applied version {doc.version} (was {old})")
        print_diff(current.document, doc)
        return EXIT_OK

    return _run(args, "apply", body)


def _diff(args: argparse.Namespace) -> int:
    doc = read_document(args.file, [])
    if doc is None:
        return EXIT_INVALID
    if fleet_site.wanted(args):
        return _site_diff(args, doc)

    async def body(kv: ConsulKv, prefix: str) -> int:
        current = await read_current(kv, prefix)
        _stored_problems(current)
        old = current.document.version if current.modify_index else "none"
        if current.document == doc and current.modify_index:
            print(f"no change; version {doc.version} is current")
            return EXIT_OK
        print(f"version {old} -> {doc.version}")
        print_diff(current.document, doc)
        return EXIT_OK

    return _run(args, "diff", body)


def _rollback(args: argparse.Namespace) -> int:
    if fleet_site.wanted(args):
        return _site_rollback(args)

    async def body(kv: ConsulKv, prefix: str) -> int:
        if not args.version:
            kept = await history(kv, prefix)
            print("\n".join(kept) if kept else "no versions kept", file=sys.stdout)
            return EXIT_OK
        doc = await load_version(kv, prefix, args.version)
        current = await read_current(kv, prefix)
        if current.modify_index and current.document == doc:
            print(f"unchanged; version {doc.version} is current")
            return EXIT_OK
        await write(kv, prefix, doc, current)
        print(f"rolled back to version {doc.version} (was {current.document.version})")
        print_diff(current.document, doc)
        return EXIT_OK

    return _run(args, "rollback", body)


# -- a control site (docs/fleet.md, "A control site") ---------------------------------------


def _site_apply(args: argparse.Namespace, doc: FleetDocument) -> int:
    try:
        to = fleet_site.target(args)
        old = fleet_site.current(to)
        if old == doc:
            print(f"unchanged; version {doc.version} is current")
            return EXIT_OK
        body = {"document": json.loads(doc.canonical_json()), "expect": old.version}
        fleet_site.write(to, "/fleet/apply", body)
    except fleet_site.SiteCliError as err:
        return fleet_site.fail("apply", err)
    except FleetDocumentInvalid as err:
        print(f"isthmus apply: the control site's current document: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"applied version {doc.version} (was {old.version})")
    print_diff(old, doc)
    return EXIT_OK


def _site_diff(args: argparse.Namespace, doc: FleetDocument) -> int:
    try:
        old = fleet_site.current(fleet_site.target(args))
    except fleet_site.SiteCliError as err:
        return fleet_site.fail("diff", err)
    except FleetDocumentInvalid as err:
        print(f"isthmus diff: the control site's current document: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if old == doc:
        print(f"no change; version {doc.version} is current")
        return EXIT_OK
    print(f"version {old.version} -> {doc.version}")
    print_diff(old, doc)
    return EXIT_OK


def _site_rollback(args: argparse.Namespace) -> int:
    try:
        to = fleet_site.target(args)
        if not args.version:
            kept = fleet_site.call(to, "GET", "/fleet/history").get("versions") or []
            print("\n".join(kept) if kept else "no versions kept")
            return EXIT_OK
        old = fleet_site.current(to)
        if old.version == args.version:
            print(f"unchanged; version {old.version} is current")
            return EXIT_OK
        answer = fleet_site.write(
            to, "/fleet/rollback", {"version": args.version, "expect": old.version}
        )
    except fleet_site.SiteCliError as err:
        return fleet_site.fail("rollback", err)
    except FleetDocumentInvalid as err:
        print(f"isthmus rollback: the control site's current document: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"rolled back to version {answer.get('version')} (was {old.version})")
    for change, kind, name in answer.get("changes") or []:
        mark = {"added": "+", "removed": "-", "changed": "~"}.get(change, "?")
        print(f"  {mark} {kind}/{name} ({change})")
    return EXIT_OK
