"""Isthmus discovery: the catalog model, its pure core, and the sources that feed it.

Imports go one way (gateway -> overlay -> discovery); below discovery there is only
:mod:`foundation` (the error root, SPIFFE ID values, names), which every package may import.
"""
