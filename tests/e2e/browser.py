"""Helpers for the browser tests: the web UI as a process, headless Chromium, and page checks.

`WebUI` runs the real `filterd-webui --config PATH` (waitress) on a free port and polls it until
it answers. `Browser` drives Debian's Chromium through chromedriver with JavaScript switched off
for pages (so every step proves the UI works without it; WebDriver's own scripts still run), and
offers the checks a parent's phone would fail on: horizontal overflow, unnamed controls, small
tap targets, low text contrast, page weight, inline scripts or styles, and axe-core's
accessibility rules (WCAG 2.x A/AA and best practices). Screenshots are full-page
PNGs at phone and desktop widths, in light and dark mode.
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVERS = ("/usr/bin/chromedriver",)
DEBIAN_PACKAGES = ("chromium", "chromium-driver")   # as the Makefile's `debs` target installs them
WEBUI_START_TIMEOUT_S = 20.0

PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
DESKTOP = {"width": 1366, "height": 900, "deviceScaleFactor": 1, "mobile": False}
MIN_TARGET_PX = 24          # WCAG 2.2 target size (minimum); the CSS aims at 44
PAGE_BUDGET_BYTES = 150_000  # HTML + CSS of one page


# ---------------------------------------------------------------- axe-core

REPO = Path(__file__).resolve().parents[2]


def axe_source() -> str:
    """axe-core's script: $AXE_JS (`make test` fetches the pinned version into .cache/), else
    the newest in .cache/. Missing, the test fails: an accessibility check that silently did not
    run would pass every page."""
    named = os.environ.get("AXE_JS")
    candidates = [Path(named) if Path(named).is_absolute() else REPO / named] if named else \
        sorted(REPO.glob(".cache/axe-core-*/axe.min.js"))
    for path in reversed(candidates):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise AssertionError("axe-core is missing: run `make .cache/axe-core-4.10.3/axe.min.js` (make test does)")


# ---------------------------------------------------------------- finding Chromium


def _found() -> tuple[str, str] | None:
    browser = next((path for path in BROWSERS if os.access(path, os.X_OK)), None)
    driver = next((path for path in DRIVERS if os.access(path, os.X_OK)), None) or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chromium() -> tuple[str, str]:
    """(browser, chromedriver) paths; installs the Debian packages when missing and we may.

    Skips only when they are truly not installable here: not root, no apt-get, or apt-get failed
    (e.g. no route to the package mirror) — with the reason.
    """
    found = _found()
    if found:
        return found
    packages = " ".join(DEBIAN_PACKAGES)
    if not shutil.which("apt-get"):
        pytest.skip(f"Chromium and chromedriver are not installed and there is no apt-get to install "
                    f"them ({packages})")
    if os.geteuid() != 0:
        pytest.skip(f"Chromium and chromedriver are not installed; install them as root with "
                    f"`make debs` (apt-get install {packages})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *DEBIAN_PACKAGES]):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip(f"Chromium and chromedriver are not installed and `{' '.join(command)}` timed out")
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            pytest.skip(f"Chromium and chromedriver are not installed and `{' '.join(command)}` failed: {last}")
    found = _found()
    if not found:
        pytest.skip(f"apt-get installed {packages} but no chromium/chromedriver binary was found")
    return found


# ---------------------------------------------------------------- the web UI as a process


class WebUI:
    """`filterd-webui --config PATH` as a subprocess, polled until it answers HTTP."""

    def __init__(self, config_path: Path, port: int, folder: Path):
        self.config_path = config_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = folder / "webui.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "WebUI":
        from conftest import wait_until   # tests/conftest.py's poller

        script = Path(sys.executable).with_name("filterd-webui")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "webui.serve"]
        self.log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen([*command, "--config", str(self.config_path)], stdin=subprocess.DEVNULL,
                                        stdout=self.log_file, stderr=self.log_file, start_new_session=True)
        wait_until(self._answers, timeout=WEBUI_START_TIMEOUT_S, interval=0.05, message="the web UI to answer")
        return self

    def set_password(self, data_dir: Path, password: str) -> None:
        """The parents' account, as after /setup (straight into the state DB: no scrypt in the browser)."""
        from filterd.store import state
        from webui.passwords import hash_password

        conn = state.connect(state.db_path(data_dir))
        now = time.time()
        try:
            conn.execute("INSERT OR REPLACE INTO admin (id, password_hash, created, changed) VALUES (1, ?, ?, ?)",
                         (hash_password(password), now, now))
        finally:
            conn.close()

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"filterd-webui exited with {self.process.returncode}:\n{self.log()}")
        try:
            urllib.request.urlopen(self.url + "/login", timeout=1).close()
        except urllib.error.HTTPError:
            return True        # any HTTP answer will do
        except OSError:
            return False
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log_file.close()


# ---------------------------------------------------------------- in-page measurements (WebDriver scripts)

OVERFLOW_JS = """
const width = document.documentElement.clientWidth;
if (document.documentElement.scrollWidth <= width) return [];
const scrolls = el => { for (let e = el.parentElement; e; e = e.parentElement) {
  const o = getComputedStyle(e).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; } return false; };
const out = [];
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.right > width + 1 && !scrolls(el)) out.push(`${el.tagName.toLowerCase()}.${el.className} right=${Math.round(r.right)}`);
}
return out.slice(0, 8).concat([`page ${document.documentElement.scrollWidth}px wide in ${width}px`]);
"""

TARGETS_JS = """
const min = arguments[0], out = [];
const visible = el => el.getClientRects().length && getComputedStyle(el).visibility !== 'hidden';
for (const el of document.querySelectorAll('button, a.button, select, textarea, summary, nav a, input:not([type=hidden])')) {
  if (!visible(el)) continue;
  let box = el;
  if (el.type === 'checkbox' || el.type === 'radio') box = el.closest('label') || el;
  const r = box.getBoundingClientRect();
  if (r.width < min - 0.5 || r.height < min - 0.5)
    out.push(`${el.tagName.toLowerCase()}[${el.name || el.textContent.trim().slice(0, 30)}] ${Math.round(r.width)}x${Math.round(r.height)}`);
}
return out;
"""

CONTRAST_JS = """
const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
  const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(parseFloat); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
const background = el => { const layers = [];
  for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
  let colour = matchMedia('(prefers-color-scheme: dark)').matches ? [18, 21, 27, 1] : [255, 255, 255, 1];
  for (const layer of layers.reverse()) colour = over(layer, colour);
  return colour; };
const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const out = [];
for (const el of document.body.querySelectorAll('*')) {
  if (el.closest('svg') || !el.getClientRects().length) continue;
  const style = getComputedStyle(el);
  if (style.visibility === 'hidden' || el.closest('.sr-only')) continue;
  const field = /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName) && el.type !== 'hidden' && el.type !== 'checkbox' && el.type !== 'radio';
  const text = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!field && !text) continue;
  const bg = background(el), fg = over(parse(style.color) || [0, 0, 0, 1], bg);
  const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
  const need = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5, got = ratio(fg, bg);
  if (got < need) out.push(`${el.tagName.toLowerCase()}.${el.className} "${(el.textContent || el.value || '').trim().slice(0, 30)}" ${got.toFixed(2)} < ${need}`);
}
return out;
"""

WEIGHT_JS = """
const page = performance.getEntriesByType('navigation')[0];
return [page && page.decodedBodySize ? page.decodedBodySize : document.documentElement.outerHTML.length,
        [...document.querySelectorAll('link[rel=stylesheet], script[src], img[src]')].map(e => new URL(e.href || e.src).pathname)];
"""


# ---------------------------------------------------------------- the browser


class Browser:
    """One headless Chromium for a whole test module; pages' JavaScript is off."""

    def __init__(self, browser_path: str, driver_path: str, folder: Path, host_rules: str = "",
                 javascript: bool = False):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile_dir = tempfile.mkdtemp(prefix="chromium-", dir=folder)
        options = webdriver.ChromeOptions()
        options.binary_location = browser_path
        for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--no-first-run", "--disable-sync",
                         "--disable-default-apps", "--disable-extensions", "--window-size=1366,900",
                         f"--user-data-dir={self.profile_dir}"):
            options.add_argument(argument)
        if host_rules:
            options.add_argument(f"--host-resolver-rules={host_rules}")
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 1 if javascript else 2,
                                                  "credentials_enable_service": False,
                                                  "profile.password_manager_enabled": False})
        self.driver = webdriver.Chrome(options=options, service=Service(driver_path, log_output=str(folder / "chromedriver.log")))
        self.driver.set_page_load_timeout(30)
        self.base = ""
        self.sizes: dict[str, int] = {}
        self.variant(PHONE, dark=False)

    # ------------------------------------------------ basics

    def cdp(self, command: str, params: dict | None = None) -> dict:
        return self.driver.execute_cdp_cmd(command, params or {})

    def variant(self, metrics: dict, dark: bool) -> None:
        """Emulate a phone or a desktop screen, in light or dark mode."""
        self.cdp("Emulation.setDeviceMetricsOverride", metrics)
        self.cdp("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                              "value": "dark" if dark else "light"}]})
        self.metrics, self.dark = metrics, dark

    def open(self, url: str) -> None:
        self.driver.get(self.base + url if url.startswith("/") else url)

    def path(self) -> str:
        from urllib.parse import urlsplit
        return urlsplit(self.driver.current_url).path

    def find(self, css: str, within=None):
        from selenium.webdriver.common.by import By
        return (within or self.driver).find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str, within=None) -> list:
        from selenium.webdriver.common.by import By
        return (within or self.driver).find_elements(By.CSS_SELECTOR, css)

    def text(self) -> str:
        return self.find("body").text

    def fill(self, css: str, value: str, within=None) -> None:
        field = self.find(css, within)
        field.clear()
        field.send_keys(value)

    def choose(self, css: str, visible_text: str, within=None) -> None:
        from selenium.webdriver.support.select import Select
        Select(self.find(css, within)).select_by_visible_text(visible_text)

    def type_time(self, css: str, hh_mm: str, within=None) -> None:
        """A time field takes keystrokes in the browser's clock format: try 12-hour, then 24-hour."""
        field = self.find(css, within)
        hour, minute = (int(part) for part in hh_mm.split(":"))
        for keys in (f"{(hour - 1) % 12 + 1:02d}{minute:02d}{'P' if hour >= 12 else 'A'}", f"{hour:02d}{minute:02d}"):
            self.click(field)
            field.send_keys(keys)
            if field.get_property("value") == hh_mm:
                return
            field.clear()
        raise AssertionError(f"could not type {hh_mm} into the time field {css}")

    def click(self, element) -> None:
        """Click as a person would: with the element scrolled to the middle of the screen (not under
        the profile page's sticky Save bar, where WebDriver's own scrolling would leave it)."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def submit(self, button) -> None:
        """Press a form's button (or a link) and wait for the next page: every form here navigates.

        The old page is marked with a window property the new one does not have; asking for it
        while the pages change over may fail, which counts as "not yet"."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.execute_script("window.filterdOldPage = true")
        self.click(button)

        def next_page(driver) -> bool:
            try:
                return driver.execute_script("return !window.filterdOldPage && document.readyState === 'complete'")
            except WebDriverException:
                return False
        WebDriverWait(self.driver, 15).until(next_page, message=f"no new page after pressing a button on {self.path()}")

    def button(self, label: str, within=None):
        """The button whose visible text is `label` (the first, in document order)."""
        for element in self.find_all("button, a.button", within):
            if element.text.strip() == label:
                return element
        raise AssertionError(f"no button {label!r} on {self.path()}; buttons: "
                             f"{[e.text for e in self.find_all('button, a.button', within)]}")

    def flashes(self) -> list[str]:
        return [element.text for element in self.find_all("p.flash")]

    def javascript_is_off(self) -> bool:
        """A page script that would retitle the page does not run."""
        self.open("data:text/html,<title>off</title><script>document.title='on'</script>")
        return self.driver.title == "off"

    # ------------------------------------------------ checks a parent's phone would fail

    def overflow(self) -> list[str]:
        return self.driver.execute_script(OVERFLOW_JS)

    def small_targets(self) -> list[str]:
        return self.driver.execute_script(TARGETS_JS, MIN_TARGET_PX)

    def low_contrast(self) -> list[str]:
        return self.driver.execute_script(CONTRAST_JS)

    def accessibility(self) -> list[str]:
        """axe-core's violations on this page, one line each: rule, impact, the first elements.
        axe is injected through WebDriver; it needs a Browser made with javascript=True (its
        promises and timers are page JavaScript)."""
        self.driver.execute_script(axe_source())
        self.driver.set_script_timeout(60)
        violations = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v =>"
            " [v.id, v.impact, v.help, v.nodes.slice(0, 3).map(n => n.html.slice(0, 120))])),"
            " e => done([['axe-error', 'critical', String(e), []]]));")
        return [f"{rule} ({impact}): {help_text} — {' | '.join(nodes)}" for rule, impact, help_text, nodes in violations]

    def weight(self) -> list[tuple[str, int]]:
        """(what, bytes) of the page: its HTML, then each stylesheet (or script, image) it loads —
        counted in full even when the browser had it cached."""
        html, paths = self.driver.execute_script(WEIGHT_JS)
        parts = [(self.path(), html)]
        for path in paths:
            if path not in self.sizes:
                with urllib.request.urlopen(self.base + path, timeout=5) as response:
                    self.sizes[path] = len(response.read())
            parts.append((path, self.sizes[path]))
        return parts

    def unnamed_controls(self) -> list[str]:
        """Visible form controls and links a screen reader would announce without a name."""
        out = []
        for element in self.find_all("button, a, select, textarea, summary, input:not([type=hidden])"):
            if element.is_displayed() and not (element.accessible_name or "").strip():
                out.append(element.get_attribute("outerHTML")[:120])
        return out

    def inline_code(self) -> list[str]:
        """Inline scripts, inline styles and event handlers: the CSP forbids them, the pages need
        none (a script file of our own, <script src>, is allowed: script-src 'self')."""
        html = self.driver.page_source
        import re
        return re.findall(r"<script\b(?![^>]*\bsrc=)[^>]*>|<style\b[^>]*>|\sstyle=\"[^\"]*\"|\son[a-z]+=\"[^\"]*\"", html)

    def headings(self) -> list[str]:
        return [element.text for element in self.find_all("h1")]

    # ------------------------------------------------ screenshots

    def screenshot(self, path: Path) -> None:
        """The whole page, beyond the screen's height, at the emulated width."""
        size = self.cdp("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.cdp("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": max(size["width"], self.metrics["width"]),
                     "height": max(size["height"], 1), "scale": 1}})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
