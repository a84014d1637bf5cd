"""Upstreams: where the data path sends a request once routed (peer tunnels, local endpoints)."""
