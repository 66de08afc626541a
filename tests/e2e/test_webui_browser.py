"""A parent's first evening with filterd, in a real browser: headless Chromium against the real
web UI (`filterd-webui`, waitress) and the real daemon (`python -m filterd run`), sharing one
config file and data_dir, with a stand-in upstream DNS server.

The tests run in order, as one story: set the password, go through the wizard, log out and in,
create a profile from the "child" preset, name the tablet the daemon has just seen (DNS from
127.0.0.2) and give it that profile, pause and resume it, give reward time, read the log and
ask "why?". Every step is checked where it matters — in the daemon's real DNS answers — while
127.0.0.1 (a parent's phone, filtered while unnamed, then one tap: profile adults) must stay unaffected. A step that needs an
earlier one skips when that one did not finish, so the first failure is the one reported.

Pages' JavaScript is switched off in the browser, so every step also proves the UI works without
it. Every page is photographed at phone (390×844) and desktop (1366×900) widths, and on the phone
in dark mode too, into tests/artifacts/screenshots/ (page weights beside them, in page-weight.txt),
and checked for what a parent would trip over: a page wider
than the phone, controls without a name, tap targets under 24 px, text below WCAG contrast,
more than 150 KB of HTML + CSS, inline scripts or styles; the last test reports them all.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dnslib import QTYPE, RCODE

from conftest import ask, wait_until
from standin import free_port, name_address

from .browser import DESKTOP, PAGE_BUDGET_BYTES, PHONE, Browser, WebUI, chromium

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"
HOUSE_TZ = "Asia/Kolkata"           # far from UTC, no DST: a schedule read in the wrong zone misses "now"
BLOCK_ADDRESS = "192.168.1.2"       # web.address: what blocked names resolve to (blockpage mode)
TABLET, PARENT = "127.0.0.2", "127.0.0.1"
PICKUP_S = 8.0                      # the daemon reloads config and overrides within a second; generous
SEEN_S = 15.0                       # the query log's writer commits about once a second

VARIANTS = [("phone", PHONE, False), ("phone-dark", PHONE, True), ("desktop", DESKTOP, False)]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chrome_paths() -> tuple[str, str]:
    return chromium()


@pytest.fixture(scope="module")
def daemon(chrome_paths, module_daemons, standin):
    """The real daemon on a fresh install's config, shaped like the shipped one: `adults`, and
    `new-devices` (teen) for every device nobody named, no devices, no password yet."""
    web_port = free_port()
    started = module_daemons([f"udp://127.0.0.1:{standin.port}"], extra={
        "web": {"listen": f"127.0.0.1:{web_port}", "address": BLOCK_ADDRESS, "hostnames": ["filter.home"]},
        "profiles": {"adults": {"preset": "adult"}, "new-devices": {"preset": "teen"}},
        "default_profile": "new-devices"})
    started.web_port = web_port
    return started


@pytest.fixture(scope="module")
def webui(daemon):
    server = WebUI(daemon.config_path, daemon.web_port, daemon.folder).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chrome_paths, webui, daemon):
    chrome = Browser(*chrome_paths, folder=daemon.folder, host_rules="MAP blocked.test 127.0.0.1")
    chrome.base = webui.url
    yield chrome
    chrome.quit()


class Story:
    """What the steps share: which finished, and what the pages' checks found."""

    def __init__(self):
        self.done: set[str] = set()
        self.problems: dict[str, list[str]] = {}
        self.shot: list[str] = []
        self.weights: dict[str, int] = {}

    def needs(self, *steps: str) -> None:
        missing = [step for step in steps if step not in self.done]
        if missing:
            pytest.skip(f"needs the step(s) {', '.join(missing)}, which did not finish")


@pytest.fixture(scope="module")
def story() -> Story:
    return Story()


@pytest.fixture
def ui(browser, webui):
    """The browser; a web UI that died during the test is reported with its log."""
    yield browser
    if webui.process.poll() is not None:
        pytest.fail(f"the web UI exited with {webui.process.returncode}:\n{webui.log()}")


# ---------------------------------------------------------------- DNS as the devices see it


def addresses(daemon, name: str, source: str) -> list[str]:
    reply = ask(name, "A", daemon.port, source=source, edns=1232)
    assert reply.header.rcode == RCODE.NOERROR, f"{name} from {source}: {RCODE[reply.header.rcode]}"
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def restricted(daemon, name: str, source: str) -> bool:
    """Let through in YouTube's restricted mode (the child preset's `youtube: strict`): a CNAME
    to restrict.youtube.com and the upstream's address for it."""
    reply = ask(name, "A", daemon.port, source=source, edns=1232)
    cnames = [str(rr.rdata).rstrip(".") for rr in reply.rr if rr.rtype == QTYPE.CNAME]
    found = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
    return cnames == ["restrict.youtube.com"] and found == [name_address("restrict.youtube.com")]


def explain(daemon, name: str, source: str) -> str:
    """The whole answer, for a failure message (the EDE says which rule blocked)."""
    return str(ask(name, "A", daemon.port, source=source, edns=1232))


def settles(daemon, check, name: str, source: str, message: str) -> None:
    """Poll until `check(daemon, name, source)` holds; at the deadline, show the last answer."""
    try:
        wait_until(lambda: check(daemon, name, source), timeout=PICKUP_S, message=message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {name} from {source} is answered:\n{explain(daemon, name, source)}") from None


def blocked(daemon, name: str, source: str) -> bool:
    return addresses(daemon, name, source) == [BLOCK_ADDRESS]


def answered(daemon, name: str, source: str) -> bool:
    """The upstream's own answer (the stand-in's address for this very name)."""
    return addresses(daemon, name, source) == [name_address(name)]


def house_now() -> datetime.datetime:
    return datetime.datetime.now(ZoneInfo(HOUSE_TZ))


# ---------------------------------------------------------------- looking at a page


def look(ui: Browser, story: Story, name: str) -> None:
    """Photograph the current page in every variant and note what a parent would trip over."""
    problems = story.problems.setdefault(name, [])
    problems += [f"inline script or style: {found}" for found in ui.inline_code()]
    headings = ui.headings()
    if len(headings) != 1:
        problems.append(f"{len(headings)} <h1> headings ({headings}); a page needs one")
    problems += [f"control without an accessible name: {html}" for html in ui.unnamed_controls()]
    parts = ui.weight()
    total = sum(size for _, size in parts)
    story.weights[name] = total
    if total > PAGE_BUDGET_BYTES:
        problems.append(f"{total:,} bytes of HTML + CSS ({parts}), over {PAGE_BUDGET_BYTES:,}")
    for label, metrics, dark in VARIANTS:
        ui.variant(metrics, dark)
        ui.screenshot(SCREENSHOTS / f"{name}-{label}.png")
        if metrics is PHONE and not dark:
            problems += [f"phone: wider than the screen: {item}" for item in ui.overflow()]
            problems += [f"phone: tap target under 24 px: {item}" for item in ui.small_targets()]
        if metrics is PHONE:
            problems += [f"{label}: low contrast: {item}" for item in ui.low_contrast()]
    ui.variant(PHONE, dark=False)
    story.shot.append(name)


# ---------------------------------------------------------------- the story


def test_browser_runs_with_javascript_off(ui, story):
    assert ui.javascript_is_off(), "the browser must not run page scripts: the UI has to work without them"
    story.done.add("browser")


def test_first_run_asks_for_a_password_of_ten_characters_then_opens_the_wizard(ui, story, daemon):
    story.needs("browser")
    ui.open("/")
    assert ui.path() == "/setup", "a fresh install sends every page to the setup"
    look(ui, story, "setup")

    # The installer's one-time code, from the file the web UI made at start (journalctl shows it too).
    setup_code = (daemon.folder / "var" / "setup-code").read_text().strip()
    ui.fill("#setup_code", "NOT-THE-CODE")
    ui.fill("#password", PASSWORD)
    ui.fill("#confirm", PASSWORD)
    ui.submit(ui.button("Set the password"))
    assert "That is not the setup code." in ui.text() and ui.path() == "/setup"
    ui.fill("#setup_code", setup_code)
    ui.fill("#password", "short")
    ui.fill("#confirm", "short")
    # minlength is the browser's first line; the server says the same without it.
    ui.driver.execute_script("document.querySelectorAll('[minlength]').forEach(e => e.removeAttribute('minlength'))")
    ui.submit(ui.button("Set the password"))
    assert "Use at least 10 characters." in ui.text()
    look(ui, story, "setup-error")

    ui.fill("#setup_code", setup_code)
    ui.fill("#password", PASSWORD)
    ui.fill("#confirm", PASSWORD)
    ui.submit(ui.button("Set the password"))
    assert ui.path() == "/setup/wizard"
    assert not (daemon.folder / "var" / "setup-code").exists()
    look(ui, story, "wizard")
    story.done.add("setup")


def test_the_wizard_sets_the_house_time_zone(ui, story, daemon):
    story.needs("setup")
    assert ui.find("input[name=default_profile][value=same]").is_selected(), "unnamed devices filtered by default"
    ui.fill("#timezone", HOUSE_TZ)
    ui.submit(ui.button("Save"))
    assert ui.path() == "/"
    assert any("All set" in flash for flash in ui.flashes()), ui.flashes()
    import yaml
    assert yaml.safe_load(daemon.config_path.read_text())["timezone"] == HOUSE_TZ
    story.done.add("wizard")


def test_logging_out_and_back_in(ui, story):
    story.needs("setup")
    ui.submit(ui.button("Log out"))
    assert ui.path() == "/login"
    ui.open("/devices")
    assert ui.path() == "/login", "pages need a login"
    look(ui, story, "login")

    ui.fill("#password", "not the password")
    ui.submit(ui.button("Log in"))
    assert "Wrong password." in ui.text()
    look(ui, story, "login-error")

    ui.fill("#password", PASSWORD)
    ui.submit(ui.button("Log in"))
    assert ui.path() == "/devices", "the login returns to the page asked for"
    story.done.add("login")


def test_a_profile_from_the_child_preset_that_also_blocks_youtube(ui, story):
    story.needs("login")
    ui.open("/profiles")
    form = ui.find("form.inline-form")
    ui.fill("input[name=name]", "emma", within=form)
    ui.choose("select[name=preset]", "child", within=form)
    ui.submit(ui.button("Create", within=form))
    assert ui.path() == "/profiles/emma"
    assert "Profile emma created." in ui.flashes()

    # The child preset blocks social networks but leaves YouTube in restricted mode: block it.
    youtube = ui.find("input[name=service][value=youtube]")
    assert not youtube.is_selected()
    assert ui.find("input[name=service][value=tiktok]").is_selected(), "the child preset blocks TikTok"
    ui.click(youtube.find_element("xpath", "./ancestor::label"))
    assert youtube.is_selected()
    ui.submit(ui.button("Save"))
    assert ui.path() == "/profiles/emma"
    assert any(flash.startswith("Saved Emma.") for flash in ui.flashes()), ui.flashes()
    assert ui.find("input[name=service][value=youtube]").is_selected()
    story.done.add("profile")


def test_a_new_device_seen_by_the_daemon_is_named_and_given_the_profile(ui, story, daemon):
    story.needs("profile")
    assert answered(daemon, "first-question.example", TABLET), "the tablet's first query is answered"

    def tablet_listed():
        ui.open("/devices")
        return [card for card in ui.find_all("li.device.new") if TABLET in card.text]
    card = wait_until(tablet_listed, timeout=SEEN_S, interval=0.2, message="the tablet on the Devices page")[0]
    assert "New device" in card.text
    look(ui, story, "devices-new")

    card = tablet_listed()[0]
    ui.fill("input[name=name]", "emma-tablet", within=card)
    ui.choose("select[name=profile]", "emma", within=card)
    ui.submit(ui.button("Save", within=card))
    assert any(flash.startswith("Saved emma-tablet.") for flash in ui.flashes()), ui.flashes()
    assert "emma-tablet" in ui.find("ul.cards").text

    # The parent's own phone (127.0.0.1) is a device nobody named: filtered, like a teen, until
    # one tap says it is a parent's.
    assert not answered(daemon, "www.youtube.com", PARENT), "an unnamed device gets YouTube's filter"
    parent_card = next(card for card in ui.find_all("li.device.new") if PARENT in card.text)
    ui.submit(ui.find("form[action='/devices/parents'] button", within=parent_card))
    assert any("is a parent's device now" in flash for flash in ui.flashes()), ui.flashes()

    # The daemon now filters the tablet with emma's rules; the parent's 127.0.0.1 is untouched.
    settles(daemon, blocked, "www.tiktok.com", TABLET, "the tablet to get emma's rules")
    assert blocked(daemon, "www.youtube.com", TABLET)
    settles(daemon, answered, "www.youtube.com", PARENT, "the parent's device out of the filter")
    assert answered(daemon, "www.tiktok.com", PARENT)
    assert answered(daemon, "homework.example", TABLET)
    story.done.add("device")


def test_pausing_the_tablet_blocks_it_alone_and_resuming_brings_it_back(ui, story, daemon):
    story.needs("device")
    name = "pause.example"
    ui.open("/devices")
    ui.submit(ui.find("a[href='/devices/emma-tablet']"))
    assert ui.path() == "/devices/emma-tablet"
    ui.submit(ui.button("Pause"))
    assert "emma-tablet paused until resumed" in ui.flashes()
    assert "Paused" in ui.find("section.card").text
    settles(daemon, blocked, name, TABLET, "the paused tablet's answers blocked")
    assert answered(daemon, name, PARENT)
    ui.open("/devices")
    look(ui, story, "devices-paused")

    ui.open("/devices/emma-tablet")
    ui.submit(ui.button("Resume"))
    assert "emma-tablet resumed" in ui.flashes()
    settles(daemon, answered, name, TABLET, "the tablet's answers back")
    assert answered(daemon, name, PARENT)
    story.done.add("pause")


def test_thirty_more_minutes_lifts_a_running_homework_schedule(ui, story, daemon):
    story.needs("pause", "wizard")
    name = "reward.example"
    now = house_now()
    start, end = (f"{now + datetime.timedelta(hours=hours):%H:%M}" for hours in (-1, 1))
    ui.open("/profiles/emma")
    new = ui.find_all("fieldset.schedule")[-1]
    assert "Add a time" in new.text
    ui.fill("input[name$='-name']", "homework", within=new)
    ui.type_time("input[name$='-start']", start, within=new)
    ui.type_time("input[name$='-end']", end, within=new)
    assert ui.find("input[value=daily]", within=new).is_selected()       # every day, unless chosen
    assert ui.find("input[value=all]", within=new).is_selected()         # everything, unless chosen
    ui.submit(ui.button("Save times"))
    assert any(flash.startswith("Saved Emma.") for flash in ui.flashes()), ui.flashes()
    look(ui, story, "profile")
    settles(daemon, blocked, name, TABLET, f"homework ({start}–{end} {HOUSE_TZ}) to block the tablet")
    assert answered(daemon, name, PARENT)

    ui.open("/devices/emma-tablet")
    ui.submit(ui.button("30 more minutes"))
    assert "emma-tablet: schedules lifted for 30 min" in ui.flashes()
    settles(daemon, answered, name, TABLET, "homework lifted for the tablet")
    assert blocked(daemon, "www.youtube.com", TABLET), "bonus time lifts schedules, not blocked services"
    story.done.add("bonus")


def test_allowing_youtube_for_an_hour_lets_the_tablet_resolve_it(ui, story, daemon):
    story.needs("device")
    ui.open("/devices/emma-tablet")
    form = ui.find("form.inline-form")
    ui.choose("select[name=what]", "YouTube", within=form)
    ui.submit(ui.button("Allow for 1 h", within=form))
    assert "YouTube allowed for emma-tablet for 60 min" in ui.flashes()
    # Allowed, and still in the profile's restricted mode.
    settles(daemon, restricted, "www.youtube.com", TABLET, "YouTube allowed on the tablet")
    assert blocked(daemon, "www.tiktok.com", TABLET), "only YouTube was allowed"
    assert "YouTube allowed until" in ui.find("section.card").text
    look(ui, story, "device")
    story.done.add("allow")


def test_the_log_shows_the_tablets_queries_and_why_they_were_blocked(ui, story, daemon):
    story.needs("device")
    assert blocked(daemon, "m.tiktok.com", TABLET)

    def logged():
        ui.open("/log?device=emma-tablet&q=tiktok")
        return [row for row in ui.find_all("table.log tbody tr") if "m.tiktok.com" in row.text]
    row = wait_until(logged, timeout=SEEN_S, interval=0.2, message="m.tiktok.com in the log")[0]
    assert "emma-tablet" in row.text and "block" in row.text
    ui.open("/log")
    assert ui.find_all("table.log tbody tr"), "the unfiltered log lists queries"
    look(ui, story, "log")

    row = logged()[0]
    ui.submit(ui.find("a[href*='/log/why']", within=row))
    assert ui.path() == "/log/why"
    page = ui.text()
    assert "m.tiktok.com" in page and "emma-tablet" in page and "emma" in page
    assert "Blocked" in ui.find("p.big").text
    assert "tiktok" in ui.find("dl.facts").text.lower()
    look(ui, story, "why")
    story.done.add("log")


def test_the_block_page_names_the_site_and_the_reason(ui, story, daemon):
    story.needs("login")
    # Not blocked for this browser's device (yet): the page says so rather than claim a block.
    ui.open(f"http://blocked.test:{daemon.web_port}/")
    assert "blocked.test is not blocked" in ui.text()
    assert "Log out" not in ui.text(), "the block page shows nothing of the admin UI"
    look(ui, story, "blockpage-allowed")

    # The parent blocks blocked.test for the adults (127.0.0.1, this browser): now with a reason.
    ui.open("/profiles/adults")
    ui.fill("#block", "blocked.test")
    ui.submit(ui.button("Save"))
    assert any(flash.startswith("Saved Adults.") for flash in ui.flashes()), ui.flashes()
    settles(daemon, blocked, "blocked.test", PARENT, "blocked.test blocked for the parent's device")

    def reason_shown():
        ui.open(f"http://blocked.test:{daemon.web_port}/some/page")
        return "Your parents have blocked this site." in ui.text()
    wait_until(reason_shown, timeout=PICKUP_S, interval=0.2, message="the block page's reason")
    assert "blocked.test is blocked" in ui.text()
    look(ui, story, "blockpage")
    story.done.add("blockpage")


def test_every_other_page_opens(ui, story):
    """The pages the story did not pass through, each photographed in its final state."""
    story.needs("login")
    ui.open(ui.base + "/")
    for path, name, expect in [("/", "dashboard", "Queries per hour"), ("/devices", "devices", "emma-tablet"),
                               ("/profiles", "profiles", "emma"), ("/lists", "lists", "Block lists"),
                               ("/requests", "requests", "Access requests"), ("/settings", "settings", "Password"),
                               ("/settings/notifications", "notifications", "Notifications"),
                               ("/settings/certificate", "certificate", "Block page over HTTPS"),
                               ("/certificate/check", "certificate-check", "trust the filter"),
                               ("/summary/emma", "summary", "Weekly summary: emma"),
                               ("/devices/no-such-device", "error", "There is no device with that name")]:
        ui.open(path)
        assert expect in ui.text(), f"{path}: {expect!r} not on the page"
        look(ui, story, name)
    story.done.add("tour")


def test_every_page_reads_well_on_a_phone_and_a_desktop(story):
    """No page is wider than a phone, unnamed, hard to tap, low in contrast, heavy, or scripted."""
    story.needs("tour")
    (SCREENSHOTS.parent / "page-weight.txt").write_text("".join(
        f"{name:20} {size:>7,} bytes HTML + CSS\n" for name, size in sorted(story.weights.items())))
    required = {"setup", "wizard", "login", "devices", "device", "profiles", "profile", "log", "why", "lists",
                "requests", "settings", "dashboard", "blockpage", "notifications", "certificate",
                "certificate-check", "summary"}
    assert required <= set(story.shot), f"pages not photographed: {sorted(required - set(story.shot))}"
    found = {name: problems for name, problems in story.problems.items() if problems}
    assert not found, "what a parent would trip over:\n" + "\n".join(
        f"  {name}: {problem}" for name, problems in found.items() for problem in problems)
