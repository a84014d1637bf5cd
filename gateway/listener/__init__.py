"""Downstream listeners: TLS ClientHello/SNI peeking (more listeners join here)."""
