"""SPIFFE IDs and trust domain names, parsed strictly per the SPIFFE-ID standard.

Theory of operation
-------------------
A SPIFFE ID is ``spiffe://<trust-domain><path>``.  We accept exactly the canonical form and
reject everything else instead of normalising it, because an identity that two parties could
spell two ways is an identity that an allow list can be tricked into mismatching:

* the scheme is the literal, lowercase ``spiffe://``;
* the trust domain is 1..255 characters of ``[a-z0-9._-]``.  **Uppercase is rejected**, not
  lowercased: the standard says trust domain names are lowercase, and go-spiffe and SPIRE reject
  uppercase too, so accepting it here would let a config name an ID that no SVID can carry;
* there is no userinfo, port, query, fragment or percent-encoding (``@ : ? # %`` are simply not
  in the allowed alphabets);
* the path is empty (the trust domain's own ID) or ``/``-separated segments of
  ``[a-zA-Z0-9._-]``, none empty, none ``.`` or ``..``, and no trailing slash;
* the whole ID is at most 2048 bytes.

The result is a frozen value object whose ``str()`` is the canonical form; nothing else in the
code base handles raw SPIFFE ID strings.

Why in ``foundation``: endpoints in the catalog carry SPIFFE IDs (mDNS TXT, Consul meta) and
the overlay verifies peers by them, so both ``discovery`` and ``overlay`` import this one home
(``foundation`` is the floor every package may import).
"""

from __future__ import annotations

from dataclasses import dataclass

from foundation.errors import IdentityError

SCHEME_PREFIX = "spiffe://"
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_CHARS = 255

_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


class SpiffeIdError(IdentityError, ValueError):
    """A string is not a valid SPIFFE ID or trust domain name; the message says why."""


def _check_trust_domain(name: str, *, whole: str) -> None:
    if not name:
        raise SpiffeIdError(f"{whole!r}: trust domain is missing")
    if len(name) > MAX_TRUST_DOMAIN_CHARS:
        raise SpiffeIdError(
            f"{whole!r}: trust domain is longer than {MAX_TRUST_DOMAIN_CHARS} characters"
        )
    for ch in name:
        if ch in _TD_CHARS:
            continue
        if ch == ":":
            raise SpiffeIdError(f"{whole!r}: trust domain must not contain a port")
        if ch == "@":
            raise SpiffeIdError(f"{whole!r}: trust domain must not contain userinfo")
        if ch.isupper():
            raise SpiffeIdError(f"{whole!r}: trust domain must be lowercase")
        if ch == "%":
            raise SpiffeIdError(f"{whole!r}: percent-encoding is not allowed")
        raise SpiffeIdError(f"{whole!r}: trust domain has an invalid character {ch!r}")


@dataclass(frozen=True, order=True, slots=True)
class TrustDomain:
    """A trust domain name such as ``aws-east.isthmus.test`` (never with a scheme)."""

    name: str

    def __post_init__(self) -> None:
        _check_trust_domain(self.name, whole=self.name)

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """Parse a bare trust domain name, or the trust domain of ``spiffe://td`` (no path)."""
        if text.startswith(SCHEME_PREFIX):
            sid = SpiffeId.parse(text)
            if sid.path:
                raise SpiffeIdError(f"{text!r}: a trust domain must not have a path")
            return sid.trust_domain
        return cls(text)

    def id(self) -> SpiffeId:
        """The trust domain's own SPIFFE ID, ``spiffe://<name>``."""
        return SpiffeId(self, "")

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True, slots=True)
class SpiffeId:
    """A parsed, canonical SPIFFE ID.  Construct with :meth:`parse`."""

    trust_domain: TrustDomain
    path: str  # "" or "/seg/seg"; already validated

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        if not isinstance(text, str):
            raise SpiffeIdError(f"SPIFFE ID must be a string, not {type(text).__name__}")
        if not text:
            raise SpiffeIdError("SPIFFE ID is empty")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise SpiffeIdError(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
        if not text.startswith(SCHEME_PREFIX):
            if text[:9].lower() == SCHEME_PREFIX:
                raise SpiffeIdError(f"{text!r}: scheme must be lowercase 'spiffe'")
            raise SpiffeIdError(f"{text!r}: scheme must be 'spiffe://'")
        rest = text[len(SCHEME_PREFIX) :]
        slash = rest.find("/")
        td_text, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        for bad, what in (("?", "query"), ("#", "fragment")):
            if bad in td_text:
                raise SpiffeIdError(f"{text!r}: a {what} is not allowed")
        _check_trust_domain(td_text, whole=text)
        if path:
            _check_path(path, whole=text)
        return cls(TrustDomain(td_text), path)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    def is_member_of(self, td: TrustDomain) -> bool:
        return self.trust_domain == td

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain.name}{self.path}"


def _check_path(path: str, *, whole: str) -> None:
    if path.endswith("/"):
        raise SpiffeIdError(f"{whole!r}: path must not end with '/'")
    for segment in path[1:].split("/"):
        if not segment:
            raise SpiffeIdError(f"{whole!r}: path has an empty segment")
        if segment in (".", ".."):
            raise SpiffeIdError(f"{whole!r}: path segment {segment!r} is not allowed")
        for ch in segment:
            if ch not in _PATH_CHARS:
                if ch == "?":
                    raise SpiffeIdError(f"{whole!r}: a query is not allowed")
                if ch == "#":
                    raise SpiffeIdError(f"{whole!r}: a fragment is not allowed")
                if ch == "%":
                    raise SpiffeIdError(f"{whole!r}: percent-encoding is not allowed")
                raise SpiffeIdError(f"{whole!r}: path has an invalid character {ch!r}")
