"""A Consul-HTTP-API-compatible server for tests; never imported by product code."""
