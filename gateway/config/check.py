"""``isthmus config check``: everything wrong with a config file, in one run.

Why a separate pass from :func:`~gateway.config.load.load_text`: loading a config for
``isthmus run`` decodes and validates it (every field and cross-field problem at once);
a *check* also opens the files the config points at -- the SVID, its key and every trust
bundle must exist and parse, as the gateway will need them -- and reports settings that are
valid but cannot do what they say (warnings: an ``allow_sites`` entry naming no peer, an
``allow_ids`` entry in a trust domain nothing trusts).  Identity files are checked even when
other fields are wrong (from the partly decoded config), so a fix never uncovers a new error
in the next run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from foundation.errors import IsthmusError
from foundation.spiffe_id import TrustDomain
from gateway.config.decode import Decoder
from gateway.config.errors import ConfigInvalid, Problem, UnknownValue
from gateway.config.load import parse_toml, read_config_text
from gateway.config.locate import find_line, line_index
from gateway.config.model import BundleConfig, GatewayConfig, IdentityConfig
from overlay.identity.bundle import load_bundle
from overlay.identity.state import MAX_SVID_FILE_BYTES
from overlay.identity.svid import check_chain, parse_pem_certificates, parse_private_key


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Errors (the config must not be used) and warnings (it may, but look)."""

    filename: str
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]


def check_file(path: Path, *, now: dt.datetime | None = None) -> CheckReport:
    """Every problem and warning of the gateway config at ``path``."""
    try:
        text = read_config_text(path)
        data = parse_toml(text, filename=str(path))
    except ConfigInvalid as exc:
        return CheckReport(str(path), exc.problems, ())
    decoder = Decoder(path.parent.resolve())
    config = decoder.decode_root(GatewayConfig, data)
    root: Any = config if config is not None else decoder.partial
    found = list(decoder.problems)
    found += identity_problems(root, now=now or dt.datetime.now(dt.UTC))
    warnings = _guard(lambda: root.warnings()) if isinstance(root, GatewayConfig) else []
    index = line_index(text)

    def located(items: list[tuple[str, str]]) -> tuple[Problem, ...]:
        out = [Problem(p, message, find_line(index, p)) for p, message in items]
        return tuple(sorted(out, key=lambda p: (p.line or 0, p.path)))

    return CheckReport(str(path), located(found), located(warnings))


def _guard(check: Callable[[], list[tuple[str, str]]]) -> list[tuple[str, str]]:
    try:
        return check()
    except UnknownValue:
        return []


def identity_problems(root: Any, *, now: dt.datetime) -> list[tuple[str, str]]:
    """Each identity file that is missing, unreadable or invalid, with its config path.

    ``root`` may be partly decoded: a value that did not decode is skipped (its own problem
    is already reported).
    """
    identity = root.identity if isinstance(root, GatewayConfig) else None
    if not isinstance(identity, IdentityConfig):
        return []
    out: list[tuple[str, str]] = []
    chain: Any = None
    if isinstance(identity.svid, Path):
        path = identity.svid
        try:
            chain = parse_pem_certificates(_read(path), what=str(path))
            if not chain:
                raise ValueError("holds no PEM certificate")
            check_chain(chain, now=now)
        except (OSError, ValueError, IsthmusError) as exc:
            out.append(("identity.svid", _about(path, exc)))
            chain = None
    if isinstance(identity.key, Path):
        path = identity.key
        try:
            key = parse_private_key(_read(path), what=str(path))
            if chain and _spki(key.public_key()) != _spki(chain[0].public_key()):
                raise ValueError("does not match the SVID's leaf certificate")
        except (OSError, ValueError, IsthmusError) as exc:
            out.append(("identity.key", _about(path, exc)))
    bundles = identity.bundles if isinstance(identity.bundles, tuple) else ()
    for i, bundle in enumerate(bundles):
        if not (
            isinstance(bundle, BundleConfig)
            and isinstance(bundle.path, Path)
            and isinstance(bundle.trust_domain, TrustDomain)
            and bundle.format in ("auto", "pem", "spiffe-json")
        ):
            continue
        try:
            load_bundle(bundle.trust_domain, bundle.path, bundle.format)
        except (OSError, ValueError, IsthmusError) as exc:
            out.append((f"identity.bundles[{i}].path", _about(bundle.path, exc)))
    return out


def _read(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_SVID_FILE_BYTES + 1)
    if len(data) > MAX_SVID_FILE_BYTES:
        raise ValueError(f"{path}: larger than the {MAX_SVID_FILE_BYTES}-byte limit")
    return data


def _about(path: Path, exc: BaseException) -> str:
    """The error's message, starting with the file it is about."""
    if isinstance(exc, OSError):
        return f"{path}: cannot read: {exc.strerror or exc}"
    message = str(exc)
    return message if message.startswith(str(path)) else f"{path}: {message}"


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
