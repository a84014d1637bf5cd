"""Name rules shared by config and sources: DNS labels for services, namespaces and sites."""

from __future__ import annotations

import re

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def label_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS label usable in an L7 address, or None if it is one."""
    if not value:
        return "must not be empty"
    if len(value.encode()) > 63:
        return f"{value!r} is longer than 63 bytes"
    if not _LABEL.match(value):
        return (
            f"{value!r} is not a DNS label (lowercase a-z, 0-9 and '-', "
            "not starting or ending with '-')"
        )
    return None
