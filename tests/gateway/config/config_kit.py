"""Identity files for config tests: the development CA's SVID, key and bundle."""

from __future__ import annotations

from pathlib import Path

from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.ca import init_ca, issue_svid

TRUST_DOMAIN = "aws-east.isthmus.test"


def write_identity(directory: Path, trust_domain: str = TRUST_DOMAIN) -> None:
    """``svid.pem``, ``svid_key.pem`` and ``bundle.pem`` in ``directory`` (a fresh dev CA)."""
    ca = directory / "ca"
    init_ca(ca, TrustDomain(trust_domain))
    issue_svid(ca, SpiffeId.parse(f"spiffe://{trust_domain}/isthmus/gateway/gw"), directory)
