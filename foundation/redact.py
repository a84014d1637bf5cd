"""Credentials out of log lines: one redaction helper for everything the gateway writes.

Why one place: headers reach logs by many roads -- an exception's repr quoting a malformed
field, a third-party library's debug output (hpack logs every field it encodes or decodes),
a future ``log.debug("%r", request)``.  Redacting at each call site would miss the next one,
so the gateway's log formatter passes every finished line (message and traceback) through
:func:`redact`.  It lives here, at the bottom of the dependency order, so that discovery
sources can register the secrets they read (:func:`remember_secret`, e.g. the Consul ACL token)
without importing the gateway.

What counts as a credential: the fields ``Authorization``, ``Proxy-Authorization``,
``Cookie``, ``Set-Cookie``, and any field or key whose name contains ``token``, ``secret``,
``api-key``/``api_key``/``apikey`` or ``password`` (``X-Consul-Token``, ``X-Auth-Token``,
``client_secret``...), in the shapes logs show them: ``Name: value`` (an HTTP head),
``name=value`` (a query string), ``'name': 'value'`` / ``"name": "value"`` (reprs, JSON),
``(b'name', b'value')`` (header tuples) and ``b'name'=b'value'`` (hpack).  Plus every literal
secret registered with :func:`remember_secret`, wherever it appears.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
#: Shorter literals are not registered: replacing a 3-letter token everywhere would mangle
#: unrelated text (real ACL tokens are UUIDs).
MIN_SECRET_CHARS = 8
#: At most this many literals are remembered (the newest win): rotation must not grow it.
MAX_SECRETS = 32

_NAME = (
    r"(?:proxy-)?authorization|(?:set-)?cookie"
    r"|[a-z0-9_-]*(?:token|secret|api[-_]?key|password|passwd)[a-z0-9_-]*"
)
# 'name': 'value'  "name": "value"  (b'name', b'value')  b'name'=b'value'
_QUOTED = re.compile(
    rf"""(?P<head>b?(?P<q1>['"])(?:{_NAME})(?P=q1)\s*[,:=]\s*b?)"""
    rf"""(?P<q2>['"])(?P<value>(?:\\.|(?!(?P=q2)).)*)(?P=q2)""",
    re.IGNORECASE,
)
#: A name starts a word: after a separator, or after an escaped line end inside a repr.
_START = r"(?:(?<=\\[rnt])|(?<![\w/.-]))"
# Name: value   (to the end of the line, or of a repr'd line: a quote or a backslash)
_COLON = re.compile(
    rf"""(?P<head>{_START}(?:{_NAME})[ \t]*:[ \t]*)(?P<value>[^\r\n'"\\]+)""",
    re.IGNORECASE,
)
# name=value    (a query string or a key=value list: to a separator)
_EQUALS = re.compile(
    rf"""(?P<head>{_START}(?:{_NAME})=)(?P<value>[^\s&'"\\,;)]+)""",
    re.IGNORECASE,
)

_secrets: list[str] = []


def remember_secret(value: str | None) -> None:
    """Redact ``value`` from every later log line (a token read from config or a file)."""
    if value is None or len(value) < MIN_SECRET_CHARS or value in _secrets:
        return
    _secrets.append(value)
    del _secrets[:-MAX_SECRETS]


def forget_secrets() -> None:
    """Drop every remembered literal (for tests)."""
    _secrets.clear()


def redact(text: str) -> str:
    """``text`` with every credential value replaced by ``<redacted>``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _QUOTED.sub(lambda m: f"{m['head']}{m['q2']}{REDACTED}{m['q2']}", text)
    text = _COLON.sub(lambda m: f"{m['head']}{REDACTED}", text)
    return _EQUALS.sub(lambda m: f"{m['head']}{REDACTED}", text)
