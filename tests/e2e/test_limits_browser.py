"""Daily limits as the family sees them, in headless Chromium at phone width, with the real
daemon and web UI: the child's /me page, the block page of a used-up limit, and the parent's
"+15 min today" on the device page — after which the daemon's real DNS answers open again.
Screenshots go to tests/artifacts/screenshots/ (limits-me, limits-blockpage, limits-device-card).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import count_todays_use, wait_until
from standin import free_port

from .browser import PHONE, Browser, WebUI, chromium
from .test_webui_browser import addresses

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"
BLOCK_ADDRESS = "192.168.1.2"
TABLET, CONSOLE = "127.0.0.1", "127.0.0.2"      # the browser's pages come from 127.0.0.1: the tablet
PICKUP_S = 15.0


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    web_port = free_port()
    started = module_daemons([f"udp://127.0.0.1:{standin.port}"], extra={
        "web": {"listen": f"127.0.0.1:{web_port}", "address": BLOCK_ADDRESS, "hostnames": ["filter.home"]},
        # Chromium upgrades youtube.com to HTTPS (HSTS preload): the browser's "YouTube" is tube.test
        # (the limit's service scope is tested over DNS in test_limits_daemon.py).
        "profiles": {"kids": {"limits": [{"name": "youtube", "domains": ["tube.test"], "daily": "1h"}],
                              "schedules": [{"name": "bedtime", "days": ["sun", "mon", "tue", "wed", "thu"],
                                             "start": "21:00", "end": "07:00"}]},
                     "adults": {}},
        "devices": [{"name": "emma-tablet", "ip": TABLET, "profile": "kids"},
                    {"name": "leo-console", "ip": CONSOLE, "profile": "kids"}],
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
    chrome = Browser(*chromium(), folder=daemon.folder,
                     host_rules="MAP filter.home 127.0.0.1, MAP www.tube.test 127.0.0.1")
    chrome.variant(PHONE, dark=False)
    yield chrome
    chrome.quit()


def use_the_hour(daemon) -> None:
    """The tablet's hour of YouTube, as the daemon would have counted it over the afternoon."""
    from filterd.rules.config import load_config
    from filterd.store import state

    config = load_config(daemon.config_path)
    youtube = config.rules.profiles["kids"].limits[0]
    conn = state.connect(state.db_path(config.data_dir))
    try:
        count_todays_use(conn, youtube, ("device", "emma-tablet"), 61, config.timezone)
    finally:
        conn.close()


def used_minutes(daemon) -> int:
    from filterd.family import limits
    from filterd.rules.config import load_config
    from filterd.store import state

    config = load_config(daemon.config_path)
    conn = state.connect(state.db_path(config.data_dir))
    try:
        return next(u.used_minutes for u in limits.usage(conn, config, "emma-tablet") if u.name == "youtube")
    finally:
        conn.close()


def blocked(daemon, source: str) -> bool:
    return addresses(daemon, "www.tube.test", source) == [BLOCK_ADDRESS]


def shoot(ui: Browser, name: str) -> None:
    ui.screenshot(SCREENSHOTS / f"{name}-phone.png")


def test_a_used_hour_is_told_to_the_child_and_a_parent_adds_15_minutes_on_the_phone(ui, daemon, webui):
    assert not blocked(daemon, TABLET)
    use_the_hour(daemon)
    wait_until(lambda: blocked(daemon, TABLET), timeout=PICKUP_S, interval=0.2,
               message="the tablet's YouTube to close once its hour is used")
    assert not blocked(daemon, CONSOLE)

    # The child: their own page, then the block page.
    ui.open(f"http://filter.home:{daemon.web_port}/me")
    text = ui.text()
    assert "emma-tablet today" in text and "minutes left of 60" in text and "All used today." in text, text
    assert "Bedtime" in text and "leo-console" not in text
    shoot(ui, "limits-me")
    ui.open(f"http://www.tube.test:{daemon.web_port}/watch?v=1")
    text = ui.text()
    assert "You've used your hour of YouTube for today. It's back tomorrow." in text, text
    assert ui.button("Ask for more time")
    shoot(ui, "limits-blockpage")

    # The parent, on the phone: one tap.
    ui.open(webui.url + "/login")
    ui.fill("#password", PASSWORD)
    ui.submit(ui.button("Log in"))
    # The seeded hour and the minute(s) of the test's own queries; the daemon flushes every 5 s,
    # so a minute boundary may add one between the page and the DB read: bracket the page.
    before = used_minutes(daemon)
    ui.open(webui.url + "/devices/emma-tablet")
    card = ui.find("#limits")
    card_text = card.text
    after = used_minutes(daemon)
    assert before >= 60
    assert any(f"{used} of 60 minutes used" in card_text for used in range(before, after + 1)), (before, after, card_text)
    shoot(ui, "limits-device-card")
    ui.submit(ui.button("+15 min today", within=card))
    assert any("15 more minutes for today" in f for f in ui.flashes()), ui.flashes()
    assert "(+15 added today)" in ui.find("#limits").text
    wait_until(lambda: not blocked(daemon, TABLET), timeout=PICKUP_S, interval=0.2,
               message="the tablet's YouTube to open after the parent's 15 minutes")
    shoot(ui, "limits-device-card-extended")
