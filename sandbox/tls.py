"""HTTPS on loopback for emulators whose clients insist on it (msal refuses an http:// authority).

`TestCA()` makes a throwaway certificate authority in a temporary folder; `serve_tls(app, ca=ca)`
serves an ASGI app over HTTPS on 127.0.0.1 with a certificate that CA issued. Clients trust it
through `ca.bundle` (a PEM path) or `ca.ssl_context()`.

requests, which msal uses, lets the REQUESTS_CA_BUNDLE environment variable override a
Session's own `verify` (psf/requests#3829); only a per-request `verify` wins over it. So a
client of these servers passes the bundle per request, as connectors.outlook does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import ssl
import tempfile
import threading
import weakref
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox.server import ServedApp

_LIFETIME = timedelta(days=2)


class TestCA:
    """A throwaway certificate authority: a key pair and a PEM bundle in a temporary folder, removed by
    `close()` or, at the latest, when the CA is collected or the process exits."""

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, name: str = "textback sandbox CA") -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="textback-ca-"))
        self._remove = weakref.finalize(self, shutil.rmtree, str(self._folder), ignore_errors=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(timezone.utc)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.bundle = str(self._folder / "ca.pem")
        Path(self.bundle).write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()
        self._issued = 0

    @property
    def folder(self) -> Path:
        return self._folder

    def close(self) -> None:
        """Remove the folder (bundle, certificates, keys); servers already started keep working."""
        self._remove()

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this CA only."""
        return ssl.create_default_context(cafile=self.bundle)

    def issue_server_files(self, host: str = "127.0.0.1") -> tuple[str, str]:
        """A certificate for `host` (an IP address or a DNS name) and its key: (certfile, keyfile) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
        except ValueError:
            names = [x509.DNSName(host)]
        now = datetime.now(timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + _LIFETIME)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        with self._lock:
            self._issued += 1
            stem = self._folder / f"server{self._issued}"
        certfile, keyfile = stem.with_suffix(".pem"), stem.with_suffix(".key")
        certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return str(certfile), str(keyfile)


class TLSServedApp(ServedApp):
    """ServedApp over HTTPS, with a certificate from `ca`."""

    def __init__(self, app, *, ca: TestCA, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(app, host=host, port=port)
        certfile, keyfile = ca.issue_server_files(host)
        # ServedApp builds its uvicorn server without TLS; this one replaces it before anything starts.
        # Idle keep-alive TLS connections of clients nobody closes (msal's session, connectors' httpx
        # clients) would hold shutdown until the TLS close handshake times out: a sandbox waits one second.
        self._server = uvicorn.Server(uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", access_log=False, lifespan="off",
            ssl_certfile=certfile, ssl_keyfile=keyfile, timeout_graceful_shutdown=1,
        ))
        self._thread = threading.Thread(target=self._server.run, name=f"sandbox-tls:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"


@contextlib.contextmanager
def serve_tls(app, *, ca: TestCA, port: int = 0, host: str = "127.0.0.1") -> Iterator[TLSServedApp]:
    """Serve `app` over HTTPS for the duration of the block."""
    served = TLSServedApp(app, ca=ca, port=port, host=host).start()
    try:
        yield served
    finally:
        served.stop()
