"""Every page of the web UI through axe-core (pinned; `make test` fetches it), in headless
Chromium at phone width in light and dark mode: 0 violations of WCAG 2.x A/AA and axe's best
practices. Pages carry data as a parent sees them: a child's profile with bedtime and a daily
limit, named and unnamed devices, blocked and allowed rows in the log, a waiting request.

Unlike the story in test_webui_browser.py (pages' JavaScript off), this browser runs page
scripts: axe's promises and timers need them.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from standin import free_port
from webui_fixtures import CONFIG_TEXT, Env, insert_query

from .browser import PHONE, Browser, WebUI, chromium

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

PASSWORD = "correct horse battery"
CHILD = """  kids:
    preset: child
    allow: [khanacademy.org]
    block: [games.test]
    limits:
      - {name: youtube, services: [youtube], daily: 1h}
"""
PAGES = ("/", "/devices", "/devices/kids-tablet", "/profiles", "/profiles/kids", "/log", "/log?q=example",
         "/log/why?name=pornhub.com&device=kids-tablet", "/lists", "/requests", "/settings", "/settings/history",
         "/settings/notifications", "/settings/certificate", "/summary/kids")
ANONYMOUS_PAGES = ("/login", "/certificate/check")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The real web UI on a config and state DB with a parent's everyday data in it."""
    folder = tmp_path_factory.mktemp("a11y")
    port = free_port()
    text = CONFIG_TEXT.format(data_dir=folder / "var").replace('listen: "127.0.0.1:8080"', f'listen: "127.0.0.1:{port}"')
    text = text.replace("  kids:\n    preset: child\n    allow: [khanacademy.org]\n", CHILD)
    # This browser (127.0.0.1) is a child's phone: /me and the block page speak to the child.
    text = text.replace("devices:\n", "devices:\n  - {name: emma-phone, ip: 127.0.0.1, profile: kids}\n")
    assert "emma-phone" in text
    env = Env(folder, text)
    env.set_password()
    now = time.time()
    for i, (name, action, category) in enumerate([("pornhub.com", "block", "adult"), ("www.youtube.com", "allow", None),
                                                   ("roblox.com", "block", "games"), ("khanacademy.org", "allow", None)]):
        insert_query(env, name, action=action, category=category, ts=now - 60 * i)
        insert_query(env, name, device=None, client="192.168.1.60", action=action, category=category, ts=now - 30 * i)
    env.execute("INSERT INTO clients_seen (client, mac, device, hostname, first_seen, last_seen, queries)"
                " VALUES ('192.168.1.60', NULL, NULL, 'Galaxy-Tab', ?, ?, 4)", (now - 3600, now))
    env.execute("INSERT INTO rollups (hour, device, category, queries, blocked) VALUES (?, 'kids-tablet', 'adult', 40, 6)",
                (int(now // 3600),))
    env.execute("INSERT INTO access_requests (device, domain, reason, rule, unblocks, client, created, updated, message)"
                " VALUES ('kids-tablet', 'roblox.com', 'games', 'category', 'roblox.com', '192.168.1.23', ?, ?, 'homework')",
                (now, now))
    server = WebUI(env.config_path, port, folder).start()
    yield server, folder
    server.stop()


@pytest.fixture(scope="module")
def browser(site):
    server, folder = site
    chrome = Browser(*chromium(), folder=folder, javascript=True, host_rules="MAP games.test 127.0.0.1")
    chrome.base = server.url
    yield chrome
    chrome.quit()


def violations_of(browser: Browser, path: str) -> list[str]:
    browser.open(path)
    found = []
    for dark in (False, True):
        browser.variant(PHONE, dark)
        found += [f"{path} ({'dark' if dark else 'light'}): {item}" for item in browser.accessibility()]
    browser.variant(PHONE, False)
    return found


def test_pages_a_child_or_a_visitor_sees_have_no_accessibility_violation(browser, site):
    server, _ = site
    blockpage = server.url.replace("127.0.0.1", "games.test") + "/play"   # not on HSTS's preload list
    found = [item for path in ANONYMOUS_PAGES + ("/me", blockpage) for item in violations_of(browser, path)]
    assert "games.test" in browser.text()         # the block page was the last page checked
    assert not found, "\n".join(found)


def test_every_parents_page_has_no_accessibility_violation(browser):
    browser.open("/login")
    browser.fill("#password", PASSWORD)
    browser.submit(browser.button("Log in"))
    assert browser.path() == "/"
    found = [item for path in PAGES for item in violations_of(browser, path)]
    print(f"\n  axe-core over {len(PAGES)} pages (phone, light and dark): {len(found)} violations")
    assert not found, "\n".join(found)
