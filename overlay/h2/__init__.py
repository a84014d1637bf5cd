"""The one HTTP/2 engine: links, downstream callers and HTTP/2 endpoints use it."""
