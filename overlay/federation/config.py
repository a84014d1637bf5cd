"""Export consent: which local services each peer may import.

Nothing leaves the site unless an ``[[exports]]`` rule matches it.  A rule matches a service
by name and namespace (``"*"`` matches any) and, optionally, by tags (each must be on the
endpoint: a metadata key ``tag:<t>``, or an item of a comma-separated ``tags`` entry); ``peers``
names the peer sites allowed to import it (empty means every configured peer).  Consent is
decided per endpoint; see :mod:`overlay.federation.export`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportConfig:
    service: str = "*"
    namespace: str = "*"
    tags: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
