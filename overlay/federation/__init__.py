"""Catalog federation: exporting the consented part of the catalog to peers, importing theirs."""
