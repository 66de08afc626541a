"""The house CA (filterd/house/localca.py): made once with a private key, unique per install, short-lived
leaf certificates that verify for their name only, and a bounded cache of them.

Certificates are checked the way a browser would: a real TLS handshake (in memory, through
ssl.MemoryBIO) by a client whose only trust anchor is the generated CA, with check_hostname.
"""
from __future__ import annotations

import datetime
import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from filterd.house.localca import (CA_LIFETIME, LEAF_LIFETIME, DefaultIdentity, LeafCertificates, LocalCA, not_after,
                             not_before)

UTC = datetime.timezone.utc
HOUSE = DefaultIdentity(("filter.home",), ("192.168.1.2",))


def trusting(ca: LocalCA) -> ssl.SSLContext:
    """A client that trusts this CA and nothing else, and checks the host name."""
    context = ssl.create_default_context(cadata=ca.certificate_pem().decode())
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext, server_hostname: str | None):
    """A full TLS handshake between the two contexts in memory; the peer certificate the client
    accepted. Raises ssl.SSLCertVerificationError when the client refuses it."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=server_hostname)
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    client_done = server_done = False
    for _ in range(20):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        if client_done and server_done:
            return x509.load_der_x509_certificate(client.getpeercert(binary_form=True))
    raise AssertionError("the handshake did not finish")


def dns_names(certificate: x509.Certificate) -> list[str]:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)


@pytest.fixture
def ca(tmp_path) -> LocalCA:
    return LocalCA.load_or_create(tmp_path / "ca", house="testhouse")


# ---------------------------------------------------------------- the CA


def test_ca_is_made_at_first_use_with_a_key_only_its_owner_can_read(tmp_path):
    folder = tmp_path / "ca"
    old_umask = os.umask(0)          # the most permissive umask must not widen the key's mode
    try:
        ca = LocalCA.load_or_create(folder, house="testhouse")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(folder / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "ca.crt").st_mode) == 0o644
    assert b"PRIVATE KEY" in (folder / "ca.key").read_bytes()
    assert (folder / "ca.crt").read_bytes() == ca.certificate_pem()
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "ca.crt", "ca.key"]   # no temporary left


def test_ca_is_reused_after_a_restart(tmp_path):
    first = LocalCA.load_or_create(tmp_path / "ca", house="testhouse")
    key_before = os.stat(tmp_path / "ca" / "ca.key")
    second = LocalCA.load_or_create(tmp_path / "ca", house="testhouse")
    assert second.fingerprint() == first.fingerprint()
    assert os.stat(tmp_path / "ca" / "ca.key").st_ino == key_before.st_ino    # not rewritten
    leaves = LeafCertificates(second, lambda: HOUSE)
    handshake(leaves.default_context(), trusting(first), "blocked.example")   # the old trust still holds


def test_each_install_gets_its_own_ca(tmp_path):
    one = LocalCA.load_or_create(tmp_path / "one" / "ca", house="testhouse")
    other = LocalCA.load_or_create(tmp_path / "other" / "ca", house="testhouse")
    assert one.fingerprint() != other.fingerprint()
    assert one.name != other.name      # never two CAs of one name in a device's trust settings
    assert one.certificate.public_key().public_numbers() != other.certificate.public_key().public_numbers()
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(LeafCertificates(other, lambda: HOUSE).default_context(), trusting(one), "blocked.example")


def test_ca_lasts_at_most_ten_years_and_may_only_sign_certificates(ca):
    certificate = ca.certificate
    lifetime = not_after(certificate) - not_before(certificate)
    assert lifetime <= datetime.timedelta(days=3653) and CA_LIFETIME <= datetime.timedelta(days=3653)
    assert not_before(certificate) <= datetime.datetime.now(UTC) < not_after(certificate)
    assert ca.name.startswith("filterd home filter CA (testhouse ")
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature and not usage.value.key_encipherment
    assert certificate.issuer == certificate.subject


def test_a_ca_that_has_run_out_is_replaced(tmp_path):
    long_ago = datetime.datetime.now(UTC) - datetime.timedelta(days=3700)
    old = LocalCA.load_or_create(tmp_path / "ca", house="testhouse", now=long_ago)
    assert not_after(old.certificate) < datetime.datetime.now(UTC)
    new = LocalCA.load_or_create(tmp_path / "ca", house="testhouse")
    assert new.fingerprint() != old.fingerprint()
    assert not_after(new.certificate) > datetime.datetime.now(UTC) + datetime.timedelta(days=3000)
    assert stat.S_IMODE(os.stat(tmp_path / "ca" / "ca.key").st_mode) == 0o600


def test_a_key_that_does_not_match_the_certificate_is_not_used(tmp_path):
    first = LocalCA.load_or_create(tmp_path / "a" / "ca", house="testhouse")
    other = LocalCA.load_or_create(tmp_path / "b" / "ca", house="testhouse")
    (tmp_path / "a" / "ca" / "ca.key").write_bytes((tmp_path / "b" / "ca" / "ca.key").read_bytes())
    again = LocalCA.load_or_create(tmp_path / "a" / "ca", house="testhouse")
    assert again.fingerprint() not in (first.fingerprint(), other.fingerprint())


def test_a_key_left_readable_by_others_is_made_private_again(tmp_path, ca):
    os.chmod(ca.folder / "ca.key", 0o644)
    LocalCA.load_or_create(ca.folder)
    assert stat.S_IMODE(os.stat(ca.folder / "ca.key").st_mode) == 0o600


# ---------------------------------------------------------------- leaf certificates


def test_a_minted_certificate_verifies_for_its_name_against_the_ca(ca):
    leaves = LeafCertificates(ca, lambda: HOUSE)
    certificate = handshake(leaves.default_context(), trusting(ca), "blocked.example")   # chosen through SNI
    assert dns_names(certificate) == ["blocked.example"]
    assert certificate.issuer == ca.certificate.subject


def test_a_minted_certificate_does_not_verify_for_another_name(ca):
    leaves = LeafCertificates(ca, lambda: HOUSE)
    only_blocked = leaves.context_for("blocked.example")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(only_blocked, trusting(ca), "bank.example")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(only_blocked, trusting(ca), "sub.blocked.example")


def test_a_minted_certificate_is_a_short_lived_server_certificate(ca):
    leaves = LeafCertificates(ca, lambda: HOUSE)
    certificate = handshake(leaves.default_context(), trusting(ca), "Www.Blocked.Example")
    assert dns_names(certificate) == ["www.blocked.example"]
    assert not_after(certificate) - not_before(certificate) <= LEAF_LIFETIME <= datetime.timedelta(days=7)
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_no_name_or_an_address_gets_the_filters_own_certificate(ca):
    leaves = LeafCertificates(ca, lambda: HOUSE)
    assert leaves.context_for(None) is None and leaves.context_for("192.168.1.2") is None
    assert leaves.context_for("not a name!") is None
    certificate = handshake(leaves.default_context(), trusting(ca), "192.168.1.2")   # no SNI for an address
    addresses = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.IPAddress)
    assert [str(a) for a in addresses] == ["192.168.1.2"]
    handshake(leaves.default_context(), trusting(ca), "filter.home")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(leaves.default_context(), trusting(ca), "192.168.1.3")


def test_the_cache_is_bounded_and_keeps_the_most_recent_names(ca):
    leaves = LeafCertificates(ca, lambda: HOUSE, size=3)
    contexts = {name: leaves.context_for(name) for name in ("a.example", "b.example", "c.example", "d.example")}
    assert len(leaves) == 3 and leaves.minted == 4
    assert leaves.context_for("d.example") is contexts["d.example"]     # cached: not minted again
    assert leaves.minted == 4
    assert leaves.context_for("a.example") is not contexts["a.example"]  # the oldest was dropped
    assert leaves.minted == 5 and len(leaves) == 3


def test_a_certificate_is_minted_again_before_it_runs_out(ca):
    now = [datetime.datetime.now(UTC)]
    leaves = LeafCertificates(ca, lambda: HOUSE, clock=lambda: now[0])
    first = leaves.context_for("blocked.example")
    now[0] += datetime.timedelta(days=1)
    assert leaves.context_for("blocked.example") is first
    now[0] += LEAF_LIFETIME - datetime.timedelta(days=2)
    renewed = leaves.context_for("blocked.example")
    assert renewed is not first and leaves.minted == 2


def test_server_contexts_speak_tls_1_2_or_newer_and_http_1_1(ca):
    leaves = LeafCertificates(ca, lambda: HOUSE)
    for context in (leaves.default_context(), leaves.context_for("blocked.example")):
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    client = trusting(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    handshake(leaves.default_context(), client, "blocked.example")   # 1.2 still works
