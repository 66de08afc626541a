"""The device page's encrypted-DNS card in headless Chromium at phone width, with the real daemon
and web UI: a parent gives the tablet a client ID from the phone, the card then shows what to
type on the tablet, and the daemon at once knows the tablet by that ID over DNS over TLS.
Screenshot: tests/artifacts/screenshots/encrypted-dns-card-phone.png.
"""
from __future__ import annotations

import base64
import socket
import ssl
import struct
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord

from conftest import wait_until
from standin import free_port

from .browser import PHONE, Browser, WebUI, chromium

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"


def _tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    web_port, dot_port, doh_port = free_port(), _tcp_port(), _tcp_port()
    started = module_daemons([f"udp://127.0.0.1:{standin.port}"],
                             tls_listen=[f"127.0.0.1:{dot_port}"], https_listen=[f"127.0.0.1:{doh_port}"],
                             block_mode="null", extra={
        "web": {"listen": f"127.0.0.1:{web_port}", "address": "192.168.1.2", "hostnames": ["filter.home"]},
        "profiles": {"kids": {"block": ["games.test"]}, "adults": {}},
        "devices": [{"name": "Emma's tablet", "ip": "192.168.1.40", "profile": "kids"}],
        "default_profile": "adults"})
    started.web_port, started.dot_port = web_port, dot_port
    wait_until(lambda: _connects(dot_port), timeout=10, message="the DoT port to open")
    return started


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def webui(daemon):
    server = WebUI(daemon.config_path, daemon.web_port, daemon.folder).start()
    server.set_password(daemon.folder / "var", PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui(webui, daemon):
    chrome = Browser(*chromium(), folder=daemon.folder)
    chrome.variant(PHONE, dark=False)
    yield chrome
    chrome.quit()


def dot_answer(daemon, name: str, server_name: str) -> list[str]:
    context = ssl.create_default_context(cafile=str(daemon.folder / "var" / "ca" / "ca.crt"))
    with socket.create_connection(("127.0.0.1", daemon.dot_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as sock:
            query = DNSRecord.question(name, "A").pack()
            sock.sendall(struct.pack(">H", len(query)) + query)
            size = struct.unpack(">H", _read(sock, 2))[0]
            reply = DNSRecord.parse(_read(sock, size))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def _read(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk
        data += chunk
    return data


def test_a_parent_gives_the_tablet_a_client_id_on_the_phone_and_the_filter_knows_it_over_dot(ui, webui, daemon):
    # Before: the ID means nothing yet, so the tablet's games are not blocked over DoT.
    assert dot_answer(daemon, "games.test", "emmas-tablet.filter.home") != ["0.0.0.0"]
    ui.open(webui.url + "/login")
    ui.fill("#password", PASSWORD)
    ui.submit(ui.button("Log in"))
    ui.open(webui.url + "/devices/Emma's tablet")
    card = ui.find("#encrypted-dns")
    assert "Give Emma's tablet a client ID" in card.text
    ui.submit(ui.button("Save", within=card))
    assert any("emmas-tablet over encrypted DNS" in flash for flash in ui.flashes()), ui.flashes()
    card = ui.find("#encrypted-dns")
    text = card.text
    assert "emmas-tablet.filter.home" in text
    assert f"https://filter.home:{_doh_port(daemon)}/dns-query/emmas-tablet" in text
    assert "Download the profile for Emma's tablet" in text
    assert len(ui.find_all("#encrypted-dns img.qr")) == 3
    assert ui.overflow() == [] and ui.unnamed_controls() == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    x, y, width, height = ui.driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];", card)
    shot = ui.cdp("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                              "clip": {"x": x, "y": y, "width": width, "height": height, "scale": 1}})
    (SCREENSHOTS / "encrypted-dns-card-phone.png").write_bytes(base64.b64decode(shot["data"]))
    ui.screenshot(SCREENSHOTS / "encrypted-dns-device-page-phone.png")
    # After: the daemon reloaded the config; the tablet is known by its ID wherever it asks from.
    wait_until(lambda: dot_answer(daemon, "games.test", "emmas-tablet.filter.home") == ["0.0.0.0"],
               timeout=15, interval=0.3, message="the daemon to know the tablet by its client ID")


def _doh_port(daemon) -> int:
    import yaml
    config = yaml.safe_load(daemon.config_path.read_text())
    return int(config["dns"]["https_listen"][0].rsplit(":", 1)[1])
