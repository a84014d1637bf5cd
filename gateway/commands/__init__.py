"""One module per ``isthmus`` command group; see :mod:`gateway.cli`."""
