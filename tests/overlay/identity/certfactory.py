"""Certificates made to order for the identity tests: good SVIDs and every way to break one.

Each knob maps to one X509-SVID rule, so a negative case differs from the good leaf in exactly
the property under test.
"""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from foundation.spiffe_id import TrustDomain
from overlay.identity.bundle import Bundle, BundleSet
from overlay.identity.rotation import Identity
from overlay.identity.state import build_identity_state

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
BOTH_EKU = (SERVER_AUTH, CLIENT_AUTH)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ku(
    *,
    digital_signature: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
    key_encipherment: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    parents: tuple[x509.Certificate, ...] = ()  # intermediates above this one (not the root)

    @property
    def chain_above(self) -> tuple[x509.Certificate, ...]:
        """This CA (if not self-signed) plus its intermediates, for a leaf's chain."""
        if self.cert.issuer == self.cert.subject and not self.parents:
            return ()
        return (self.cert, *self.parents)


def make_ca(
    td: str,
    *,
    parent: Ca | None = None,
    cn: str | None = None,
    uri: str | None = "",
    key_usage: x509.KeyUsage | None = None,
    ku_critical: bool = True,
    is_ca: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Ca:
    """A root (``parent=None``) or intermediate CA for trust domain ``td``."""
    key = _key()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn or f"{'sub' if parent else ''}CA {td}")]
    )
    issuer_key = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(parent.cert.subject if parent else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - 24 * HOUR)
        .not_valid_after(not_after or NOW + 24 * 30 * HOUR)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(key_usage or ku(key_cert_sign=True, crl_sign=True), critical=ku_critical)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), False
        )
    if uri is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri or f"spiffe://{td}")]),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    parents = parent.chain_above if parent else ()
    return Ca(cert, key, parents)


@dataclass
class LeafSpec:
    uris: Sequence[str] = ()
    dns: Sequence[str] = ()
    is_ca: bool | None = False  # None: no basicConstraints extension
    key_usage: x509.KeyUsage | None = field(default_factory=lambda: ku(digital_signature=True))
    ku_critical: bool = True
    eku: Sequence[x509.ObjectIdentifier] | None = BOTH_EKU
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    empty_subject: bool = False
    san_critical: bool = False


def make_leaf(
    ca: Ca, spec: LeafSpec | None = None, /, **kw: object
) -> tuple[tuple[x509.Certificate, ...], ec.EllipticCurvePrivateKey]:
    """A leaf signed by ``ca``; returns (chain leaf-first incl. intermediates, key)."""
    spec = spec or LeafSpec(**kw)  # type: ignore[arg-type]
    key = _key()
    subject = x509.Name(
        [] if spec.empty_subject else [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test")]
    )
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before or NOW - HOUR)
        .not_valid_after(spec.not_after or NOW + 24 * HOUR)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
    )
    if spec.is_ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=spec.is_ca, path_length=None), True)
    if spec.key_usage is not None:
        b = b.add_extension(spec.key_usage, critical=spec.ku_critical)
    if spec.eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(list(spec.eku)), critical=False)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in spec.uris]
    names += [x509.DNSName(d) for d in spec.dns]
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=spec.san_critical)
    cert = b.sign(ca.key, hashes.SHA256())
    return (cert, *ca.chain_above), key


def pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def bundle_set(bundles: dict[str, Sequence[x509.Certificate]]) -> BundleSet:
    return BundleSet(Bundle(TrustDomain(td), tuple(a)) for td, a in bundles.items())


def identity(
    chain: Sequence[x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
    bundles: dict[str, Sequence[x509.Certificate]],
) -> Identity:
    """A validated identity (our own side of a link)."""
    state = build_identity_state(pem(chain), key_pem(key), bundle_set(bundles), now=NOW)
    return Identity(state)


def raw_context(
    *,
    server: bool,
    chain: Sequence[x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
    trust: Sequence[x509.Certificate],
) -> ssl.SSLContext:
    """A plain OpenSSL context presenting ``chain`` (no SPIFFE checks): the attacker's side."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    ctx.load_verify_locations(cadata=pem(trust).decode())
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "id.pem"
        path.write_bytes(pem(chain) + key_pem(key))
        ctx.load_cert_chain(path)
    return ctx
