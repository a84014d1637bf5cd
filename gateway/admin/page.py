"""The overlay map page at ``/``: static HTML, CSS and JS shipped in the package.

Why static files and no framework or CDN: sites are often cut off from the internet, and an
operator opening the admin port in a browser must get a working page from the gateway alone.
The page draws what ``GET /overlay`` answers (see :mod:`gateway.admin.overlay_map`).

Served with a strict Content-Security-Policy: scripts, styles and fetches only from this
origin, no inline script or style, no frames, no forms; the page itself never writes a
network-supplied name as markup (``textContent`` only), so a hostile service or site name is
shown as text.  The files are read once, when the views are built (a few KiB).
"""

from __future__ import annotations

from importlib import resources

from gateway.admin.server import Text, View

__all__ = ["CONTENT_SECURITY_POLICY", "page_views"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: URL path -> (file under gateway/admin/static, content type).
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/overlay-map.js": ("overlay-map.js", "text/javascript; charset=utf-8"),
    "/overlay-map.css": ("overlay-map.css", "text/css; charset=utf-8"),
}

_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-resource-policy", "same-origin"),
)


def _asset(name: str) -> str:
    return (resources.files("gateway.admin") / "static" / name).read_text("utf-8")


def page_views() -> dict[str, View]:
    """The page's paths as admin views (each answers its file with its content type)."""
    return {
        path: _constant(Text(_asset(name), content_type, _HEADERS))
        for path, (name, content_type) in ASSETS.items()
    }


def _constant(reply: Text) -> View:
    def view() -> Text:
        return reply

    return view
