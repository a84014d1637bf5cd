"""Helpers for config tests: a good configuration and the identity files it names."""

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


GOOD = """
[site]
name = "aws-east"
trust_domain = "aws-east.isthmus.test"

[identity]
svid = "svid.pem"
key = "svid_key.pem"
bundles = [{ trust_domain = "aws-east.isthmus.test", path = "bundle.pem" }]

[[listeners]]
name = "east-west"
kind = "east-west"
address = "127.0.1.1"
port = 15443

[[peers]]
name = "gcp-west"
address = "127.0.2.1"
port = 15443
spiffe_id = "spiffe://gcp-west.isthmus.test/isthmus/gateway/gcp-west"

[[sources]]
kind = "static"
name = "local"

[[sources.endpoints]]
service = "api"
namespace = "payments"
address = "127.0.0.1"
port = 8080
"""
