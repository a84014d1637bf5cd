"""SPIFFE ID value objects (implemented in :mod:`discovery.spiffe_id`, the bottom layer)."""

from discovery.spiffe_id import (
    MAX_ID_BYTES,
    SCHEME_PREFIX,
    SpiffeId,
    SpiffeIdError,
    TrustDomain,
)

__all__ = ["MAX_ID_BYTES", "SCHEME_PREFIX", "SpiffeId", "SpiffeIdError", "TrustDomain"]
