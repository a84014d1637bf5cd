"""SPIFFE identity: IDs, X509-SVIDs, per-trust-domain bundles, verification, development CA."""
