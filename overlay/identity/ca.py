"""A development CA, so a newcomer (and every test and the demo) needs nothing but Isthmus.

It is *not* a production CA: no revocation, no HSM, the key sits in a file.  Production sites
point ``[identity]`` at SPIRE's files instead; the file layout here is the same as SPIRE agent /
spiffe-helper write, so nothing else changes between the two.

Layout
------
``init_ca(ca_dir, td)`` writes into ``ca_dir`` (default ``./.isthmus/ca/<trust-domain>``)::

    ca.pem          the self-signed root (ECDSA P-256, URI SAN spiffe://<td>, 1 year)
    ca_key.pem      its private key (mode 0600)
    bundle.pem      the trust bundle of <td> (= ca.pem), for peers and for ourselves
    bundle.json     the same bundle as SPIFFE bundle JSON (JWKS), as a SPIRE server serves it

``issue_svid(ca_dir, spiffe_id, out_dir, ttl)`` writes into ``out_dir``::

    svid.pem        the leaf X509-SVID (followed by intermediates, when there are any)
    svid_key.pem    its private key (mode 0600)
    bundle.pem      the bundle of the SVID's trust domain

Every file is written to a temporary name and renamed into place, so a gateway polling these
files never reads a half-written one.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from foundation.errors import ConfigError
from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.svid import parse_private_key

__all__ = [
    "CA_TTL",
    "DEFAULT_SVID_TTL",
    "MAX_SVID_TTL",
    "CaError",
    "DevCa",
    "SvidPaths",
    "default_ca_dir",
    "init_ca",
    "issue_svid",
    "load_ca",
    "parse_ttl",
    "write_atomic",
]

CA_TTL = dt.timedelta(days=365)
DEFAULT_SVID_TTL = dt.timedelta(hours=24)
MAX_SVID_TTL = dt.timedelta(days=30)  # "short-lived": longer than a month is a mistake here
BACKDATE = dt.timedelta(minutes=1)  # tolerate small clock skew between sites


class CaError(ConfigError):
    """The development CA cannot do what was asked (missing, already there, bad TTL)."""


def default_ca_dir(td: TrustDomain) -> Path:
    return Path(".isthmus") / "ca" / td.name


def parse_ttl(text: str) -> dt.timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` -> timedelta (1 s .. :data:`MAX_SVID_TTL`)."""
    m = re.fullmatch(r"([0-9]{1,7})([smhd])", text.strip())
    if not m:
        raise CaError(f"TTL {text!r}: use a number with s, m, h or d (e.g. 24h)")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    ttl = dt.timedelta(**{unit: int(m.group(1))})
    if not dt.timedelta(seconds=1) <= ttl <= MAX_SVID_TTL:
        raise CaError(f"TTL {text!r}: must be between 1s and {MAX_SVID_TTL.days}d")
    return ttl


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename, created with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # umask must not widen nor narrow what we asked for
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp.exists():
            tmp.unlink()


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def spiffe_bundle_json(td: TrustDomain, anchors: list[x509.Certificate], sequence: int) -> bytes:
    """A SPIFFE bundle document (JWKS) holding ``anchors`` as x509-svid keys."""
    keys = []
    for cert in anchors:
        pub = cert.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise CaError("only EC anchors can be written as JWKs here")
        nums = pub.public_numbers()
        size = (pub.curve.key_size + 7) // 8

        def b64(n: int, size: int = size) -> str:
            return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()

        der = cert.public_bytes(serialization.Encoding.DER)
        keys.append(
            {
                "use": "x509-svid",
                "kty": "EC",
                "crv": "P-256",
                "x": b64(nums.x),
                "y": b64(nums.y),
                "x5c": [base64.b64encode(der).decode()],
            }
        )
    doc = {"keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": 300}
    del td  # the document does not name its trust domain; the file's place does
    return (json.dumps(doc, indent=2) + "\n").encode()


@dataclass(frozen=True)
class SvidPaths:
    svid: Path
    key: Path
    bundle: Path


@dataclass(frozen=True)
class DevCa:
    """A loaded development CA: its trust domain, directory, root certificate and key."""

    trust_domain: TrustDomain
    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def bundle_path(self) -> Path:
        return self.directory / "bundle.pem"

    def issue(
        self,
        spiffe_id: SpiffeId,
        *,
        ttl: dt.timedelta = DEFAULT_SVID_TTL,
        now: dt.datetime | None = None,
        hosts: Sequence[str] = (),
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """Sign a fresh leaf X509-SVID for ``spiffe_id`` (a new P-256 key each time).

        ``hosts`` (IP addresses or DNS names) become extra IP/DNS SANs next to the one URI SAN
        (the X509-SVID spec allows other SAN types): callers such as curl check the host name
        of a gateway's TLS listener, and a SPIFFE ID alone names no host.
        """
        if spiffe_id.trust_domain != self.trust_domain:
            raise CaError(f"{spiffe_id} is not in this CA's trust domain {self.trust_domain}")
        if not spiffe_id.path:
            raise CaError(f"{spiffe_id}: a leaf SVID needs a path")
        if not dt.timedelta(seconds=1) <= ttl <= MAX_SVID_TTL:
            raise CaError(f"TTL {ttl} is out of range (1s .. {MAX_SVID_TTL.days}d)")
        now = now or dt.datetime.now(dt.UTC)
        not_after = min(now + ttl, self.cert.not_valid_after_utc)
        key = ec.generate_private_key(ec.SECP256R1())
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Isthmus")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_ku(leaf=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(str(spiffe_id)), *_host_names(hosts)]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP SANs for addresses, DNS SANs for names (lower-case DNS labels, checked)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        labels = host.lower().split(".")
        if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise CaError(f"--host {host!r} is neither an IP address nor a DNS name")
        names.append(x509.DNSName(host.lower()))
    return names


_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _ku(*, leaf: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=leaf,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not leaf,
        crl_sign=not leaf,
        encipher_only=False,
        decipher_only=False,
    )


def init_ca(directory: Path, trust_domain: TrustDomain, *, now: dt.datetime | None = None) -> DevCa:
    """Create a new development CA for ``trust_domain`` in ``directory`` (must not exist yet)."""
    if (directory / "ca_key.pem").exists():
        raise CaError(f"{directory}: a CA already exists here (remove it to start over)")
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Isthmus development CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, trust_domain.name[:64]),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ku(leaf=False), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id()))]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "ca_key.pem", _pem_key(key), mode=0o600)
    write_atomic(directory / "ca.pem", _pem(cert))
    write_atomic(directory / "bundle.pem", _pem(cert))
    seq = int(now.timestamp())
    write_atomic(directory / "bundle.json", spiffe_bundle_json(trust_domain, [cert], seq))
    return DevCa(trust_domain, directory, cert, key)


def load_ca(directory: Path) -> DevCa:
    """Load a CA written by :func:`init_ca`."""
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key_pem = (directory / "ca_key.pem").read_bytes()
    except FileNotFoundError:
        raise CaError(f"{directory}: no CA here (run `isthmus ca init` first)") from None
    except (OSError, ValueError) as exc:
        raise CaError(f"{directory}: cannot read the CA: {exc}") from None
    key = parse_private_key(key_pem, what=str(directory / "ca_key.pem"))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"{directory}: the CA key is not an EC key")
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    td = SpiffeId.parse(uris.get_values_for_type(x509.UniformResourceIdentifier)[0]).trust_domain
    return DevCa(td, directory, cert, key)


def issue_svid(
    ca_dir: Path,
    spiffe_id: SpiffeId,
    out_dir: Path,
    ttl: dt.timedelta = DEFAULT_SVID_TTL,
    *,
    now: dt.datetime | None = None,
    hosts: Sequence[str] = (),
) -> SvidPaths:
    """Issue an SVID for ``spiffe_id`` from the CA in ``ca_dir``; write it SPIRE-style."""
    ca = load_ca(ca_dir)
    cert, key = ca.issue(spiffe_id, ttl=ttl, now=now, hosts=hosts)
    paths = SvidPaths(out_dir / "svid.pem", out_dir / "svid_key.pem", out_dir / "bundle.pem")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Key first: a watcher that sees the new key with the old cert rejects the pair and keeps
    # the last good state until the cert lands one poll later.
    write_atomic(paths.key, _pem_key(key), mode=0o600)
    write_atomic(paths.svid, _pem(cert))
    write_atomic(paths.bundle, _pem(ca.cert))
    return paths
