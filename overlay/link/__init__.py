"""Links: verified mTLS (TLS 1.3, ALPN h2) connections between gateways, over trio."""

from overlay.link.accept import LinkHandler, serve_links
from overlay.link.dial import open_link
from overlay.link.link import Link, LinkError, LinkTimeout

__all__ = ["Link", "LinkError", "LinkHandler", "LinkTimeout", "open_link", "serve_links"]
