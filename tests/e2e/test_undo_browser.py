"""Undo on the device page, in headless Chromium at phone width with the real daemon and web UI:
a parent allows YouTube for an hour, gives 30 more minutes and pauses the tablet; the page lists
the three with an Undo each; each Undo is felt at once over real DNS.
Screenshots: tests/artifacts/screenshots/device-undo-phone.png (and -done after the undos).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import wait_until
from standin import free_port, name_address

from .browser import PHONE, Browser, WebUI, chromium
from .test_webui_browser import addresses

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"
BLOCK_ADDRESS = "192.168.1.2"
TABLET = "127.0.0.2"
PICKUP_S = 8.0


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    web_port = free_port()
    started = module_daemons([f"udp://127.0.0.1:{standin.port}"], extra={
        "web": {"listen": f"127.0.0.1:{web_port}", "address": BLOCK_ADDRESS, "hostnames": ["filter.home"]},
        # A school day that never ends: everything is off unless a parent lifts it.
        "profiles": {"kids": {"block_services": ["youtube"],
                              "schedules": [{"name": "school", "days": ["daily"], "start": "00:00", "end": "24:00",
                                             "block": "all"}]},
                     "adults": {}},
        "devices": [{"name": "mia-tablet", "ip": TABLET, "profile": "kids"}],
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
    yield chrome
    chrome.quit()


def opens(daemon, name: str) -> bool:
    return addresses(daemon, name, TABLET) == [name_address(name)]


def settles(daemon, name: str, expected: bool, what: str) -> None:
    wait_until(lambda: opens(daemon, name) == expected, timeout=PICKUP_S, interval=0.1,
               message=f"{name} {'open' if expected else 'blocked'} after {what}")


def row(ui, words: str):
    return next(r for r in ui.find_all(".in-force-row") if words in r.text)


def test_each_override_on_the_device_page_has_an_undo_felt_over_dns(ui, daemon, webui):
    assert not opens(daemon, "www.youtube.com") and not opens(daemon, "news.test")
    ui.open(webui.url + "/login")
    ui.fill("#password", PASSWORD)
    ui.submit(ui.button("Log in"))
    ui.open(webui.url + "/devices/mia-tablet")
    assert "The profile's normal rules apply." in ui.text()
    ui.submit(ui.button("Allow for 1 h"))           # YouTube is the app offered first
    settles(daemon, "www.youtube.com", True, "allowing YouTube")
    ui.submit(ui.button("30 more minutes"))
    settles(daemon, "news.test", True, "bonus time")
    ui.submit(ui.button("Pause 30 min"))
    settles(daemon, "news.test", False, "the pause")
    rows = [r.text for r in ui.find_all(".in-force-row")]
    assert len(rows) == 3 and all(r.endswith("Undo") for r in rows), rows
    ui.screenshot(SCREENSHOTS / "device-undo-phone.png")

    ui.submit(ui.button("Undo", within=row(ui, "Paused")))
    assert "Pause ended" in " ".join(ui.flashes())
    settles(daemon, "news.test", True, "undoing the pause (the bonus time still lifts the school day)")
    ui.submit(ui.button("Undo", within=row(ui, "Bonus time")))
    assert "Bonus time ended" in " ".join(ui.flashes())
    settles(daemon, "news.test", False, "ending the bonus time")
    assert opens(daemon, "www.youtube.com"), "YouTube's own allow is still in force"
    ui.submit(ui.button("Undo", within=row(ui, "YouTube allowed")))
    assert "YouTube is no longer allowed" in " ".join(ui.flashes())
    settles(daemon, "www.youtube.com", False, "undoing YouTube's allow")
    assert not ui.find_all(".in-force-row") and "The profile's normal rules apply." in ui.text()
    ui.screenshot(SCREENSHOTS / "device-undo-done-phone.png")


def logged(daemon, name: str) -> bool:
    from filterd.store import state

    conn = state.connect(state.db_path(daemon.folder / "var"))
    try:
        return conn.execute("SELECT count(*) FROM queries WHERE name = ? AND action = 'block'", (name,)).fetchone()[0] > 0
    finally:
        conn.close()


def test_allow_from_the_log_asks_first_keeps_bedtime_when_asked_and_is_undone(ui, daemon, webui):
    assert not opens(daemon, "www.chess.test")
    wait_until(lambda: logged(daemon, "www.chess.test"), timeout=PICKUP_S, interval=0.2, message="the log row")
    ui.open(webui.url + "/login")
    if ui.find_all("#password"):
        ui.fill("#password", PASSWORD)
        ui.submit(ui.button("Log in"))
    ui.open(webui.url + "/log?q=chess")
    ui.click(next(a for a in ui.find_all("a") if a.text.startswith("allow…")))
    assert "Allow chess.test?" in ui.text()
    ui.screenshot(SCREENSHOTS / "log-allow-dialog-phone.png")
    ui.submit(ui.button("Allow"))          # this device, 1 hour, schedules still apply: the defaults
    assert "chess.test allowed" in ui.text() and "bedtime and other schedules still apply" in ui.text()
    ui.screenshot(SCREENSHOTS / "log-allow-done-phone.png")
    # The school day still applies to it: still blocked over DNS.
    assert not opens(daemon, "www.chess.test")
    ui.submit(ui.button("Undo"))
    assert any("Undone: 1 allow ended for mia-tablet" in f for f in ui.flashes()), ui.flashes()

    # Again, with the schedules lifted for it: it opens, at once.
    ui.open(webui.url + "/log?q=chess")
    ui.click(next(a for a in ui.find_all("a") if a.text.startswith("allow…")))
    ui.click(ui.find("input[name=keep_schedules]"))
    ui.submit(ui.button("Allow"))
    assert "at bedtime too" in ui.text()
    settles(daemon, "www.chess.test", True, "an allow from the log that lifts schedules")
    ui.submit(ui.button("Undo"))
    settles(daemon, "www.chess.test", False, "its undo")
