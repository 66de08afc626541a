"""DoT/DoH certificates and client IDs (filterd/dns/tls.py): the names a client ID is a label
under, the parent's files refused with their YAML path, the house CA's wildcard certificate."""
from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from standin import make_wildcard_certificate
from filterd.dns import tls
from filterd.rules.config import parse_config

NAMES = ("filter.home", "dns.family.test")


@pytest.mark.parametrize("server_name, client_id", [
    ("emma-phone.filter.home", "emma-phone"),
    ("Emma-Phone.Filter.Home.", "emma-phone"),
    ("kid-tablet.dns.family.test", "kid-tablet"),
    ("filter.home", None),                        # the bare name: no ID, the address decides
    ("a.b.filter.home", None),                    # only one label is an ID
    ("emma-phone.elsewhere.test", None),
    ("under_score.filter.home", None),
    ("127.0.0.1", None),
    (None, None),
])
def test_the_client_id_is_the_one_label_under_a_served_name(server_name, client_id):
    assert tls.client_id_from_server_name(server_name, NAMES) == client_id


@pytest.mark.parametrize("path, result", [
    ("/dns-query", (True, None)), ("/dns-query/", (True, None)), ("/dns-query/kid-tablet", (True, "kid-tablet")),
    ("/dns-query/kid-tablet/", (True, "kid-tablet")), ("/dns-query/a/b", (False, None)),
    ("/dns-query/-x", (False, None)), ("/dns-queryx", (False, None)), ("/other", (False, None)),
])
def test_the_doh_path_gives_the_client_id(path, result):
    assert tls.client_id_from_path(path) == result


def config(tmp_path: Path, **dns):
    return parse_config({"data_dir": str(tmp_path / "var"),
                         "dns": {"upstreams": ["udp://127.0.0.1"], "tls_listen": ["127.0.0.1:8853"], **dns},
                         "web": {"hostnames": ["filter.home"], "address": "192.168.1.2"}}, {})


def test_matching_files_pass_and_give_the_certificates_names(tmp_path):
    _, chain, key = make_wildcard_certificate(tmp_path, "dns.family.test")
    assert tls.problems(config(tmp_path, tls_cert=str(chain), tls_key=str(key))) == []
    certificates = tls.TlsCertificates(config(tmp_path, tls_cert=str(chain), tls_key=str(key)))
    assert certificates.names == ("dns.family.test",)


def test_a_key_of_another_certificate_or_a_file_that_is_no_pem_is_refused_with_its_path(tmp_path):
    _, chain, _ = make_wildcard_certificate(tmp_path / "one", "dns.family.test")
    _, _, other_key = make_wildcard_certificate(tmp_path / "two", "dns.family.test")
    [problem] = tls.problems(config(tmp_path, tls_cert=str(chain), tls_key=str(other_key)))
    assert problem.startswith("dns.tls_key: ") and "is not the key of the certificate" in problem
    [problem] = tls.problems(config(tmp_path, tls_cert=str(other_key), tls_key=str(other_key)))
    assert problem.startswith("dns.tls_cert: ") and "no PEM certificate" in problem


@pytest.mark.parametrize("older_cryptography", [False, True])
def test_a_fullchain_file_loads_leaf_first_with_this_and_debian_12s_cryptography(tmp_path, monkeypatch,
                                                                                 older_cryptography):
    if older_cryptography:       # Debian 12's cryptography 38 has only the one-certificate loader
        monkeypatch.delattr(tls.x509, "load_pem_x509_certificates", raising=False)
    ca, leaf, key = make_wildcard_certificate(tmp_path, "dns.family.test")
    certificates = tls.load_chain(b"Bag Attributes: from an export\n" + leaf.read_bytes() + ca.read_bytes())
    assert len(certificates) == 2 and tls.certificate_names(certificates[0]) == ("dns.family.test",)
    assert "test ACME CA" in certificates[1].subject.rfc4514_string()
    with pytest.raises(ValueError):
        tls.load_chain(key.read_bytes())


def test_an_expired_certificate_is_refused(tmp_path):
    _, chain, key = make_wildcard_certificate(tmp_path, "dns.family.test", days=-1)
    [problem] = tls.problems(config(tmp_path, tls_cert=str(chain), tls_key=str(key)))
    assert problem.startswith("dns.tls_cert: ") and "expired" in problem


def test_the_house_ca_signs_the_filters_names_and_any_one_label_under_them(tmp_path):
    certificates = tls.TlsCertificates(config(tmp_path))
    assert certificates.names == ("filter.home",)
    ca = tmp_path / "var" / "ca" / "ca.crt"
    for name in ("filter.home", "emma-phone.filter.home"):
        assert _handshake(certificates.listener_context(tls.DOT), ca, name) == name


def _handshake(server_context: ssl.SSLContext, ca: Path, server_name: str) -> str | None:
    """A real handshake over a socket pair, the client checking the name against `ca`; the
    server name the listener's hook noted."""
    client_sock, server_sock = socket.socketpair()
    noted = {}

    def serve():
        with server_context.wrap_socket(server_sock, server_side=True) as conn:
            noted["name"] = getattr(conn, tls.SERVER_NAME_ATTRIBUTE, None)
    thread = threading.Thread(target=serve)
    thread.start()
    client = ssl.create_default_context(cafile=str(ca))
    with client.wrap_socket(client_sock, server_hostname=server_name):
        pass
    thread.join(5)
    return noted.get("name")
