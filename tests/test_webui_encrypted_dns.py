"""The device page's encrypted-DNS card (webui/encrypted_dns.py): the host name and DoH URL a
parent types, the Apple profile (its DNSSettings and the house CA), the signed QR link that a
child's iPhone opens without login, giving a device its client ID, and a device seen only by an
unknown client ID listed as new. A browser at phone width: tests/e2e/test_webui_browser.py."""
from __future__ import annotations

import base64
import plistlib
import re
import time

import pytest
from cryptography import x509
from webui_fixtures import CONFIG_TEXT, Env, version_from, page_csrf  # noqa: F401

from webui import encrypted_dns

ON = """
  tls_listen: ["127.0.0.1:8853"]
  https_listen: ["127.0.0.1:8443"]"""


@pytest.fixture
def house(tmp_path) -> Env:
    text = CONFIG_TEXT.format(data_dir=tmp_path / "var").replace(
        'upstreams: ["udp://127.0.0.1:1"]   # never asked in these tests', 'upstreams: ["udp://127.0.0.1:1"]' + ON
    ).replace("{name: kids-tablet, ip: 192.168.1.23, profile: kids}",
              "{name: kids-tablet, ip: 192.168.1.23, client_id: kids-tablet, profile: kids}")
    environment = Env(tmp_path, text)
    environment.set_password()
    return environment


def test_the_card_shows_the_android_host_name_the_doh_url_and_qr_codes(house):
    page = house.logged_in().get("/devices/kids-tablet").get_data(as_text=True)
    card = page[page.index('id="encrypted-dns"'):]
    assert "<code>kids-tablet.filter.home</code>" in card
    assert "<code>https://filter.home:8443/dns-query/kids-tablet</code>" in card
    assert "Android only uses port 853; the filter listens on 8853." in card
    assert card.count('class="qr" src="data:image/svg+xml;base64,') == 3
    svg = base64.b64decode(re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', card).group(1))
    assert svg.startswith(b"<svg")


def test_the_profile_sets_doh_for_the_client_id_and_carries_the_house_ca(house):
    response = house.logged_in().get("/devices/kids-tablet/encrypted-dns.mobileconfig")
    assert response.status_code == 200 and response.mimetype == encrypted_dns.PROFILE_CONTENT_TYPE
    profile = plistlib.loads(response.data)
    dns, root = profile["PayloadContent"]
    assert dns["PayloadType"] == "com.apple.dnsSettings.managed"
    assert dns["DNSSettings"] == {"DNSProtocol": "HTTPS", "ServerURL": "https://filter.home:8443/dns-query/kids-tablet",
                                  "ServerAddresses": ["192.168.1.2"]}
    ca = x509.load_der_x509_certificate(root["PayloadContent"])
    assert root["PayloadType"] == "com.apple.security.root" and ca.extensions.get_extension_for_class(
        x509.BasicConstraints).value.ca
    again = plistlib.loads(house.logged_in().get("/devices/kids-tablet/encrypted-dns.mobileconfig").data)
    assert again["PayloadUUID"] == profile["PayloadUUID"]    # installing it twice replaces, not adds


def test_the_profile_needs_a_login_but_the_qr_link_opens_without_one_for_an_hour(house):
    assert house.client().get("/devices/kids-tablet/encrypted-dns.mobileconfig").status_code == 302
    token = encrypted_dns.link_token("kids-tablet")
    assert token.split(".")[0] == "kids-tablet"
    shared = house.client().get(f"/dns-profile/{token}.mobileconfig")
    assert shared.status_code == 200
    assert plistlib.loads(shared.data)["PayloadContent"][0]["DNSSettings"]["ServerURL"].endswith("/kids-tablet")
    expired = encrypted_dns.link_token("kids-tablet", now=time.time() - 2 * encrypted_dns.LINK_LIFETIME_S)
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    other = token.replace("kids-tablet", "dad-phone", 1)
    for bad in (expired, forged, other, "kids-tablet.1.x"):
        assert house.client().get(f"/dns-profile/{bad}.mobileconfig").status_code == 404


def test_a_device_without_a_client_id_is_offered_one_made_from_its_name_and_gets_it(house):
    admin = house.logged_in()
    page = admin.get("/devices/dad-phone").get_data(as_text=True)
    assert 'name="client_id" value="dad-phone"' in page
    response = admin.post("/devices/dad-phone/client-id", data={
        "csrf_token": page_csrf(admin, "/devices/dad-phone"), "version": version_from(page), "client_id": "Dad-Phone"})
    assert response.status_code == 302
    assert "client_id: dad-phone" in house.config_text()
    assert "<code>dad-phone.filter.home</code>" in admin.get("/devices/dad-phone").get_data(as_text=True)


def test_a_client_id_taken_by_another_device_is_refused_and_nothing_is_written(house):
    admin = house.logged_in()
    page = admin.get("/devices/dad-phone").get_data(as_text=True)
    before = house.config_text()
    admin.post("/devices/dad-phone/client-id", data={
        "csrf_token": page_csrf(admin, "/devices/dad-phone"), "version": version_from(page), "client_id": "kids-tablet"})
    assert house.config_text() == before
    assert "is the client ID of another device too" in admin.get("/devices/dad-phone").get_data(as_text=True)


def test_with_encrypted_dns_off_the_card_says_how_to_turn_it_on(tmp_path):
    environment = Env(tmp_path)
    environment.set_password()
    page = environment.logged_in().get("/devices/kids-tablet").get_data(as_text=True)
    assert "Encrypted DNS (DNS over TLS and HTTPS) is off." in page
    assert environment.logged_in().get("/devices/kids-tablet/encrypted-dns.mobileconfig").status_code == 404


def test_a_device_seen_only_by_an_unknown_client_id_is_listed_as_new_and_named_with_it(house):
    now = time.time()
    house.execute("INSERT INTO clients_seen (client, mac, device, first_seen, last_seen, queries)"
                  " VALUES ('emma-phone', NULL, NULL, ?, ?, 3)", (now, now))
    admin = house.logged_in()
    page = admin.get("/devices").get_data(as_text=True)
    assert "New device emma-phone?" in page
    assert '<input type="hidden" name="client_id" value="emma-phone">' in page
    response = admin.post("/devices/assign", data={
        "csrf_token": page_csrf(admin, "/devices"), "version": version_from(page), "name": "Emma phone",
        "profile": "kids", "client_id": "emma-phone"})
    assert response.status_code == 302
    assert "client_id: emma-phone" in house.config_text()
    assert "New device emma-phone?" not in admin.get("/devices").get_data(as_text=True)


def test_suggested_client_ids_are_labels():
    assert encrypted_dns.suggested_client_id("Emma's Phone") == "emmas-phone"
    assert encrypted_dns.suggested_client_id("  ") == "device"
