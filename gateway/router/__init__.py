"""Routing: from a request's L7 address to the sites that can serve it, with failover."""
