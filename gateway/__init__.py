"""Isthmus gateway: the process -- CLI, config, listeners, router, clusters, admin."""
