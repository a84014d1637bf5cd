"""HTTP/2 SETTINGS values (RFC 9113 6.5.2, RFC 8441 3): a frozen value, validated changes.

Why frozen: a connection has two of these (ours, as the peer acknowledged them, and the
peer's), and each SETTINGS frame produces a whole new value; the connection compares the old
and the new one to know what changed (a new initial window moves every stream's window, a new
table size goes to the HPACK encoder).

Validation is the RFC's, applied to each parameter in the order received, and the last value
of a repeated parameter wins (RFC 9113 6.5.3).  Unknown parameters are ignored (6.5.2).
Refused: ENABLE_PUSH other than 0 or 1, or 1 from a server; INITIAL_WINDOW_SIZE above 2**31-1
(FLOW_CONTROL_ERROR); MAX_FRAME_SIZE outside 2**14 .. 2**24-1; ENABLE_CONNECT_PROTOCOL other
than 0 or 1, or back to 0 after 1 (RFC 8441 3 -- h2 does not check this one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from foundation.errors import H2_FLOW_CONTROL_ERROR
from overlay.h2.codec.errors import CodecError

HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

MAX_WINDOW = (1 << 31) - 1
MIN_MAX_FRAME_SIZE = 1 << 14
MAX_MAX_FRAME_SIZE = (1 << 24) - 1


class SettingsError(CodecError):
    """A SETTINGS parameter with a value RFC 9113 refuses (a connection error)."""


class InitialWindowTooLarge(SettingsError):
    h2_error_code = H2_FLOW_CONTROL_ERROR


@dataclass(frozen=True, slots=True)
class Settings:
    """One side's SETTINGS; the defaults are the RFC's initial values (``None``: unlimited)."""

    header_table_size: int = 4096
    enable_push: bool = True
    max_concurrent_streams: int | None = None
    initial_window_size: int = 65535
    max_frame_size: int = 16384
    max_header_list_size: int | None = None
    enable_connect_protocol: bool = False


RFC_DEFAULTS = Settings()


def apply_settings(
    current: Settings, pairs: tuple[tuple[int, int], ...], *, from_server: bool
) -> Settings:
    """The settings after a received SETTINGS frame's parameters, or :class:`SettingsError`."""
    changes: dict[str, object] = {}
    connect = current.enable_connect_protocol
    for key, value in pairs:
        if key == HEADER_TABLE_SIZE:
            changes["header_table_size"] = value
        elif key == ENABLE_PUSH:
            if value > 1 or (from_server and value):
                raise SettingsError(f"ENABLE_PUSH of {value} from a {_role(from_server)}")
            changes["enable_push"] = bool(value)
        elif key == MAX_CONCURRENT_STREAMS:
            changes["max_concurrent_streams"] = value
        elif key == INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise InitialWindowTooLarge(f"INITIAL_WINDOW_SIZE of {value}, above 2**31-1")
            changes["initial_window_size"] = value
        elif key == MAX_FRAME_SIZE:
            if not MIN_MAX_FRAME_SIZE <= value <= MAX_MAX_FRAME_SIZE:
                raise SettingsError(f"MAX_FRAME_SIZE of {value}, outside 2**14 .. 2**24-1")
            changes["max_frame_size"] = value
        elif key == MAX_HEADER_LIST_SIZE:
            changes["max_header_list_size"] = value
        elif key == ENABLE_CONNECT_PROTOCOL:
            if value > 1 or (connect and not value):
                raise SettingsError(f"ENABLE_CONNECT_PROTOCOL of {value} (after {int(connect)})")
            connect = bool(value)
            changes["enable_connect_protocol"] = connect
    return replace(current, **changes) if changes else current  # type: ignore[arg-type]


def settings_pairs(
    settings: Settings, base: Settings = RFC_DEFAULTS
) -> tuple[tuple[int, int], ...]:
    """The parameters to send so that a peer that has ``base`` ends with ``settings``."""
    pairs: list[tuple[int, int]] = []
    if settings.header_table_size != base.header_table_size:
        pairs.append((HEADER_TABLE_SIZE, settings.header_table_size))
    if settings.enable_push != base.enable_push:
        pairs.append((ENABLE_PUSH, int(settings.enable_push)))
    if settings.max_concurrent_streams != base.max_concurrent_streams:
        if settings.max_concurrent_streams is None:
            raise ValueError("an unlimited MAX_CONCURRENT_STREAMS cannot be sent")
        pairs.append((MAX_CONCURRENT_STREAMS, settings.max_concurrent_streams))
    if settings.initial_window_size != base.initial_window_size:
        pairs.append((INITIAL_WINDOW_SIZE, settings.initial_window_size))
    if settings.max_frame_size != base.max_frame_size:
        pairs.append((MAX_FRAME_SIZE, settings.max_frame_size))
    if settings.max_header_list_size != base.max_header_list_size:
        if settings.max_header_list_size is None:
            raise ValueError("an unlimited MAX_HEADER_LIST_SIZE cannot be sent")
        pairs.append((MAX_HEADER_LIST_SIZE, settings.max_header_list_size))
    if settings.enable_connect_protocol != base.enable_connect_protocol:
        pairs.append((ENABLE_CONNECT_PROTOCOL, int(settings.enable_connect_protocol)))
    return tuple(pairs)


def _role(from_server: bool) -> str:
    return "server" if from_server else "client"
