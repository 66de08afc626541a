"""The admin UI over HTTPS in headless Chromium, as a parent's browser that trusts the house CA
sees it: https://filter.home:<port>/ loads with no certificate warning, the page is a secure
context, and the parent logs in. A fresh profile without the CA gets Chromium's interstitial.

Chromium on Linux keeps its trusted authorities in $HOME/.pki/nssdb: each browser here gets a
HOME of its own, and the house CA is imported with NSS's certutil (Debian libnss3-tools) as
`certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n filterd -i ca.crt`. filter.home is mapped to
the web UI's address with --host-resolver-rules, as the filter's own DNS would answer it.
Screenshots: tests/artifacts/screenshots/admin-https-{login,home,untrusted}.png.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from webui_fixtures import PASSWORD

from . import admin_https
from .browser import DESKTOP, Browser, chromium

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"


def certutil() -> str:
    found = shutil.which("certutil")
    if not found:
        pytest.skip("certutil is not installed (Debian libnss3-tools, the Makefile's TEST_DEBS): `make debs`")
    return found


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    ui = admin_https.start(tmp_path_factory.mktemp("admin-https"))
    try:
        yield ui
    finally:
        ui.server.stop()


def browser_with_home(folder: Path, home: Path) -> Browser:
    """Chromium (via the shared Browser helper) whose HOME, and so whose NSS DB, is `home`."""
    browser_path, driver_path = chromium()
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)      # chromedriver and Chromium inherit it at their start
    try:
        return Browser(browser_path, driver_path, folder,
                       host_rules=f"MAP {admin_https.HOSTNAME} {admin_https.ADDRESS}")
    finally:
        if old_home is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old_home


def trust_house_ca(home: Path, ca_pem: str) -> None:
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    ca_file = home / "ca.crt"
    ca_file.write_text(ca_pem)
    for command in ([certutil(), "-d", f"sql:{nssdb}", "-N", "--empty-password"],
                    [certutil(), "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "filterd", "-i", str(ca_file)]):
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    listed = subprocess.run([certutil(), "-d", f"sql:{nssdb}", "-L"], check=True, capture_output=True, text=True)
    assert "filterd" in listed.stdout, listed.stdout


def test_a_browser_that_trusts_the_house_ca_opens_the_admin_ui_over_https_and_logs_in(webui, tmp_path):
    home = tmp_path / "home"
    trust_house_ca(home, webui.ca_pem())
    browser = browser_with_home(tmp_path, home)
    try:
        browser.variant(DESKTOP, dark=False)
        url = f"https://{admin_https.HOSTNAME}:{webui.https_port}/"
        browser.open(url)
        assert browser.path() == "/login", browser.driver.current_url
        assert browser.driver.current_url.startswith(f"https://{admin_https.HOSTNAME}:")
        assert "Privacy error" not in browser.driver.title
        assert browser.driver.execute_script("return window.isSecureContext") is True
        assert browser.find_all("input[name=password]")
        browser.screenshot(SCREENSHOTS / "admin-https-login.png")

        browser.fill("input[name=password]", PASSWORD)
        browser.submit(browser.find("form button[type=submit], form input[type=submit]"))
        assert browser.path() == "/", browser.driver.current_url
        assert browser.driver.current_url.startswith("https://")
        assert browser.find_all("form[action='/logout']"), "not logged in: no sign-out button"
        cookies = {cookie["name"]: cookie for cookie in browser.driver.get_cookies()}
        session = cookies["__Host-filterd_session"]
        assert session["secure"] and session["httpOnly"]
        browser.screenshot(SCREENSHOTS / "admin-https-home.png")
    finally:
        browser.quit()


def test_a_browser_without_the_house_ca_gets_the_certificate_warning(webui, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    browser = browser_with_home(tmp_path, home)
    try:
        browser.variant(DESKTOP, dark=False)
        browser.open(f"https://{admin_https.HOSTNAME}:{webui.https_port}/")
        assert browser.driver.title == "Privacy error", browser.driver.title
        assert "ERR_CERT_AUTHORITY_INVALID" in browser.driver.page_source
        assert not browser.find_all("input[name=password]")
        browser.screenshot(SCREENSHOTS / "admin-https-untrusted.png")
    finally:
        browser.quit()
