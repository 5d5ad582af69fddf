"""Self-signed application instance certificates for OPC UA (tests, the demo, first start).

A certificate and its RSA key are written into a directory the caller chooses (never into the
repository): ``<name>.der`` (DER certificate, the form OPC UA exchanges) and ``<name>.pem``
(PKCS#8 private key, unencrypted: protect the directory). The certificate carries the application
URI as a URI SubjectAltName, as OPC UA Part 6 requires, plus DNS and IP names for the host.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificatePair", "generate_certificate"]


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """Paths of a certificate (DER) and its private key (PEM)."""

    certificate: Path
    private_key: Path


def generate_certificate(directory: Path, name: str, *, application_uri: str,
                         hostnames: Sequence[str] | None = None,
                         addresses: Sequence[str] = ("127.0.0.1",),
                         days: int = 365, key_size: int = 2048,
                         now: dt.datetime | None = None) -> CertificatePair:
    """Write a fresh self-signed certificate + key for `application_uri` into `directory`.

    `hostnames` default to ``localhost`` and this machine's host name (peers check them).
    """
    if hostnames is None:
        hostnames = sorted({"localhost", socket.gethostname()})
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    now = now or dt.datetime.now(dt.UTC)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gasops"),
    ])
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt_names += [x509.DNSName(h) for h in hostnames]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                     key_encipherment=True, data_encipherment=True,
                                     key_agreement=False, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.der"
    key_path = directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    return CertificatePair(certificate=cert_path, private_key=key_path)
