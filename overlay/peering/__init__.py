"""Peering: links to every configured peer, catalog federation over them, the routing view."""
