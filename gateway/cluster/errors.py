"""The typed marker the router's retry decision reads.

Why a marker class: whether a failed site may be skipped for the next one is a property of the
error ("the site did no work"), set where the error is raised -- a link already gone, a
``CONNECT`` answered 502/503, no healthy endpoint -- and read in one place
(:func:`gateway.router.route.did_no_work`), never by probing for an attribute.
"""

from __future__ import annotations

from foundation.errors import UpstreamError


class SiteDidNoWork(UpstreamError):
    """The site did not act on the request, so another site may take it.

    ``retry_elsewhere`` says so per error (true unless a subclass decides otherwise per
    instance: a ``CONNECT`` answered 403 is the remote policy, and stands).
    """

    retry_elsewhere: bool = True
