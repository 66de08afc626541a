"""The filter's health on the parents' home page, in headless Chromium at phone (390 px) and
desktop widths, with the real daemon and the real web UI sharing one state DB.

A calm filter shows no warning. Then a device floods the daemon (a log queue kept small, so
the flood outruns the log's writer): the entries the daemon really lost are counted in its
status row and hourly counters, and the home page says how many, since when and why, in the
daemon's own figures. Screenshots: tests/artifacts/screenshots/health-{calm,lost}-{phone,desktop}.png.
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conftest import make_query, wait_until
from standin import free_port

from .browser import DESKTOP, PHONE, Browser, WebUI, chromium

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    web_port = free_port()
    started = module_daemons([f"udp://127.0.0.1:{standin.port}"], extra={
        "web": {"listen": f"127.0.0.1:{web_port}", "address": "192.168.1.2", "hostnames": ["filter.home"]},
        "log": {"queue_size": 100}})
    started.web_port = web_port
    return started


@pytest.fixture(scope="module")
def webui(daemon):
    server = WebUI(daemon.config_path, daemon.web_port, daemon.folder).start()
    server.set_password(daemon.folder / "var", PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui(webui):
    chrome = Browser(*chromium(), folder=webui.log_path.parent)
    chrome.base = webui.url
    chrome.open("/login")
    chrome.fill("#password", PASSWORD)
    chrome.submit(chrome.button("Log in"))
    yield chrome
    chrome.quit()


def counters(daemon) -> dict[str, int]:
    from filterd.store import state, status
    conn = state.connect(state.db_path(daemon.folder / "var"))
    try:
        return status.health_since(conn, 0)
    finally:
        conn.close()


def flood(daemon, count: int = 3000) -> None:
    """One device asking thousands of names at once, not waiting for its answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        for i in range(count):
            sock.sendto(make_query(f"n{i % 20}.flood.test").pack(), ("127.0.0.1", daemon.port))


def shoot(ui: Browser, name: str) -> None:
    """The home page at phone and desktop width, its health counters unfolded."""
    for label, metrics in (("phone", PHONE), ("desktop", DESKTOP)):
        ui.variant(metrics, dark=False)
        ui.open("/")
        ui.click(ui.find("#filter-health summary"))
        assert ui.overflow() == [], ui.overflow()
        ui.screenshot(SCREENSHOTS / f"health-{name}-{label}.png")
    ui.variant(PHONE, dark=False)


def test_a_calm_filter_says_nothing_alarming(ui, daemon):
    daemon.ask("calm.example")
    wait_until(lambda: counters(daemon)["log_written"] >= 1, timeout=15, message="the daemon's hourly counters")
    ui.open("/")
    assert ui.find_all(".health-note") == []
    assert "activity log" not in ui.text().lower()
    shoot(ui, "calm")


def test_entries_a_flood_made_the_daemon_lose_are_told_with_its_own_figures(ui, daemon):
    def lost() -> int:
        flood(daemon)
        return counters(daemon)["log_dropped"]
    wait_until(lost, timeout=60, interval=1.0, message="the flood to outrun the log's writer")
    # The daemon adds to its counters every 5 s: bracket the page between two reads of them.
    before = counters(daemon)["log_dropped"]
    ui.open("/")
    [note] = [n.text for n in ui.find_all(".health-note")]
    after = counters(daemon)["log_dropped"]
    assert any(note.startswith(f"The activity log lost {n:,} entr") for n in range(before, after + 1)), \
        (before, after, note)
    assert "more queries came than it could write down" in note and "Filtering went on" in note
    assert daemon.ask("after.flood.test").header.rcode == 0      # the house's DNS kept answering
    shoot(ui, "lost")
