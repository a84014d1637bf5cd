"""X509-SVID rules (SPIFFE X509-SVID standard, sections 2-5), as pure checks on certificates.

Theory of operation
-------------------
OpenSSL answers "does this chain lead to *some* trusted root?".  SPIFFE asks more, and these
functions ask it, each raising :class:`SvidError` with the precise rule that failed:

* **SPIFFE ID** (section 2): exactly one URI SAN, and it parses as a canonical SPIFFE ID.  A
  SPIFFE ID that appears only in a DNS SAN, in the subject, or anywhere else is *not* an SVID.
  If the subject is empty the SAN extension must be critical (RFC 5280 4.1.2.6).
* **Leaf** (3.1, 4.1, 4.3, 4.4, 5.2): a non-root path; basicConstraints ``cA`` false or the
  extension absent; keyUsage present, critical, with digitalSignature and without keyCertSign
  and cRLSign; if extendedKeyUsage is present it holds both serverAuth and clientAuth (a link
  is both at once, so an SVID usable only one way is a misissued SVID for us).
* **Signing CA** (3.2, 4.1, 4.3): ``cA`` true and keyCertSign set (keyUsage critical).  A
  signing certificate *should* be an SVID; if it carries a URI SAN, it must be exactly one
  SPIFFE ID with no path.  Trust anchors from a bundle are configuration, not peer input, so
  they get the lenient form (keyUsage may be absent or non-critical, but if present must allow
  keyCertSign): real roots (corporate PKI, older SPIRE upstreams) are like that.
* **Validity**: ``not_before <= now <= not_after`` against an explicit ``now`` (never the clock
  read here: the caller owns time, and tests can move it).

Nothing here checks signatures or anchors; :mod:`overlay.identity.verify` does that per trust
domain.  Nothing here imports trio.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from foundation.spiffe_id import SpiffeId, SpiffeIdError
from overlay.identity.errors import SvidError

__all__ = [
    "PrivateKey",
    "X509Svid",
    "check_chain",
    "check_leaf",
    "check_signing_ca",
    "check_validity",
    "parse_pem_certificates",
    "parse_private_key",
    "parse_svid",
    "spiffe_id_of",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

MAX_CHAIN_CERTS = 16  # a real SVID chain is 1-4 certificates; more is hostile or a mistake
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def _name(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"
    except ValueError:
        return f"serial {cert.serial_number:x}"


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in ``cert``'s single URI SAN (section 2); anything else is an error."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise SvidError(
            "no subjectAltName extension, so no SPIFFE ID", subject=_name(cert)
        ) from None
    uris = ext.value.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        dns = ext.value.get_values_for_type(x509.DNSName)
        hint = (
            " (a SPIFFE ID in a DNS SAN does not count)" if any("spiffe" in d for d in dns) else ""
        )
        raise SvidError(f"no URI SAN{hint}", subject=_name(cert))
    if len(uris) != 1:
        raise SvidError(f"{len(uris)} URI SANs; an SVID has exactly one", subject=_name(cert))
    if len(cert.subject) == 0 and not ext.critical:
        raise SvidError("empty subject but the subjectAltName is not critical", subject=_name(cert))
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeIdError as exc:
        raise SvidError(f"URI SAN is not a SPIFFE ID: {exc}", subject=_name(cert)) from None


def check_validity(cert: x509.Certificate, *, now: dt.datetime) -> None:
    """Reject ``cert`` outside its validity window at ``now`` (timezone-aware)."""
    if now < cert.not_valid_before_utc:
        raise SvidError(
            f"not yet valid (valid from {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ})",
            subject=_name(cert),
        )
    if now > cert.not_valid_after_utc:
        raise SvidError(
            f"expired (valid until {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})",
            subject=_name(cert),
        )


def _basic_ca(cert: x509.Certificate) -> bool | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.Extension[x509.KeyUsage] | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return None


def check_leaf(cert: x509.Certificate, *, now: dt.datetime) -> SpiffeId:
    """Apply every leaf rule to ``cert``; return its SPIFFE ID."""
    sid = spiffe_id_of(cert)
    if not sid.path:
        raise SvidError(
            f"leaf SPIFFE ID {sid} has no path (a root ID names a domain)", subject=_name(cert)
        )
    if _basic_ca(cert):
        raise SvidError("leaf has basicConstraints cA=true", subject=_name(cert))
    ku = _key_usage(cert)
    if ku is None:
        raise SvidError("leaf has no keyUsage extension", subject=_name(cert))
    if not ku.critical:
        raise SvidError("leaf keyUsage is not critical", subject=_name(cert))
    if not ku.value.digital_signature:
        raise SvidError("leaf keyUsage lacks digitalSignature", subject=_name(cert))
    if ku.value.key_cert_sign:
        raise SvidError("leaf keyUsage has keyCertSign", subject=_name(cert))
    if ku.value.crl_sign:
        raise SvidError("leaf keyUsage has cRLSign", subject=_name(cert))
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None:
        missing = [
            name
            for oid, name in (
                (ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth"),
                (ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth"),
            )
            if oid not in eku
        ]
        if missing:
            raise SvidError(
                f"leaf extendedKeyUsage lacks {' and '.join(missing)}", subject=_name(cert)
            )
    check_validity(cert, now=now)
    return sid


def check_signing_ca(
    cert: x509.Certificate, *, now: dt.datetime, anchor: bool = False
) -> SpiffeId | None:
    """Apply the signing-certificate rules; return its SPIFFE ID if it carries one.

    ``anchor=True`` is the lenient form for trust anchors taken from a bundle (see module doc).
    """
    if not _basic_ca(cert):
        raise SvidError(
            "signing certificate is not a CA (basicConstraints cA is not true)", subject=_name(cert)
        )
    ku = _key_usage(cert)
    if ku is None:
        if not anchor:
            raise SvidError("signing certificate has no keyUsage extension", subject=_name(cert))
    else:
        if not ku.critical and not anchor:
            raise SvidError("signing certificate keyUsage is not critical", subject=_name(cert))
        if not ku.value.key_cert_sign:
            raise SvidError("signing certificate keyUsage lacks keyCertSign", subject=_name(cert))
    sid: SpiffeId | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        has_uri = bool(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        has_uri = False
    if has_uri:
        sid = spiffe_id_of(cert)
        if sid.path:
            raise SvidError(
                f"signing certificate SPIFFE ID {sid} must not have a path", subject=_name(cert)
            )
    check_validity(cert, now=now)
    return sid


def check_chain(chain: Sequence[x509.Certificate], *, now: dt.datetime) -> SpiffeId:
    """Leaf rules on ``chain[0]``, signing-CA rules on every intermediate; return the leaf ID."""
    if not chain:
        raise SvidError("empty certificate chain")
    if len(chain) > MAX_CHAIN_CERTS:
        raise SvidError(f"chain has {len(chain)} certificates (limit {MAX_CHAIN_CERTS})")
    sid = check_leaf(chain[0], now=now)
    for ca in chain[1:]:
        check_signing_ca(ca, now=now)
    return sid


@dataclass(frozen=True, slots=True)
class X509Svid:
    """A validated X509-SVID: its SPIFFE ID and chain (leaf first, then intermediates)."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


def parse_pem_certificates(data: bytes, *, what: str = "PEM data") -> tuple[x509.Certificate, ...]:
    """Every certificate in ``data`` (PEM), in order; ``SvidError`` if any block is malformed."""
    if _PEM_BEGIN not in data:
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise SvidError(f"{what}: malformed PEM certificate: {exc}") from None


def parse_private_key(data: bytes, *, what: str = "key") -> PrivateKey:
    """An unencrypted PEM private key (PKCS#8, SEC1 or PKCS#1), as SPIRE writes it."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SvidError(f"{what}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise SvidError(f"{what}: unsupported key type {type(key).__name__}")
    return key


def parse_svid(
    chain_pem: bytes, key_pem: bytes, *, now: dt.datetime
) -> tuple[X509Svid, PrivateKey]:
    """Parse and validate our own SVID (leaf + intermediates) and its private key."""
    chain = parse_pem_certificates(chain_pem, what="SVID")
    if not chain:
        raise SvidError("SVID file holds no certificate")
    sid = check_chain(chain, now=now)
    key = parse_private_key(key_pem)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != chain[0].public_key().public_bytes(der, pub):
        raise SvidError("private key does not match the SVID leaf certificate")
    return X509Svid(sid, chain), key
