"""L7 addresses: the service names callers use instead of hosts.

Theory of operation
-------------------
A caller names a service, never a host::

    <service>.<namespace>.<mesh-domain>            any site: local first, then failover order
    <service>.<namespace>.<site>.<mesh-domain>     pinned to one site

The same string is an HTTP ``Host``/``:authority``, a TLS SNI and a DNS name, so every label
is a DNS label (1..63 bytes of ``[a-z0-9-]``, not starting or ending with ``-``) and the whole
name is at most 253 bytes.  An address parses into the frozen :class:`L7Address`; nothing else
in the code base takes these strings apart.

Decisions, and why:

* **The mesh domain may have several labels** (``mesh.example.com``).  It is operator config,
  fixed per gateway, so parsing strips it as a *suffix* and counts the labels that remain
  (two: any site; three: pinned).  Counting labels from the left would be ambiguous as soon
  as the mesh domain had a dot in it; stripping a known suffix never is.
* **Case.**  DNS names, ``Host`` and SNI are case-insensitive, and clients do send
  ``API.Default.Isthmus``.  :meth:`L7Address.parse` therefore lowercases ASCII input first
  (after rejecting non-ASCII, so that e.g. the Kelvin sign ``K`` cannot lowercase its way
  into a valid ``k``).  The value object itself only ever holds the canonical lowercase form:
  constructing one directly with uppercase labels is an error, so two equal addresses always
  have equal fields and equal ``str()``.
* **Trailing dot.**  ``api.default.isthmus.`` is the same DNS name as ``api.default.isthmus``
  (an absolute name); parsing accepts one trailing dot and drops it.  The 253-byte limit
  applies to the name without it.
* **Port.**  :func:`parse_authority` splits ``host[:port]`` for ``Host``/``:authority`` and
  CONNECT targets; a port is 1..5 ASCII digits with value 1..65535.  An empty port
  (``host:``) and bracketed IP literals are rejected: neither names a service.
* **Errors** are :class:`AddressError` (a :class:`~foundation.errors.DownstreamError`, so a
  caller's bad name maps to 400).  A syntactically fine name outside the mesh domain raises
  the subclass :class:`NotInMeshError`, so a listener can tell "not ours" from "garbage".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from discovery.model import ServiceName
from foundation.errors import DownstreamError
from foundation.names import label_problem

DEFAULT_MESH_DOMAIN = "isthmus"
MAX_NAME_BYTES = 253
MAX_PORT = 65535


class AddressError(DownstreamError, ValueError):
    """A string is not a valid L7 address (or authority); the message says why."""


class NotInMeshError(AddressError):
    """A well-formed name that is not under this gateway's mesh domain."""


def _check_label(value: str, what: str) -> None:
    problem = label_problem(value)
    if problem:
        raise AddressError(f"{what}: {problem}")


def check_mesh_domain(mesh_domain: str) -> None:
    """Raise :class:`AddressError` unless ``mesh_domain`` is one or more dot-separated labels."""
    if not isinstance(mesh_domain, str):
        raise AddressError(f"mesh domain must be a string, not {type(mesh_domain).__name__}")
    if len(mesh_domain.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise AddressError(f"mesh domain is longer than {MAX_NAME_BYTES} bytes")
    for part in mesh_domain.split("."):
        _check_label(part, "mesh domain")


@dataclass(frozen=True, slots=True)
class L7Address:
    """A parsed, canonical L7 address.  ``site is None`` means "any site"."""

    service: str
    namespace: str
    site: str | None = None
    mesh_domain: str = DEFAULT_MESH_DOMAIN

    def __post_init__(self) -> None:
        check_mesh_domain(self.mesh_domain)
        _check_label(self.service, "service")
        _check_label(self.namespace, "namespace")
        if self.site is not None:
            _check_label(self.site, "site")
        if len(str(self)) > MAX_NAME_BYTES:
            raise AddressError(f"{self}: name is longer than {MAX_NAME_BYTES} bytes")

    @classmethod
    def parse(cls, text: str, *, mesh_domain: str = DEFAULT_MESH_DOMAIN) -> L7Address:
        """Parse a host name (no port); ASCII case is folded, one trailing dot is allowed."""
        if not isinstance(text, str):
            raise AddressError(f"address must be a string, not {type(text).__name__}")
        check_mesh_domain(mesh_domain)
        if not text:
            raise AddressError("address is empty")
        if not text.isascii():
            raise AddressError(f"{text!r}: address must be ASCII (use the punycode form)")
        name = text.lower()
        if name.endswith("."):
            name = name[:-1]
        if len(name) > MAX_NAME_BYTES:
            raise AddressError(f"address is longer than {MAX_NAME_BYTES} bytes")
        labels = name.split(".")
        for label in labels:
            _check_label(label, repr(text))
        suffix = "." + mesh_domain
        if not name.endswith(suffix):
            raise NotInMeshError(f"{text!r} is not under the mesh domain {mesh_domain!r}")
        parts = name[: -len(suffix)].split(".")
        if len(parts) == 2:
            return cls(parts[0], parts[1], None, mesh_domain)
        if len(parts) == 3:
            return cls(parts[0], parts[1], parts[2], mesh_domain)
        raise AddressError(
            f"{text!r}: expected <service>.<namespace>[.<site>].{mesh_domain}, "
            f"got {len(parts)} labels before the mesh domain"
        )

    @classmethod
    def for_service(
        cls,
        service: ServiceName,
        *,
        site: str | None = None,
        mesh_domain: str = DEFAULT_MESH_DOMAIN,
    ) -> L7Address:
        """The address of a catalog service (any site unless ``site`` is given)."""
        return cls(service.name, service.namespace, site, mesh_domain)

    @property
    def service_name(self) -> ServiceName:
        return ServiceName(self.service, self.namespace)

    @property
    def is_pinned(self) -> bool:
        return self.site is not None

    def any_site(self) -> L7Address:
        """The same service without a site pin."""
        return L7Address(self.service, self.namespace, None, self.mesh_domain)

    def pinned_to(self, site: str) -> L7Address:
        """The same service pinned to ``site``."""
        return L7Address(self.service, self.namespace, site, self.mesh_domain)

    def __str__(self) -> str:
        if self.site is None:
            return f"{self.service}.{self.namespace}.{self.mesh_domain}"
        return f"{self.service}.{self.namespace}.{self.site}.{self.mesh_domain}"


def parse_authority(
    text: str, *, mesh_domain: str = DEFAULT_MESH_DOMAIN
) -> tuple[L7Address, int | None]:
    """Parse an HTTP ``Host``/``:authority`` or CONNECT target: ``<l7-address>[:<port>]``.

    Returns the address and the port (``None`` when absent).  Userinfo (``user@host``) is not
    part of an authority in HTTP (RFC 9110 section 4.2.4) and is rejected.
    """
    if not isinstance(text, str):
        raise AddressError(f"authority must be a string, not {type(text).__name__}")
    if text.startswith("["):
        raise AddressError(f"{text!r}: an IP literal is not an L7 address")
    if "@" in text:
        raise AddressError(f"{text!r}: userinfo is not allowed in an authority")
    host, sep, port_text = text.partition(":")
    port: int | None = None
    if sep:
        if not port_text:
            raise AddressError(f"{text!r}: empty port")
        if len(port_text) > 5 or not (port_text.isascii() and port_text.isdigit()):
            raise AddressError(f"{text!r}: port must be 1 to 5 digits")
        port = int(port_text)
        if not 1 <= port <= MAX_PORT:
            raise AddressError(f"{text!r}: port {port} is out of range 1..{MAX_PORT}")
    return L7Address.parse(host, mesh_domain=mesh_domain), port


@functools.lru_cache(maxsize=1024)
def parse_authority_cached(
    text: str, *, mesh_domain: str = DEFAULT_MESH_DOMAIN
) -> tuple[L7Address, int | None]:
    """``parse_authority``, remembered for the last 1024 authorities that parsed.

    Why: every request carries an authority, and callers send the same few over and over;
    parsing is pure and its result immutable, so the router and the destination share one
    bounded memo.  Errors are not remembered (a bad authority is parsed, and refused, again).
    """
    return parse_authority(text, mesh_domain=mesh_domain)
