"""Isthmus overlay: SPIFFE identity, mTLS links between gateways, tunnels and federation."""
