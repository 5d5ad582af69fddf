"""Which client applications may open sessions on the integrator server: a trust list of
certificates, kept as files the way OPC UA products keep theirs.

OPC UA authenticates the *application* by its certificate (the user comes after, by name and
password). A server that accepts any certificate lets any program that learns a password in;
so the integrator server trusts exactly the certificates in ``<pki>/trusted/`` (DER or PEM, one
per file; their SHA-256 fingerprints are compared). A client presenting another certificate is
refused with BadCertificateUntrusted and its certificate is written to ``<pki>/rejected/`` —
an administrator who recognises it moves the file to ``trusted/`` (or runs
``gasops opcua-clients trust NAME``), and the next connection is let in. The folder is read
again whenever it changes, so no restart is needed. `trust_any=True` switches the list off
(a laboratory, never a utility's network).

Written here rather than with asyncua's `TrustStore`: that one verifies chains with
`cryptography`'s X.509 verifier, which does not accept a self-signed end-entity certificate as
its own trust anchor — and self-signed application certificates are what OPC UA clients
(node-opcua, UaExpert, asyncua) make by default.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["ClientTrust", "application_uris", "certificate_name", "read_certificate"]

log = logging.getLogger("opcua.server")

_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def certificate_name(cert: x509.Certificate) -> str:
    """A file name for `cert`: its common name (made safe) and the start of its SHA-1
    thumbprint, as OPC UA tools name the files of their trust lists."""
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else "client"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", cn).strip("_") or "client"
    thumbprint = hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest()  # noqa: S324 (a name, not security)
    return f"{safe[:60]}-{thumbprint[:16]}.der"


def read_certificate(path: Path) -> x509.Certificate | None:
    """The certificate in a DER or PEM file, or None when the file holds none."""
    data = path.read_bytes()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return None


def application_uris(cert: x509.Certificate) -> list[str]:
    """The application URIs a certificate names (its subject alternative names)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


class ClientTrust:
    """The trust list in `pki_dir` (``trusted/``, ``rejected/``); see the module docstring."""

    def __init__(self, pki_dir: Path, *, trust_any: bool = False) -> None:
        self.trusted_dir = pki_dir / "trusted"
        self.rejected_dir = pki_dir / "rejected"
        self.trust_any = trust_any
        self._seen: tuple[tuple[str, int, int], ...] | None = None  # (name, mtime, size) read
        self._fingerprints: frozenset[bytes] = frozenset()

    def prepare(self) -> None:
        """Make the two folders (an administrator looks for them)."""
        self.trusted_dir.mkdir(parents=True, exist_ok=True)
        self.rejected_dir.mkdir(parents=True, exist_ok=True)

    def _trusted(self) -> frozenset[bytes]:
        """SHA-256 fingerprints of the trusted certificates, re-read when the folder changed."""
        try:
            files = sorted(p for p in self.trusted_dir.iterdir()
                           if p.is_file() and p.suffix.lower() in _SUFFIXES)
            listing = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        except FileNotFoundError:
            files, listing = [], ()
        if listing != self._seen:
            prints = set()
            for path in files:
                cert = read_certificate(path)
                if cert is None:
                    log.warning("OPC UA trust list: %s is not a certificate; ignored", path)
                    continue
                prints.add(hashlib.sha256(cert.public_bytes(Encoding.DER)).digest())
            self._seen, self._fingerprints = listing, frozenset(prints)
        return self._fingerprints

    def is_trusted(self, der: bytes) -> bool:
        """Whether the certificate (DER bytes) is on the list (always, with `trust_any`)."""
        return self.trust_any or hashlib.sha256(der).digest() in self._trusted()

    def reject(self, cert: x509.Certificate) -> Path:
        """Keep a refused certificate in ``rejected/`` for review; its path."""
        path = self.rejected_dir / certificate_name(cert)
        if not path.exists():
            self.rejected_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(cert.public_bytes(Encoding.DER))
        return path

    async def validate(self, cert: x509.Certificate, client: ua.ApplicationDescription) -> None:
        """asyncua's certificate validator (CreateSession): raise a ServiceError to refuse."""
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            log.warning("OPC UA client %s refused: its certificate is not valid now (%s to %s)",
                        client.ApplicationUri, cert.not_valid_before_utc, cert.not_valid_after_utc)
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)
        if self.is_trusted(cert.public_bytes(Encoding.DER)):
            return
        path = self.reject(cert)
        log.warning("OPC UA client %s refused: its certificate is not trusted; kept as %s — move "
                    "it to %s to let it in", client.ApplicationUri, path, self.trusted_dir)
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
