"""TLS for DNS over TLS and HTTPS: the certificate, its contexts, its reload, and SNI → client ID.

The certificate is the parent's (`dns.tls_cert`/`dns.tls_key`: a domain the family owns, from
any ACME client; reloaded when either file changes) or, by default, one the house CA signs for
the filter's names *and one label under each* (`*.filter.home`): Android's Private DNS and
DoT clients put the device's client ID there (`emma-phone.filter.home`), and a wildcard lets
one certificate serve every device without the filter minting per name.

Each listener starts with a context whose SNI hook notes the name the client asked for (its
first label is the client ID) and swaps in the newest context of its kind: a reloaded
certificate serves the next handshake, the listening sockets stay.
"""
from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from filterd.files import file_signature
from filterd.house.localca import LEAF_RENEW_BEFORE, LocalCA, not_after, server_context
from filterd.rules.config import Config
from filterd.rules.model import CLIENT_ID

log = logging.getLogger("filterd.tls")

DOT, DOH = "dot", "doh"
ALPN = {DOT: ["dot"], DOH: ["http/1.1"]}
HOUSE_CERT_LIFETIME = datetime.timedelta(days=30)   # re-minted LEAF_RENEW_BEFORE its end
SERVER_NAME_ATTRIBUTE = "filterd_server_name"       # set on the SSLObject by the SNI hook


class CertificateError(Exception):
    """The parent's certificate files cannot serve: the message starts with the YAML path."""


# ---------------------------------------------------------------- pure: names and client IDs


def served_names(config: Config) -> tuple[str, ...]:
    """The host names DoT/DoH answers under: dns.tls_names, else the web UI's host names."""
    return config.dns.encrypted.names or tuple(config.rules.web.hostnames)


PEM_END = b"-----END CERTIFICATE-----"


def load_chain(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file, leaf first; ValueError when there is none. Debian 12's
    cryptography (38) lacks `load_pem_x509_certificates` (39+): there, one block at a time."""
    if hasattr(x509, "load_pem_x509_certificates"):
        return x509.load_pem_x509_certificates(pem)
    blocks = [block.strip() + b"\n" + PEM_END + b"\n" for block in pem.split(PEM_END)[:-1]]
    if not blocks:
        raise ValueError("no PEM certificate")
    return [x509.load_pem_x509_certificate(block) for block in blocks]


def device_names(config: Config) -> tuple[str, ...]:
    """The names a device's host name is made under (`<client-id>.<name>`), as the daemon
    serves them: dns.tls_names, else the parent's certificate's names, else web.hostnames."""
    encrypted = config.dns.encrypted
    if not encrypted.names and encrypted.cert_file:
        try:
            chain = load_chain(Path(encrypted.cert_file).read_bytes())
            names = certificate_names(chain[0])
            if names:
                return names
        except (OSError, ValueError):
            pass
    return served_names(config)


def served_addresses(config: Config) -> tuple[str, ...]:
    """The filter's own addresses, for clients that connect by IP (Windows, some routers)."""
    addresses = [a for a in (config.rules.web.address, config.rules.web.address6) if a]
    encrypted = config.dns.encrypted
    for listen in encrypted.tls_listen + encrypted.https_listen:
        if not ipaddress.ip_address(listen.host).is_unspecified and listen.host not in addresses:
            addresses.append(listen.host)
    return tuple(addresses)


def client_id_from_server_name(server_name: str | None, names: tuple[str, ...]) -> str | None:
    """`emma-phone.filter.home` → "emma-phone" when filter.home is one of `names`; None for the
    bare name, an IP address, no SNI, or anything else (a second label is no client ID)."""
    if not server_name:
        return None
    server_name = server_name.lower().rstrip(".")
    label, dot, rest = server_name.partition(".")
    if not dot or rest not in names or not CLIENT_ID(label):
        return None
    return label


def client_id_from_path(path: str) -> tuple[bool, str | None]:
    """(a DoH path?, its client ID): `/dns-query` → (True, None), `/dns-query/emma-phone` →
    (True, "emma-phone"), anything else → (False, None)."""
    if path == "/dns-query" or path == "/dns-query/":
        return True, None
    if not path.startswith("/dns-query/"):
        return False, None
    label = path[len("/dns-query/"):].rstrip("/").lower()
    if not CLIENT_ID(label):
        return False, None
    return True, label


# ---------------------------------------------------------------- the parent's files


def load_parent_certificate(cert_file: str, key_file: str) -> tuple[bytes, list[x509.Certificate]]:
    """(key + chain PEM, the chain) from the parent's files; CertificateError naming the YAML
    path when a file is unreadable, not PEM, expired, or the key is not the certificate's."""
    try:
        chain_pem = Path(cert_file).read_bytes()
    except OSError as exc:
        raise CertificateError(f'dns.tls_cert: "{cert_file}" cannot be read: {exc.strerror}') from None
    try:
        key_pem = Path(key_file).read_bytes()
    except OSError as exc:
        raise CertificateError(f'dns.tls_key: "{key_file}" cannot be read: {exc.strerror}') from None
    try:
        chain = load_chain(chain_pem)
    except ValueError:
        raise CertificateError(f'dns.tls_cert: "{cert_file}" holds no PEM certificate '
                               "(-----BEGIN CERTIFICATE-----)") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError(f'dns.tls_key: "{key_file}" holds no unencrypted PEM private key') from None
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertificateError(f'dns.tls_key: "{key_file}" is not the key of the certificate in "{cert_file}" '
                               "(give the pair your ACME client wrote: fullchain.pem and privkey.pem)")
    if not_after(chain[0]) <= datetime.datetime.now(datetime.timezone.utc):
        raise CertificateError(f'dns.tls_cert: "{cert_file}" expired on {not_after(chain[0]):%Y-%m-%d}')
    return key_pem.rstrip(b"\n") + b"\n" + chain_pem, chain


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate covers, a wildcard's base name in place of the wildcard
    (`*.dns.example.org` → dns.example.org: the names client IDs are a label under)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out = []
    for name in names.get_values_for_type(x509.DNSName):
        name = name.lower().removeprefix("*.")
        if name not in out:
            out.append(name)
    return tuple(out)


def problems(config: Config) -> list[str]:
    """What `filterd check` refuses beyond the YAML: the parent's certificate files."""
    encrypted = config.dns.encrypted
    if not encrypted.cert_file or not encrypted.key_file:
        return []
    try:
        load_parent_certificate(encrypted.cert_file, encrypted.key_file)
    except CertificateError as exc:
        return [str(exc)]
    return []


# ---------------------------------------------------------------- the live contexts


@dataclass
class _Loaded:
    contexts: dict[str, ssl.SSLContext]
    names: tuple[str, ...]
    expires: datetime.datetime
    signature: tuple | None      # the parent's files' (cert, key) stat signatures; None: house CA


class TlsCertificates:
    """One worker's certificate for DoT and DoH, and the listener contexts that serve it."""

    def __init__(self, config: Config):
        self.config = config
        self._loaded = self._load(config)

    @property
    def names(self) -> tuple[str, ...]:
        """The names client IDs are a label under."""
        return self._loaded.names

    def listener_context(self, kind: str) -> ssl.SSLContext:
        """The context a listener of `kind` (DOT or DOH) is made with."""
        context = self._make_context(self._key_and_chain, kind)
        context.sni_callback = self._sni_hook(kind)
        return context

    def _sni_hook(self, kind: str):
        def hook(ssl_object, server_name, initial):
            # Note the name (its first label is the client ID), serve the newest certificate.
            try:
                setattr(ssl_object, SERVER_NAME_ATTRIBUTE, server_name)
                current = self._loaded.contexts[kind]
                if ssl_object.context is not current:
                    ssl_object.context = current
            except Exception:   # keep the handshake going on the context it has
                log.exception("TLS server name hook failed for %r", server_name)
            return None
        return hook

    def refresh(self, config: Config | None = None, now: datetime.datetime | None = None) -> bool:
        """Load the parent's files again when they changed (or the config did), mint anew when
        the house certificate nears its end. False when new files do not serve (the old
        certificate stays; the files are tried again when they change)."""
        config = config or self.config
        now = now or datetime.datetime.now(datetime.timezone.utc)
        loaded = self._loaded
        encrypted = config.dns.encrypted
        same_source = (encrypted.cert_file, encrypted.key_file, served_names(config), served_addresses(config)) == \
            (self.config.dns.encrypted.cert_file, self.config.dns.encrypted.key_file,
             served_names(self.config), served_addresses(self.config))
        if same_source:
            if loaded.signature is not None:
                if _signature(encrypted) == loaded.signature:
                    return True
            elif loaded.expires - now > LEAF_RENEW_BEFORE:
                return True
        try:
            self._loaded = self._load(config)
        except (CertificateError, ssl.SSLError, OSError) as exc:
            log.error("the DoT/DoH certificate was not reloaded, the previous one still serves: %s", exc)
            if loaded.signature is not None and same_source:
                loaded.signature = _signature(encrypted)   # try again when the files change again
            return False
        self.config = config
        log.info("DoT/DoH certificate loaded for %s (until %s)", ", ".join(self._loaded.names),
                 f"{self._loaded.expires:%Y-%m-%d}")
        return True

    def _load(self, config: Config) -> _Loaded:
        encrypted = config.dns.encrypted
        if encrypted.cert_file and encrypted.key_file:
            signature = _signature(encrypted)
            key_and_chain, chain = load_parent_certificate(encrypted.cert_file, encrypted.key_file)
            names = encrypted.names or certificate_names(chain[0]) or served_names(config)
            expires = not_after(chain[0])
        else:
            signature = None
            names = served_names(config)
            ca = LocalCA.load_or_create(Path(config.data_dir) / "ca")
            key = ec.generate_private_key(ec.SECP256R1())
            wildcard = [n for name in names for n in (name, f"*.{name}")]
            certificate = ca.mint(wildcard, list(served_addresses(config)), key.public_key(),
                                  lifetime=HOUSE_CERT_LIFETIME)
            key_and_chain = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()) + \
                certificate.public_bytes(serialization.Encoding.PEM) + ca.certificate_pem()
            expires = not_after(certificate)
        self._key_and_chain = key_and_chain
        contexts = {kind: self._make_context(key_and_chain, kind) for kind in (DOT, DOH)}
        return _Loaded(contexts, tuple(names), expires, signature)

    def _make_context(self, key_and_chain: bytes, kind: str) -> ssl.SSLContext:
        context = server_context(key_and_chain, Path(self.config.data_dir))
        context.set_alpn_protocols(ALPN[kind])
        return context


def _signature(encrypted) -> tuple:
    return (file_signature(Path(encrypted.cert_file)), file_signature(Path(encrypted.key_file)))


def server_name_of(transport) -> str | None:
    """The SNI a TLS transport's client sent (noted by the listener context's hook)."""
    ssl_object = transport.get_extra_info("ssl_object")
    return getattr(ssl_object, SERVER_NAME_ATTRIBUTE, None) if ssl_object is not None else None
