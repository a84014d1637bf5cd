"""Load a gateway config file: parse TOML, decode, and report every problem at once."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from gateway.config.decode import Decoder
from gateway.config.errors import ConfigInvalid, Problem
from gateway.config.locate import find_line, line_index
from gateway.config.model import GatewayConfig

MAX_CONFIG_BYTES = 4 * 1024 * 1024


def load_text(text: str, *, base_dir: Path, filename: str | None = None) -> GatewayConfig:
    """Decode config ``text``; relative paths resolve against ``base_dir``.

    Raises :class:`ConfigInvalid` listing every problem (with the line where the TOML allows).
    """
    data = parse_toml(text, filename=filename)
    decoder = Decoder(base_dir)
    config = decoder.decode_root(GatewayConfig, data)
    if decoder.problems or config is None:
        index = line_index(text)
        problems = [Problem(path, msg, find_line(index, path)) for path, msg in decoder.problems]
        problems.sort(key=lambda p: (p.line or 0, p.path))
        raise ConfigInvalid(problems, filename)
    return config


def parse_toml(text: str, *, filename: str | None = None) -> dict[str, Any]:
    """The TOML document ``text``; :class:`ConfigInvalid` (with the line) if it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
        raise ConfigInvalid([Problem("", f"TOML syntax: {exc}", line)], filename) from None


def _line_from_message(message: str) -> int | None:
    """Python 3.11's tomllib puts the position only in the text: '(at line 3, column 7)'."""
    match = re.search(r"at line (\d+)", message)
    return int(match.group(1)) if match else None


def load_file(path: Path) -> GatewayConfig:
    """Load and validate the gateway config at ``path``."""
    text = read_config_text(path)
    return load_text(text, base_dir=path.parent.resolve(), filename=str(path))


def read_config_text(path: Path) -> str:
    """The text of the config file at ``path`` (bounded, UTF-8), or :class:`ConfigInvalid`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigInvalid(
            [Problem("", f"cannot read config: {exc.strerror}")], str(path)
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigInvalid(
            [Problem("", f"config is larger than {MAX_CONFIG_BYTES} bytes")], str(path)
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigInvalid([Problem("", f"config is not UTF-8: {exc}")], str(path)) from None
