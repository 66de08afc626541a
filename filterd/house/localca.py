"""The house's own certificate authority, and the short-lived certificates it mints for the
HTTPS block page.

A blocked name resolves to the filter, so a browser that asked for https://blocked.example/
reaches the filter's HTTPS port and expects a certificate for blocked.example. Only a CA that
the device was told to trust can give one: `LocalCA` makes it once per install (its key never
leaves `data_dir/ca/`, readable by the web UI's user only) and `LeafCertificates` signs a
certificate for whatever name the browser asks for in SNI, on the fly, kept in a bounded cache.

The CA cannot carry nameConstraints: any name at all may be blocked, so any name must be
coverable. That is exactly why installing it is a matter of trust (docs/blockpage-https.md).
"""
from __future__ import annotations

import datetime
import fcntl
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from filterd.lists.domains import normalise_domain
from filterd.files import write_atomically

log = logging.getLogger("filterd.localca")

CA_LIFETIME = datetime.timedelta(days=3650)      # ≤ 10 years; then a new CA must be installed
LEAF_LIFETIME = datetime.timedelta(days=7)       # short: a leaked leaf is worth little
LEAF_RENEW_BEFORE = datetime.timedelta(days=2)   # re-minted this long before it runs out
BACKDATE = datetime.timedelta(hours=1)           # devices whose clocks run a little behind
CACHE_SIZE = 512

KEY_FILE = "ca.key"
CERT_FILE = "ca.crt"
_UTC = datetime.timezone.utc


def not_after(certificate: x509.Certificate) -> datetime.datetime:
    """The end of validity as an aware UTC datetime (cryptography 38 has only the naive one)."""
    value = getattr(certificate, "not_valid_after_utc", None)
    return value if value is not None else certificate.not_valid_after.replace(tzinfo=_UTC)


def not_before(certificate: x509.Certificate) -> datetime.datetime:
    value = getattr(certificate, "not_valid_before_utc", None)
    return value if value is not None else certificate.not_valid_before.replace(tzinfo=_UTC)


def _now() -> datetime.datetime:
    return datetime.datetime.now(_UTC)


# ---------------------------------------------------------------- the CA


class LocalCA:
    """The CA's certificate and key, made once in `folder` and loaded from there afterwards."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey, folder: Path):
        self.certificate = certificate
        self._key = key
        self.folder = folder

    # ------------------------------------------------ making and loading

    @classmethod
    def load_or_create(cls, folder: str | os.PathLike, house: str | None = None,
                       now: datetime.datetime | None = None) -> "LocalCA":
        """The CA in `folder`; created there (key 0600 from its first byte) when there is none
        or the one there has run out. A lock file keeps two processes from making two."""
        folder = Path(folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        now = now or _now()
        lock_fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            existing = cls._load(folder, now)
            if existing is not None:
                return existing
            return cls._create(folder, house or socket.gethostname(), now)
        finally:
            os.close(lock_fd)   # releases the lock

    @classmethod
    def _load(cls, folder: Path, now: datetime.datetime) -> "LocalCA | None":
        key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
        try:
            key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            log.error("%s: the house CA cannot be read (%s); making a new one — devices must install it again",
                      folder, exc)
            return None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or \
                key.public_key().public_numbers() != certificate.public_key().public_numbers():
            log.error("%s: the CA key and certificate do not belong together; making a new CA", folder)
            return None
        if not_after(certificate) <= now + LEAF_LIFETIME:
            log.warning("%s: the house CA expires on %s; making a new one — devices must install it again",
                        folder, not_after(certificate).date())
            return None
        if os.stat(key_path).st_mode & 0o077:
            os.chmod(key_path, 0o600)
            log.warning("%s: the CA key was readable by others; made it 0600", key_path)
        return cls(certificate, key, folder)

    @classmethod
    def _create(cls, folder: Path, house: str, now: datetime.datetime) -> "LocalCA":
        key = ec.generate_private_key(ec.SECP256R1())
        # Unique per install: a random tag beside the house's name and the date, so two filters
        # (or a re-made CA) never show up under one name in a device's trust settings.
        label = f"{house[:40]} {now:%Y-%m-%d} {secrets.token_hex(2)}"
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"filterd home filter CA ({label})"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "filterd")])
        start = now - BACKDATE
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        write_atomically(folder / KEY_FILE, key_pem, 0o600)
        write_atomically(folder / CERT_FILE, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        log.info("made the house CA %r in %s (valid until %s)", name.rfc4514_string(), folder,
                 not_after(certificate).date())
        return cls(certificate, key, folder)

    # ------------------------------------------------ what may be shown (never the key)

    @property
    def name(self) -> str:
        return self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def fingerprint(self) -> str:
        """SHA-256 of the certificate, as devices show it: AB:CD:…"""
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    # ------------------------------------------------ minting

    def mint(self, names: list[str], addresses: list[str], public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime | None = None, lifetime: datetime.timedelta = LEAF_LIFETIME) -> x509.Certificate:
        """A server certificate for these DNS names and IP addresses, signed by this CA."""
        now = now or _now()
        start = now - BACKDATE
        end = min(start + lifetime, not_after(self.certificate))
        alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
        alternatives += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
        common_name = (names or addresses)[0][:64]
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256()))


# ---------------------------------------------------------------- leaf certificates as TLS contexts


@dataclass
class _Leaf:
    context: ssl.SSLContext
    expires: datetime.datetime


@dataclass(frozen=True)
class DefaultIdentity:
    """Who the filter is when a client names nobody (no SNI, or an IP address): its own host
    names and addresses."""

    names: tuple[str, ...]
    addresses: tuple[str, ...]


class LeafCertificates:
    """TLS server contexts with a certificate for a name, minted on first use and kept in an
    LRU of `size` names; re-minted when fewer than LEAF_RENEW_BEFORE remain.

    One ECDSA P-256 key serves every leaf of this process: minting is then one signature and
    one context (a few milliseconds), fast enough to do inside a handshake.
    """

    def __init__(self, ca: LocalCA, default: Callable[[], DefaultIdentity], size: int = CACHE_SIZE,
                 clock: Callable[[], datetime.datetime] = _now):
        self.ca = ca
        self.default = default
        self.size = size
        self.clock = clock
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._key_pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption())
        self._leaves: OrderedDict[tuple, _Leaf] = OrderedDict()
        self._lock = threading.Lock()
        self.minted = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._leaves)

    def default_context(self) -> ssl.SSLContext:
        """The context a connection starts with: the filter's own names, and the SNI hook that
        swaps in a certificate for the name the client asks for."""
        identity = self.default()
        return self._context(tuple(identity.names), tuple(identity.addresses), with_sni=True)

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for a name from SNI; None for no name, an IP address or a malformed name
        (the default certificate then stays)."""
        if not server_name:
            return None
        try:
            ipaddress.ip_address(server_name)
            return None
        except ValueError:
            pass
        name = normalise_domain(server_name)
        if name is None or "*" in name:
            return None
        identity = self.default()
        if name in identity.names:
            return None
        return self._context((name,), ())

    def sni_callback(self, ssl_object: ssl.SSLObject, server_name: str | None, initial: ssl.SSLContext):
        """ssl's servername hook: the certificate for the name asked for. Never raises (a
        failure would end the handshake with an alert the browser cannot explain)."""
        try:
            context = self.context_for(server_name)
        except Exception:   # keep the default certificate; the log says why
            log.exception("could not mint a certificate for %r", server_name)
            return None
        if context is not None:
            ssl_object.context = context
        return None

    def _context(self, names: tuple[str, ...], addresses: tuple[str, ...], with_sni: bool = False) -> ssl.SSLContext:
        key = (names, addresses, with_sni)
        now = self.clock()
        with self._lock:
            leaf = self._leaves.get(key)
            if leaf is not None and leaf.expires - now > LEAF_RENEW_BEFORE:
                self._leaves.move_to_end(key)
                return leaf.context
        certificate = self.ca.mint(list(names), list(addresses), self._key.public_key(), now)
        context = server_context(self._key_pem + certificate.public_bytes(serialization.Encoding.PEM), self.ca.folder)
        if with_sni:
            context.sni_callback = self.sni_callback
        with self._lock:
            self.minted += 1
            self._leaves[key] = _Leaf(context, not_after(certificate))
            self._leaves.move_to_end(key)
            while len(self._leaves) > self.size:
                self._leaves.popitem(last=False)
        return context


TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(key_and_chain_pem: bytes, private_folder: Path) -> ssl.SSLContext:
    """A TLS ≥ 1.2, HTTP/1.1 server context with this key and certificate. TLS 1.2 offers only
    forward-secret AEAD suites (ECDHE with AES-GCM or ChaCha20-Poly1305, as Mozilla's
    "intermediate" profile): the CBC-SHA256/384 suites OpenSSL also enables are left out. No
    renegotiation (a client could make the Pi redo handshakes on one connection).

    ssl loads certificates from files only: the PEM goes through an anonymous in-memory file
    (memfd, Linux), or where there is none, a 0600 temporary file in the CA's private folder
    that is removed at once."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(["http/1.1"])
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("filterd-leaf", os.MFD_CLOEXEC)
        try:
            _write_all(fd, key_and_chain_pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return context
    fd, temporary = tempfile.mkstemp(dir=private_folder, prefix=".leaf.")
    try:
        _write_all(fd, key_and_chain_pem)
        os.close(fd)
        context.load_cert_chain(temporary)
    finally:
        os.unlink(temporary)
    return context


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
