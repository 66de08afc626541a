"""An off-the-shelf web vulnerability scanner, Wapiti, run over the real admin UI as a child on
the Wi-Fi would run it: over HTTPS (as a Pi serves the admin pages with web.blockpage_https: ca),
crawling from /, once anonymous and once with a parent's session cookie.

Every finding (Wapiti's "vulnerabilities" and "anomalies", e.g. a 500) must be in ALLOWED below,
each with the reason it is left; anything else fails the test. The summary is printed and kept in
tests/artifacts/wapiti-summary.txt.

`make test` runs the modules that take seconds (headers, cookies, CSP, CSRF, redirects, CRLF,
methods, TLS through sslscan; the injection modules on the anonymous pages); `make scan` sets
FILTERD_SCAN=full and adds every injection module on the logged-in pages too (minutes).
Wapiti runs in a virtualenv of its own (.venv-scanner, `make scanner`): it pins libraries of
its own (Flask among them) that must not replace the web UI's in .venv. Modules that call
Wapiti's servers on the internet (ssrf, xxe, log4shell) or download databases (nikto, wapp, htp)
are not used: the run is offline.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from . import admin_https

ROOT = Path(__file__).resolve().parents[2]
SCANNER_VENV = ROOT / ".venv-scanner"
WAPITI_PACKAGE = "wapiti3==3.2.3"      # the Makefile's WAPITI
SUMMARY = ROOT / "tests" / "artifacts" / "wapiti-summary.txt"
FULL = os.environ.get("FILTERD_SCAN") == "full"

QUICK_MODULES = ["http_headers", "cookieflags", "csp", "csrf", "redirect", "crlf", "methods", "htaccess"]
# The profile form's fixed-choice checkbox lists: 207 of its 254 fields, each attacked with every
# payload (the CRLF module alone sent 3,858 requests to one profile form). `make test` skips them:
# the server takes only catalog names from them (anything else is refused and nothing written,
# test_profile_errors_show_on_top_and_beside_their_field_and_nothing_is_written) and only the
# named day choices (anything else means the ticked days). `make scan` attacks them too.
CHECKBOX_LISTS = ["category", "service"] + [f"schedule-{i}-{field}" for i in range(4) for field in ("item", "days")]
# Every page is reached within 4 links or form posts of / (measured). Wapiti fills the child's
# page's empty "add a schedule" row (a browser leaves it empty), so each post adds a schedule
# and the next answer is a new, bigger form to crawl: without a depth the crawl ran 22 forms deep.
DEPTH = 5
INJECTION_MODULES = ["xss", "permanentxss", "sql", "timesql", "exec", "file", "upload", "backup", "shellshock"]

# (finding category, words in Wapiti's text) -> why it stays. Everything else is a failure.
ALLOWED = {
    ("TLS/SSL misconfigurations", "Extended Validation"):
        "EV is an identity check by a public CA for a company; the house CA issues for filter.home only",
    ("TLS/SSL misconfigurations", "OCSP Must-Staple"):
        "the house CA has no OCSP responder to staple from (the certificates live 7 days instead)",
    ("TLS/SSL misconfigurations", "doesn't support secure renegotiations"):
        "renegotiation is switched off (OP_NO_RENEGOTIATION in filterd/house/localca.py; TLS 1.3 has "
        "none): sslscan reports 'not supported', which is the safe answer",
    ("TLS/SSL misconfigurations", "acceptable for TLSv1.3"):
        "TLS 1.3's three suites are fixed by OpenSSL, all AEAD; sslscan rates AES-128-GCM and "
        "friends 'acceptable', not 'strong'",
    ("Htaccess Bypass", "/login bypassable"):
        "a made-up method (ABC) on /login is answered like every anonymous request with other "
        "methods: a 303 to the login form (test_anonymous_requests_with_other_methods_are_refused); "
        "Wapiti counts any non-4xx answer as a bypass",
}
# The retired header: X-XSS-Protection: 0 is sent on purpose (README, Security) — Wapiti 3.2.3's
# http_headers module no longer flags it, so it needs no entry; listed for the reader only.
RETIRED_HEADERS = {"X-XSS-Protection": "0: the old XSS auditors could blank out parts of a page; the CSP does that job"}


def wapiti() -> str:
    """Wapiti from .venv-scanner, made (pip) when missing; skips when it cannot be installed here."""
    binary = SCANNER_VENV / "bin" / "wapiti"
    if not binary.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(SCANNER_VENV)], capture_output=True, text=True)
        if made.returncode == 0:
            made = subprocess.run([str(SCANNER_VENV / "bin" / "python"), "-m", "pip", "install", "-q", WAPITI_PACKAGE],
                                  capture_output=True, text=True, timeout=900)
        if made.returncode != 0 or not binary.exists():
            last = (made.stderr.strip().splitlines() or ["(no output)"])[-1]
            pytest.skip(f"Wapiti is not installed and `pip install {WAPITI_PACKAGE}` failed: {last} (`make scanner`)")
    if not shutil.which("sslscan"):
        pytest.skip("sslscan (Debian package, the Makefile's TEST_DEBS) is not installed: `make debs`")
    return str(binary)


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    ui = admin_https.start(tmp_path_factory.mktemp("scanned"))
    try:
        yield ui
    finally:
        ui.server.stop()


def scan(ui: admin_https.HttpsWebUI, folder: Path, modules: list[str], cookie: tuple[str, str] | None) -> dict:
    """One Wapiti run from / over HTTPS; its JSON report."""
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / "report.json"
    command = [wapiti(), "-u", ui.origin + "/", "--scope", "folder", "-m", ",".join(modules),
               "--flush-session", "--store-session", str(folder / "session"), "--store-config", str(folder / "config"),
               "--tasks", "1",           # one crawler: cookieless first pages do not race for the login form's cookie
               "-t", "10", "-d", str(DEPTH), "-f", "json", "-o", str(report), "-v", "1", "--no-bugreport",
               "-x", ui.origin + "/logout"]    # the scan keeps its session
    if not FULL:
        for name in CHECKBOX_LISTS:
            command += ["--skip", name]
    if cookie:
        command += ["-C", f"{cookie[0]}={cookie[1]}"]
    started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, timeout=1500 if FULL else 150,
                         env={**os.environ, "HOME": str(folder)})
    assert run.returncode == 0 and report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    result["seconds"] = time.monotonic() - started
    result["requests"] = sum(1 for line in run.stdout.splitlines() if line.startswith("[+] "))
    return result


def findings(result: dict) -> list[tuple[str, str, str]]:
    """(category, "METHOD path", text) of every vulnerability and anomaly."""
    out = []
    for kind in ("vulnerabilities", "anomalies"):
        for category, items in result[kind].items():
            out += [(category, f"{item['method']} {item['path']}", item["info"]) for item in items]
    return out


def allowed_reason(category: str, text: str) -> str | None:
    return next((reason for (allowed, words), reason in ALLOWED.items() if allowed == category and words in text), None)


def summarise(name: str, modules: list[str], result: dict) -> list[str]:
    lines = [f"{name}: Wapiti {result['infos']['version'].split()[-1]}, {result['infos']['crawled_pages_nbr']} "
             f"URLs and forms crawled, {result['requests']} requests, {result['seconds']:.0f} s; modules: {', '.join(modules)}"]
    for category, where, text in findings(result):
        reason = allowed_reason(category, text)
        lines.append(f"  {'allowed' if reason else 'FINDING'}: {category}: {where}: {text}"
                     + (f"\n      because {reason}" if reason else ""))
    extras = Counter(category for category, items in result["additionals"].items() for _ in items)
    if extras:
        lines.append("  information: " + ", ".join(f"{category} ×{count}" for category, count in extras.items()))
    return lines


def report(lines: list[str]) -> None:
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    with SUMMARY.open("a") as out:
        out.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def assert_only_allowed(result: dict) -> None:
    unexpected = [f for f in findings(result) if allowed_reason(f[0], f[2]) is None]
    assert not unexpected, "Wapiti found:\n" + "\n".join(" | ".join(f) for f in unexpected)


def test_a_scanner_run_logged_in_finds_nothing_beyond_the_allowlist(webui, tmp_path):
    """First, as the scan then keeps the session while the anonymous one's wrong passwords
    throttle the scanner's address."""
    if SUMMARY.exists():
        SUMMARY.unlink()
    cookie = webui.login()
    modules = QUICK_MODULES + (INJECTION_MODULES if FULL else [])
    result = scan(webui, tmp_path / "logged-in", modules, cookie)
    report(summarise("logged in", modules, result))
    assert result["infos"]["crawled_pages_nbr"] >= 20, "the crawl did not get past the login page"
    assert_only_allowed(result)
    assert webui.server.process.poll() is None


def test_a_scanner_run_anonymous_finds_nothing_beyond_the_allowlist(webui, tmp_path):
    modules = QUICK_MODULES + INJECTION_MODULES + ["ssl"]
    result = scan(webui, tmp_path / "anonymous", modules, None)
    report(summarise("anonymous", modules, result))
    assert_only_allowed(result)
    assert webui.server.process.poll() is None


def test_the_scans_left_no_error_in_the_web_uis_log(webui):
    log = webui.server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 200:][:3000]
