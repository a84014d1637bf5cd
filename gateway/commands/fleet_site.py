"""``isthmus apply/diff/rollback`` against a control site: its fleet API over mTLS.

The client presents an SVID: ``--svid``/``--key`` with ``--bundle TRUST_DOMAIN=PATH`` (as
many as needed), or the ``[identity]`` of the site config given with ``-c``.  It verifies the
control site's certificate with the same strict SPIFFE rules as a link, per trust domain, and
with ``--authority-id`` that it is exactly that SPIFFE ID.  Where the API is: ``--site URL``
(``https://host:port``), else the ``[fleet] api_address``/``api_port`` of the ``-c`` config
when that config is the control site's.  The key is read by OpenSSL only; nothing here
prints it.  Exit codes as for Consul: 0 done, 1 unreachable, 2 invalid, 3 refused (not a
writer, no acceptable certificate, or another write came first).
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.errors import IsthmusError
from foundation.spiffe_id import SpiffeId, SpiffeIdError, TrustDomain
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_file
from gateway.fleet.api_tls import client_context, verified_peer_id
from gateway.fleet.document import FleetDocument, parse_document
from gateway.reload.identity import bundle_sources
from overlay.identity.state import BundleSource, IdentityState, load_identity_state

EXIT_OK, EXIT_UNREACHABLE, EXIT_INVALID, EXIT_REFUSED = 0, 1, 2, 3
TIMEOUT_S = 70.0  # the API bounds a write to 60 s
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class SiteCliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--site", metavar="URL", help="a control site's fleet API, https://host:port"
    )
    parser.add_argument("--svid", type=Path, help="with --site: the client SVID (PEM chain)")
    parser.add_argument("--key", type=Path, help="with --site: the SVID's private key (PEM)")
    parser.add_argument(
        "--bundle",
        action="append",
        default=[],
        metavar="TRUST_DOMAIN=PATH",
        help="with --site: a trust bundle to verify the control site with (repeatable)",
    )
    parser.add_argument(
        "--authority-id", metavar="SPIFFE_ID", help="with --site: the control site's SPIFFE ID"
    )


def wanted(args: argparse.Namespace) -> bool:
    """Whether the arguments name a control site rather than Consul."""
    if getattr(args, "site", None):
        return True
    if args.config is None or args.consul:
        return False
    try:
        return load_file(args.config).fleet.source == "site"
    except (ConfigInvalid, OSError):
        return False


@dataclass(frozen=True)
class SiteTarget:
    host: str
    port: int
    identity: IdentityState
    expected: SpiffeId | None


def _bundles(values: list[str]) -> list[BundleSource]:
    out = []
    for value in values:
        domain, sep, path = value.partition("=")
        if not sep or not path:
            raise SiteCliError(f"--bundle {value!r}: expected TRUST_DOMAIN=PATH", EXIT_INVALID)
        try:
            out.append(BundleSource(TrustDomain.parse(domain), Path(path)))
        except SpiffeIdError as err:
            raise SiteCliError(f"--bundle {value!r}: {err}", EXIT_INVALID) from None
    return out


def target(args: argparse.Namespace) -> SiteTarget:
    """Where to connect and with which SVID (:class:`SiteCliError` when it cannot be had)."""
    config = None
    if args.config is not None:
        try:
            config = load_file(args.config)
        except ConfigInvalid as exc:
            raise SiteCliError(exc.report(), EXIT_INVALID) from None
    url = args.site
    if url is None and config is not None and config.fleet.authority_site == config.site.name:
        url = f"https://{config.fleet.api_address}:{config.fleet.api_port}"
    if url is None:
        raise SiteCliError("name the control site's fleet API with --site URL", EXIT_INVALID)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https" or not parsed.hostname or not parsed.port:
        raise SiteCliError(f"--site {url!r}: expected https://host:port", EXIT_INVALID)
    if args.svid is not None or args.key is not None:
        if args.svid is None or args.key is None or not args.bundle:
            raise SiteCliError("--svid needs --key and at least one --bundle", EXIT_INVALID)
        svid, key, bundles = args.svid, args.key, _bundles(args.bundle)
    elif config is not None:
        svid, key = config.identity.svid, config.identity.key
        bundles = bundle_sources(config.identity)
    else:
        raise SiteCliError(
            "present an SVID: --svid, --key and --bundle, or -c CONFIG", EXIT_INVALID
        )
    try:
        identity = load_identity_state(svid, key, bundles)
    except IsthmusError as err:
        raise SiteCliError(f"the client SVID: {err}", EXIT_INVALID) from None
    expected = None
    if args.authority_id:
        try:
            expected = SpiffeId.parse(args.authority_id)
        except SpiffeIdError as err:
            raise SiteCliError(f"--authority-id: {err}", EXIT_INVALID) from None
    return SiteTarget(parsed.hostname, parsed.port, identity, expected)


def call(to: SiteTarget, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request to the fleet API; its JSON answer (:class:`SiteCliError` otherwise)."""
    where = f"https://{to.host}:{to.port}"
    conn = http.client.HTTPSConnection(
        to.host, to.port, context=client_context(to.identity), timeout=TIMEOUT_S
    )
    try:
        try:
            conn.connect()
            peer = verified_peer_id(conn.sock, to.identity)
        except IsthmusError as err:
            raise SiteCliError(
                f"{where}: the control site's certificate: {err}", EXIT_REFUSED
            ) from None
        except ssl.SSLError as err:
            raise SiteCliError(f"{where}: TLS: {err.reason or err}", EXIT_REFUSED) from None
        except OSError as err:
            raise SiteCliError(f"{where}: {err}", EXIT_UNREACHABLE) from None
        if to.expected is not None and peer != to.expected:
            raise SiteCliError(f"{where} is {peer}, not {to.expected}", EXIT_REFUSED)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            answer = conn.getresponse()
            data = answer.read(MAX_ANSWER_BYTES)
        except (ssl.SSLError, ConnectionError) as err:
            # TLS 1.3: a client certificate the site refuses shows at the first read (an alert
            # or a closed connection), not in the handshake.
            reason = getattr(err, "reason", None) or err or type(err).__name__
            raise SiteCliError(
                f"{where}: refused the connection ({reason}): is the client SVID trusted there?",
                EXIT_REFUSED,
            ) from None
        except (OSError, http.client.HTTPException) as err:
            raise SiteCliError(f"{where}: {err or type(err).__name__}", EXIT_UNREACHABLE) from None
    finally:
        conn.close()
    try:
        parsed = json.loads(data)
    except ValueError:
        raise SiteCliError(
            f"{where}: answered {answer.status} without JSON", EXIT_UNREACHABLE
        ) from None
    if answer.status == 200:
        return parsed
    why = parsed.get("error") if isinstance(parsed, dict) else None
    problems = parsed.get("problems") if isinstance(parsed, dict) else None
    lines = [f"{where}: {answer.status}: {why}"]
    for p in problems or []:
        lines.append(f"  {p.get('path')}: {p.get('message')}")
    code = {400: EXIT_INVALID, 403: EXIT_REFUSED, 409: EXIT_REFUSED}.get(answer.status, 1)
    raise SiteCliError("\n".join(lines), code)


def current(to: SiteTarget) -> FleetDocument:
    answer = call(to, "GET", "/fleet/current")
    return parse_document(answer.get("document") if isinstance(answer, dict) else None)


def write(to: SiteTarget, path: str, body: dict[str, Any]) -> Any:
    return call(to, "POST", path, body)


def fail(command: str, err: SiteCliError) -> int:
    print(f"isthmus {command}: {err}", file=sys.stderr)
    return err.code
