"""Ingress: where requests from outside this site's callers enter the data path.

``east_west`` serves the tunnels peer gateways open towards this site.
"""
