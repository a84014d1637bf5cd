"""Clusters: the set of endpoints a request may go to, and how one is picked.

``lb`` is the pure load-balancing decision; ``local`` is the cluster of this site's own
endpoints (from the catalog), which speaks HTTP/1.1, HTTP/2 or raw TCP to them; ``peer`` is a
peer site seen as a cluster (tunnels on its link); ``errors`` holds the marker of a site that
did no work.
"""
