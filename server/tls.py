"""TLS and mutual TLS for the server: certificates read and checked at start, and picked up again when replaced.

gRPC asks :class:`CertificateFiles` for the certificate configuration at every new connection (grpc's
dynamic server credentials). It looks at the files at most once a second (a ``stat`` each) and reads
them again only when one changed, so a certificate renewed on disk (by cert-manager, certbot, an
operator) serves the next connection without a restart. A replacement that cannot be used (half
written, not PEM, a key that is not the certificate's, expired) is refused and logged; the previous
certificate keeps serving. Connections already open keep theirs.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tollgate.rules.problems import Problem, ProblemsError

log = structlog.get_logger("tollgate.tls")

# How often, at most, the files are looked at (gRPC asks at every new connection).
CHECK_INTERVAL_SECONDS = 1.0
EXPIRY_WARNING = dt.timedelta(days=14)


class CertificateError(ValueError):
    """A certificate, key or CA file that cannot serve; ``setting`` names the flag it came from."""

    def __init__(self, setting: str, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.setting = setting
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class _Material:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    subject: str
    serial: int
    not_valid_after: dt.datetime

    def configuration(self) -> Any:
        return grpc.ssl_server_certificate_configuration([(self.private_key, self.certificate_chain)],
                                                         root_certificates=self.client_ca)


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CertificateError(setting, path, f"cannot be read: {error.strerror or error}") from None


def _certificates(setting: str, path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise CertificateError(setting, path, f"is not a PEM certificate: {error}") from None
    return certificates


def read_material(cert: Path, key: Path, client_ca: Path | None, now: dt.datetime | None = None) -> _Material:
    """Read and check the files: the chain's first certificate must be current and match the key."""
    chain, key_data = _read("tls_cert", cert), _read("tls_key", key)
    ca_data = _read("tls_client_ca", client_ca) if client_ca is not None else None
    leaf = _certificates("tls_cert", cert, chain)[0]
    if client_ca is not None and ca_data is not None:
        _certificates("tls_client_ca", client_ca, ca_data)
    try:
        private_key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as error:
        raise CertificateError("tls_key", key, f"is not an unencrypted PEM private key: {error}") from None
    public = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    if public != leaf.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertificateError("tls_key", key, f"is not the key of {cert} (the certificate's public key differs)")
    now = now or dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        raise CertificateError("tls_cert", cert, f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise CertificateError("tls_cert", cert, f"is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return _Material(chain, key_data, ca_data, leaf.subject.rfc4514_string(), leaf.serial_number,
                     leaf.not_valid_after_utc)


def _fingerprint(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    marks = []
    for path in paths:
        try:
            status = os.stat(path)
            marks.append((status.st_ino, status.st_size, status.st_mtime_ns))
        except OSError:
            marks.append((0, 0, 0))
    return tuple(marks)


class CertificateFiles:
    """The server's certificate, its key and the client CA, as gRPC's certificate configuration fetcher."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.paths = (cert, key) if client_ca is None else (cert, key, client_ca)
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._seen = _fingerprint(self.paths)
        try:
            self.material = read_material(cert, key, client_ca)
        except CertificateError as error:
            raise ProblemsError([Problem(str(error.path), None, error.setting, error.message)]) from None
        self._next_check = time.monotonic() + CHECK_INTERVAL_SECONDS
        self._warn_if_expiring()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.material.configuration(), self,
                                                   require_client_authentication=self._client_ca is not None)

    def __call__(self) -> Any:
        """gRPC's fetcher, at each new connection: a new configuration when the files changed, else None.

        It never raises: an exception here would fail the handshake of every new connection."""
        try:
            return self._changed_configuration()
        except Exception as error:  # logged, and the current certificate keeps serving
            log.error("tls_certificate_check_failed", error=f"{type(error).__name__}: {error}")
            return None

    def _changed_configuration(self) -> Any:
        if time.monotonic() < self._next_check or not self._lock.acquire(blocking=False):
            return None
        try:
            self._next_check = time.monotonic() + CHECK_INTERVAL_SECONDS
            seen = _fingerprint(self.paths)
            if seen == self._seen:
                return None
            self._seen = seen  # a refused change is logged once, not at every connection
            try:
                material = read_material(self._cert, self._key, self._client_ca)
            except CertificateError as error:
                log.error("tls_certificate_refused", setting=error.setting, file=str(error.path), why=str(error),
                          serving_serial=self.material.serial)
                return None
            self.material = material
            log.info("tls_certificate_rotated", subject=material.subject, serial=material.serial,
                     not_valid_after=material.not_valid_after.isoformat())
            self._warn_if_expiring()
            return material.configuration()
        finally:
            self._lock.release()

    def _warn_if_expiring(self) -> None:
        left = self.material.not_valid_after - dt.datetime.now(dt.UTC)
        if left < EXPIRY_WARNING:
            log.warning("tls_certificate_expiring", subject=self.material.subject,
                        not_valid_after=self.material.not_valid_after.isoformat(), days_left=left.days)


def certificate_names(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, ...]:
    """The names of a mutual-TLS call's client certificate: subject alternative names, then the common name;
    () without one."""
    auth = context.auth_context()
    names = [*auth.get("x509_subject_alternative_name", ()), *auth.get("x509_common_name", ())]
    return tuple(dict.fromkeys(name.decode("utf-8", "replace") for name in names))
