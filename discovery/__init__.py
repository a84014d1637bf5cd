"""Isthmus discovery: the catalog model, its pure core, and the sources that feed it.

This package sits at the bottom of the dependency graph (gateway -> overlay -> discovery),
which is why the project's error root lives here too (:mod:`foundation.errors`).
"""
