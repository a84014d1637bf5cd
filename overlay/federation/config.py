"""Export consent: which local services each peer may import.

Nothing leaves the site unless an ``[[exports]]`` rule matches it.  A rule matches a service
by name and namespace (``"*"`` matches any) and, optionally, by tags (endpoint metadata keys
``tag:<t>`` must all be present); ``peers`` names the peer sites allowed to import it (empty
means every configured peer).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportConfig:
    service: str = "*"
    namespace: str = "*"
    tags: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
