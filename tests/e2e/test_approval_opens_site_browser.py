"""An approval opens the whole site, measured over real DNS: each child's device replays the
names one load of a site asks for (tests/fixtures/pageloads/), asks for the site from the block
page, and the parent approves on the phone (headless Chromium, 390 px) — with the companions the
card offers. Then every recorded name resolves for that device, and none for another device.
Screenshots: tests/artifacts/screenshots/approval-<site>-phone.png.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import wait_until
from standin import free_port, name_address

from .browser import PHONE, Browser, WebUI, chromium
from .test_access_request_browser import http_from
from .test_webui_browser import addresses

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PAGELOADS = Path(__file__).resolve().parent.parent / "fixtures" / "pageloads"
PASSWORD = "correct horse battery"
BLOCK_ADDRESS = "192.168.1.2"
OTHER = "127.0.0.1"          # the browser's own address: the parent's phone, and a kids device never approved
CHILDREN = {"reddit": "127.0.0.2", "poki": "127.0.0.3", "9gag": "127.0.0.4"}
PICKUP_S = 8.0

# What each site's approval should offer, beside the site (reddit: the catalog service, none).
OFFERED = {"reddit": [], "poki": ["poki-cdn.com", "poki-gdn.com", "poki.io"], "9gag": ["9cache.com"]}


def recording(site: str) -> list[str]:
    return [line.strip() for line in (PAGELOADS / f"{site}.txt").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    web_port = free_port()
    blocked = sorted({".".join(name.split(".")[-2:]) for site in CHILDREN for name in recording(site)})
    started = module_daemons([f"udp://127.0.0.1:{standin.port}"], extra={
        "web": {"listen": f"127.0.0.1:{web_port}", "address": BLOCK_ADDRESS, "hostnames": ["filter.home"]},
        # Blocked by the profile's own list (not as services), as a category would: the approval
        # must find the service (reddit) or the companions itself.
        "profiles": {"kids": {"preset": "child", "block": blocked}, "adults": {"preset": "adult"}},
        "devices": [{"name": f"{site}-kid", "ip": ip, "profile": "kids"} for site, ip in CHILDREN.items()]
                   + [{"name": "other-kid", "ip": OTHER, "profile": "kids"}],
        "default_profile": "adults"})
    started.web_port = web_port
    return started


@pytest.fixture(scope="module")
def webui(daemon):
    server = WebUI(daemon.config_path, daemon.web_port, daemon.folder).start()
    server.set_password(daemon.folder / "var", PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui(webui, daemon):
    chrome = Browser(*chromium(), folder=daemon.folder)
    chrome.base = webui.url
    chrome.variant(PHONE, dark=False)
    chrome.open(webui.url + "/login")
    chrome.fill("#password", PASSWORD)
    chrome.submit(chrome.button("Log in"))
    yield chrome
    chrome.quit()


def resolves(daemon, name: str, source: str) -> bool:
    return addresses(daemon, name, source) == [name_address(name)]


def logged_refusals(daemon, device: str) -> int:
    from filterd.store import state

    conn = state.connect(state.db_path(daemon.folder / "var"))
    try:
        return conn.execute("SELECT count(*) FROM queries WHERE device = ? AND action = 'block'", (device,)).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("site", list(CHILDREN))
def test_one_approval_opens_every_name_of_the_page_for_that_device_only(ui, daemon, webui, site):
    child, names = CHILDREN[site], recording(site)
    # The page load, refused name by name (the app or page asks for all of them at once).
    for name in names:
        assert addresses(daemon, name, child) == [BLOCK_ADDRESS], name
    wait_until(lambda: logged_refusals(daemon, f"{site}-kid") >= len(names), timeout=PICKUP_S, interval=0.2,
               message="the refusals in the query log")
    # The child asks from the block page of the site's first name.
    status, html = http_from(child, daemon.web_port, "GET", names[0])
    assert status == 403, html
    token = re.search(r'name="token" value="([0-9a-f]+)"', html).group(1)
    status, _ = http_from(child, daemon.web_port, "POST", names[0], body=f"token={token}&message=for+school",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303

    # The parent, on the phone: the card says what opens and offers the companions, ticked.
    ui.open(webui.url + "/requests")
    card = next(c for c in ui.find_all(".requests .request") if names[0] in c.text)
    offered = [box.get_attribute("value") for box in ui.find_all("input[name=companion]", within=card)]
    ticked = [box.get_attribute("value") for box in ui.find_all("input[name=companion]:checked", within=card)]
    assert offered == ticked == OFFERED[site], card.text
    if site == "reddit":
        assert "Approving allows the service Reddit" in card.text
    ui.screenshot(SCREENSHOTS / f"approval-{site}-phone.png")
    ui.submit(ui.button("1 hour", within=card))
    assert any(f"Approved {names[0]} for {site}-kid until" in f for f in ui.flashes()), ui.flashes()

    # Real DNS: every name of the page load now resolves for that device, none for another.
    wait_until(lambda: all(resolves(daemon, name, child) for name in names), timeout=PICKUP_S, interval=0.2,
               message=f"every name of the {site} page load for {site}-kid")
    still_blocked = [name for name in names if not resolves(daemon, name, OTHER)]
    assert still_blocked == names
