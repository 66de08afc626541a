"""The parents' pages: the routes, every form's validation, safe config edits, and escaping of
everything that comes from the network (query names, hostnames, User-Agents, paths)."""
from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest
from markupsafe import escape
from webui_fixtures import (PASSWORD, XSS_PAYLOADS, admin, env, insert_query, is_block_page,  # noqa: F401
                            location_path, login, page_csrf, version_from)

from filterd.store import configfile

PAGES = ("/", "/devices", "/devices/kids-tablet", "/profiles", "/profiles/kids", "/log", "/lists", "/requests",
         "/settings", "/setup/wizard")



class InlineCode(HTMLParser):
    """Finds what a strict CSP would refuse: inline <script>, <style>, style= and on*= attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        names = {name.lower() for name, _ in attrs}
        if tag == "script":
            self.in_script = True
            if "src" not in names:
                self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("<style> element")
        if "style" in names:
            self.problems.append(f"style= on <{tag}>")
        self.problems += [f"{name}= on <{tag}>" for name in names if name.startswith("on")]
        self.problems += [f"javascript: URL on <{tag}>" for name, value in attrs
                          if value and value.strip().lower().startswith("javascript:")]

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False

    def handle_data(self, data):
        if self.in_script and data.strip():
            self.problems.append("code inside <script>")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    parser.close()
    return parser.problems


def fill_network_data(env) -> None:
    """Rows a child can influence: query names, client hostnames, user agents of failed logins."""
    now = time.time()
    for payload in XSS_PAYLOADS:
        insert_query(env, payload, ts=now)
        insert_query(env, f"www.{payload}.com", action="allow", category=None, ts=now)
        insert_query(env, payload, device=None, client="192.168.1.60", ts=now)
        insert_query(env, "example.com", device=payload, client="192.168.1.62", ts=now)
    env.execute("INSERT INTO clients_seen (client, mac, device, hostname, first_seen, last_seen, queries)"
                " VALUES ('192.168.1.60', 'a2:bb:cc:dd:ee:ff', NULL, ?, ?, ?, 3)", (XSS_PAYLOADS[0], now, now))
    env.execute("INSERT INTO clients_seen (client, mac, device, hostname, first_seen, last_seen, queries)"
                " VALUES ('192.168.1.61', NULL, NULL, ?, ?, ?, 3)", (XSS_PAYLOADS[1], now, now))
    env.execute("INSERT INTO rollups (hour, device, category, queries, blocked) VALUES (?, ?, 'adult', 5, 2)",
                (int(now // 3600), XSS_PAYLOADS[0]))
    env.execute("INSERT INTO login_failures (ts, peer, user_agent) VALUES (?, '192.168.1.60', ?)", (now, XSS_PAYLOADS[1]))


def assert_no_raw_payload(body: str, where: str) -> None:
    for payload in XSS_PAYLOADS:
        assert payload not in body, where
    assert "<script>alert" not in body and "<img src=x" not in body, where


# ---------------------------------------------------------------- the routes


def test_every_page_answers_a_logged_in_parent(admin):
    for path in PAGES:
        response = admin.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "text/html"


def test_dashboard_warns_when_the_daemon_is_down_or_no_upstream_answers(env, admin):
    html = admin.get("/").get_data(as_text=True)
    assert "Protection off: the filter is not running" in html and "no site loads" not in html
    assert "Restart the filter" in html and "systemctl" not in html
    now = time.time()
    env.execute("INSERT INTO daemon_status (pid, worker, started, updated, upstreams, upstreams_failing)"
                " VALUES (4242, 0, ?, ?, 2, 1)", (now - 60, now))
    html = admin.get("/").get_data(as_text=True)
    assert "Protection on</h2>" in html and "not running" not in html and "no site loads" not in html
    env.execute("UPDATE daemon_status SET upstreams_failing = 2")
    assert "Protection on, but no site loads" in admin.get("/").get_data(as_text=True)


def test_home_says_when_the_lists_were_updated_and_updates_them_on_a_tap(env, admin, monkeypatch):
    import json
    import subprocess
    html = admin.get("/").get_data(as_text=True)
    assert "Lists not downloaded yet" in html and "Update lists now" in html
    status_file = env.data_dir / "lists" / "update-status.json"
    status_file.parent.mkdir(parents=True, exist_ok=True)
    status_file.write_text(json.dumps({"started": time.time() - 7300, "finished": time.time() - 7200,
                                       "pid": 1, "lists": []}))
    assert "Lists updated 2 h ago" in admin.get("/").get_data(as_text=True)
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: started.append(args))
    assert admin.post("/lists/update", data={"csrf_token": page_csrf(admin)}).status_code == 302
    assert started and started[0][-4:-1] == ["lists", "update", "--config"]


def test_restart_the_filter_leaves_a_request_for_systemd_and_is_audited(env, admin):
    assert admin.post("/filter/restart", data={}).status_code in (400, 403)     # no CSRF token: refused
    assert not (env.data_dir / "restart-request").exists()
    response = admin.post("/filter/restart", data={"csrf_token": page_csrf(admin)})
    assert response.status_code == 302 and location_path(response) == "/"
    assert (env.data_dir / "restart-request").exists()
    assert ("web UI", "restart", "the filter's restart was asked for") in env.audit()
    assert "A restart was asked for just now" in admin.get("/").get_data(as_text=True)


def test_blocked_reasons_add_up_to_the_blocked_total(env, admin):
    """A block without a category (bedtime, a pause, an app) is counted under its own bar: the
    card never says "Nothing blocked" beside a non-zero blocked total."""
    hour = int(time.time() // 3600)
    env.execute("INSERT INTO rollups (hour, device, category, queries, blocked) VALUES (?, 'kids-tablet', '', 40, 30)",
                (hour,))
    html = admin.get("/").get_data(as_text=True)
    assert "Nothing blocked in the last 24 hours" not in html
    assert "Bedtime, pauses, apps and your own list" in html and ">30<" in html


def test_unknown_device_or_profile_is_404(admin):
    assert admin.get("/devices/nobody").status_code == 404
    assert admin.get("/profiles/nobody").status_code == 404


def test_pages_have_no_inline_script_style_or_event_handlers(env, admin):
    fill_network_data(env)
    responses = {path: admin.get(path) for path in PAGES}
    responses["/log?q=x"] = admin.get("/log?q=x")
    responses["why"] = admin.get("/log/why?name=example.com&device=kids-tablet")
    responses["404"] = admin.get("/no/such/page")
    responses["login"] = env.client().get("/login")
    responses["block page"] = env.client().get("/", headers={"Host": "tiktok.com"})
    for where, response in responses.items():
        assert response.mimetype == "text/html", where
        assert inline_code(response.get_data(as_text=True)) == [], where


# ---------------------------------------------------------------- escaping


def test_network_data_is_escaped_on_every_page(env, admin):
    fill_network_data(env)
    for path in PAGES + ("/log?decision=blocked", "/log?device=192.168.1.60", "/api/queries", "/api/devices",
                         "/api/status"):
        response = admin.get(path)
        assert response.status_code == 200, path
        assert_no_raw_payload(response.get_data(as_text=True), path)
    log = admin.get("/log").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in log
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in log
    devices = admin.get("/devices").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in devices


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_reflected_parameters_are_escaped(env, admin, payload):
    from urllib.parse import quote
    for path in (f"/log?q={quote(payload)}", f"/log?device={quote(payload)}&category={quote(payload)}",
                 f"/log/why?name=example.com&device={quote(payload)}", f"/{quote(payload)}",
                 f"/devices/{quote(payload)}", f"/profiles/{quote(payload)}", f"/api/queries?q={quote(payload)}"):
        assert_no_raw_payload(admin.get(path).get_data(as_text=True), path)


def test_404_page_escapes_the_path(admin):
    response = admin.get("/<script>alert(1)</script>")
    assert response.status_code == 404
    body = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;" in body


def test_flash_messages_escape_what_was_sent(env, admin):
    token = page_csrf(admin)
    for payload in XSS_PAYLOADS:
        admin.post("/devices/kids-tablet/allow", data={"csrf_token": token, "what": payload, "minutes": "60"})
        assert_no_raw_payload(admin.get("/devices/kids-tablet").get_data(as_text=True), "flash")


def test_block_page_escapes_the_host_header(env):
    client = env.client()
    for payload in XSS_PAYLOADS + ("<svg onload=alert(1)>.com",):
        response = client.get("/", headers={"Host": payload})
        assert is_block_page(response)
        body = response.get_data(as_text=True)
        assert payload not in body and "<svg onload" not in body


def test_profile_form_echo_is_escaped(env, admin):
    form = profile_form(admin)
    form["allow"] = "</textarea><script>alert(1)</script>"
    body = admin.post("/profiles/kids", data=form).get_data(as_text=True)
    assert "<script>alert(1)</script>" not in body


# ---------------------------------------------------------------- the profile editor


def profile_form(admin, profile: str = "kids") -> dict:
    """The form as the page renders it: the profile's current choices."""
    page = admin.get(f"/profiles/{profile}").get_data(as_text=True)
    form: dict = {"csrf_token": page_csrf(admin), "version": version_from(page),
                  "category": re.findall(r'name="category" value="([^"]+)" checked', page),
                  "service": re.findall(r'name="service" value="([^"]+)" checked', page),
                  "safesearch": "on", "youtube": "strict", "allow": "khanacademy.org", "block": "",
                  "schedule_count": "1", "schedule-0-name": "bedtime", "schedule-0-start": "21:00",
                  "schedule-0-end": "07:00", "schedule-0-days": "school_nights", "schedule-0-what": "all"}
    return form


def section(html: str, heading: str) -> str:
    """The HTML of the card whose <h2> mentions `heading` (up to the next <h2> or </section>)."""
    match = re.search(r"<h2[^>]*>[^<]*" + re.escape(heading), html, re.I)
    assert match, f"no <h2> about {heading}"
    ends = [i for i in (html.find("</section>", match.end()), html.find("<h2", match.end())) if i >= 0]
    return html[match.start():min(ends) if ends else len(html)]


def test_profile_edit_is_saved_keeping_comments(env, admin):
    form = profile_form(admin)
    form["allow"] = "khanacademy.org\nwikipedia.org"
    form["schedule-1-name"] = "homework"
    form["schedule-1-start"] = "16:00"
    form["schedule-1-end"] = "18:00"
    form["schedule-1-days"] = "custom"
    form["schedule-1-mon"] = "on"
    form["schedule-1-what"] = "some"
    form["schedule-1-item"] = ["games", "youtube"]
    response = admin.post("/profiles/kids", data=form)
    assert response.status_code == 302
    config = configfile.validate_text(env.config_text(), env.config_path)
    kids = config.rules.profiles["kids"]
    assert kids.allow == ("khanacademy.org", "wikipedia.org")
    assert [s.name for s in kids.schedules] == ["bedtime", "homework"]
    assert kids.schedules[0].days == frozenset({6, 0, 1, 2, 3})           # school nights: Sun–Thu
    assert kids.schedules[1].days == frozenset({0}) and kids.schedules[1].block == ("games", "youtube")
    text = env.config_text()
    for comment in ("# The house's rules", "# where we live", "# The web UI", "# Emma and Noah", "# Devices, by address"):
        assert comment in text
    assert (env.folder / "filterd.yaml.bak").exists()
    # The trail says what changed, in YAML paths.
    detail = next(d for actor, action, d in env.audit() if action == "config")
    assert detail.startswith("profile kids edited: ") and "profiles.kids.allow: + wikipedia.org" in detail, detail


@pytest.mark.parametrize("change, field_heading, anchor, message", [
    ({"schedule-0-start": "25:00"}, "Bedtime, homework", "schedule-0", "is not a time"),
    ({"schedule-0-end": "7pm"}, "Bedtime, homework", "schedule-0", "is not a time"),
    ({"schedule-0-start": ""}, "Bedtime, homework", "schedule-0", "set when it starts"),
    ({"schedule-0-what": "some", "schedule-0-item": ["games", "nonsense"]}, "Bedtime, homework", "schedule-0", "nonsense"),
    ({"schedule-0-what": "some"}, "Bedtime, homework", "schedule-0", "tick the categories and apps"),
    ({"category": ["adult", "nonsense"]}, "Kinds of sites", "categories", "nonsense"),
    ({"service": ["tiktok", "nonsense\r\nX-Injected: 1"]}, "Apps and sites", "apps", "nonsense"),
])
def test_profile_errors_show_on_top_and_beside_their_field_and_nothing_is_written(env, admin, change, field_heading,
                                                                                    anchor, message):
    before = env.config_text()
    form = profile_form(admin)
    form.update(change)
    response = admin.post("/profiles/kids", data=form)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    card = section(body, field_heading)
    assert 'class="error"' in card and message in card
    summary = body[body.index('class="error-summary"'):body.index('id="today"')]
    assert f'href="#{anchor}"' in summary and message in summary
    assert env.config_text() == before
    assert not (env.folder / "filterd.yaml.bak").exists()


def test_a_refused_save_keeps_every_posted_value(env, admin):
    """A new time typed with a mistake elsewhere comes back as typed, not lost."""
    form = profile_form(admin)
    form.update({"schedule-0-start": "25:00", "allow": "khanacademy.org\nwikipedia.org", "youtube": "moderate",
                 "service": ["tiktok", "roblox"], "schedule-1-name": "homework", "schedule-1-start": "16:00",
                 "schedule-1-end": "18:00", "schedule-1-days": "weekdays", "schedule-1-what": "some",
                 "schedule-1-item": ["games"]})
    body = admin.post("/profiles/kids", data=form).get_data(as_text=True)
    assert 'value="homework"' in body and 'value="16:00"' in body and "wikipedia.org" in body
    assert re.search(r'name="schedule-1-days" value="weekdays" checked', body)
    assert re.search(r'name="schedule-1-item" value="games" checked', body)
    assert re.findall(r'name="service" value="([^"]+)" checked', body) == ["roblox", "tiktok"]
    assert '<option value="moderate" selected>' in body


def test_a_save_returns_to_its_section(env, admin):
    form = profile_form(admin)
    form["section"] = "apps"
    form["service"] = form["service"] + ["youtube"]
    response = admin.post("/profiles/kids", data=form)
    assert response.status_code == 302 and response.headers["Location"].endswith("/profiles/kids#apps")
    assert "youtube" in configfile.validate_text(env.config_text(), env.config_path).rules.profiles["kids"].block_services


def test_the_childs_page_names_the_child_and_reads_youtube_as_a_filter(env, admin):
    body = admin.get("/profiles/kids").get_data(as_text=True)
    assert "<h1>Kids</h1>" in body and "kids-tablet" in section(body, "Today")
    assert "YouTube filter" in body and '<option value="off">none</option>' in body
    assert "restricted mode" not in body
    assert 'class="list-search"' in body and "list-search.js" in body


def test_pause_and_bonus_for_all_of_a_childs_devices(env, admin):
    response = admin.post("/profiles/kids/pause", data={"csrf_token": page_csrf(admin), "minutes": "60"},
                          follow_redirects=True)
    body = response.get_data(as_text=True)
    assert "Kids&#39;s devices are paused for 1 h." in body and "Resume all" in body
    assert env.query("SELECT kind, subject_kind, subject FROM overrides WHERE ended IS NULL") == [
        ("pause", "profile", "kids")]
    admin.post("/profiles/kids/resume", data={"csrf_token": page_csrf(admin)})
    assert env.query("SELECT count(*) FROM overrides WHERE ended IS NULL") == [(0,)]
    admin.post("/profiles/kids/bonus", data={"csrf_token": page_csrf(admin), "minutes": "30"})
    assert env.query("SELECT kind, subject FROM overrides WHERE ended IS NULL") == [("bonus", "kids")]


def test_profile_domain_error_shows_beside_the_allow_list(env, admin):
    before = env.config_text()
    form = profile_form(admin)
    form["allow"] = "khanacademy.org\nnot a domain"
    body = admin.post("/profiles/kids", data=form).get_data(as_text=True)
    card = section(body, "allowed")
    assert 'class="error"' in card and "not a domain" in card
    assert env.config_text() == before


def test_profile_with_a_dotted_name_shows_its_errors(env, admin):
    configfile.edit(env.config_path, None, lambda doc: doc["profiles"].__setitem__("kids.v2", {"preset": "teen"}))
    before = env.config_text()
    form = profile_form(admin, "kids.v2")
    form["schedule-0-start"] = "99:99"
    body = admin.post("/profiles/kids.v2", data=form).get_data(as_text=True)
    assert 'class="error"' in section(body, "Bedtime, homework")
    assert env.config_text() == before


def test_profile_edit_from_an_outdated_page_is_refused(env, admin):
    form = profile_form(admin)
    hand_edited = env.config_text().replace("allow: [khanacademy.org]", "allow: [khanacademy.org, scratch.mit.edu]")
    env.config_path.write_text(hand_edited)
    form["allow"] = "tiktok.com"
    response = admin.post("/profiles/kids", data=form)
    assert response.status_code == 200
    assert "changed meanwhile" in response.get_data(as_text=True)
    assert env.config_text() == hand_edited
    # The reloaded page carries the new version, and then the edit goes through.
    form = profile_form(admin)
    form["allow"] = "tiktok.com"
    assert admin.post("/profiles/kids", data=form).status_code == 302


def test_new_profile_from_a_preset(env, admin):
    page = admin.get("/profiles").get_data(as_text=True)
    response = admin.post("/profiles", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                             "name": "emma", "preset": "young_child"})
    assert response.status_code == 302 and location_path(response) == "/profiles/emma"
    assert "emma:" in env.config_text()


@pytest.mark.parametrize("name", ["kids", "Bad Name!", ""])
def test_new_profile_refuses_a_bad_or_taken_name(env, admin, name):
    before = env.config_text()
    page = admin.get("/profiles").get_data(as_text=True)
    response = admin.post("/profiles", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                             "name": name, "preset": "teen"})
    assert 'id="name-error"' in response.get_data(as_text=True)
    assert env.config_text() == before


# ---------------------------------------------------------------- devices


def seen_client(env, ip: str = "192.168.1.70", hostname: str | None = "emma-ipad", mac: str | None = None) -> None:
    now = time.time()
    env.execute("INSERT INTO clients_seen (client, mac, device, hostname, first_seen, last_seen, queries)"
                " VALUES (?, ?, NULL, ?, ?, ?, 1)", (ip, mac, hostname, now, now))


def assign(admin, **fields):
    page = admin.get("/devices").get_data(as_text=True)
    data = {"csrf_token": page_csrf(admin), "version": version_from(page), "old_name": "", "mac": "", **fields}
    return admin.post("/devices/assign", data=data, follow_redirects=True)


def test_naming_a_new_device(env, admin):
    seen_client(env)
    assert "emma-ipad" in admin.get("/devices").get_data(as_text=True)
    response = assign(admin, name="emma-ipad", profile="kids", ip="192.168.1.70")
    assert 'class="flash ok"' in response.get_data(as_text=True)
    config = configfile.validate_text(env.config_text(), env.config_path)
    assert [(d.name, d.ip, d.profile) for d in config.rules.devices][-1] == ("emma-ipad", "192.168.1.70", "kids")
    assert "# Devices, by address" in env.config_text()


@pytest.mark.parametrize("name", ["<b>bad</b>", "", "-starts-with-dash", "x" * 80])
def test_naming_a_device_refuses_a_bad_name(env, admin, name):
    seen_client(env)
    before = env.config_text()
    response = assign(admin, name=name, profile="kids", ip="192.168.1.70")
    body = response.get_data(as_text=True)
    assert 'id="name-error-' in body and 'aria-invalid="true"' in body     # beside the field
    assert "<b>bad</b>" not in body
    if name:
        assert f'value="{escape(name)}"' in body                             # what was typed is kept
    assert env.config_text() == before


def test_naming_a_device_after_an_existing_one_is_refused(env, admin):
    seen_client(env)
    before = env.config_text()
    response = assign(admin, name="kids-tablet", profile="adults", ip="192.168.1.70")
    body = response.get_data(as_text=True)
    assert "exists already" in body and 'id="name-error-' in body
    assert env.config_text() == before


def test_naming_a_device_with_an_unknown_profile_is_refused(env, admin):
    seen_client(env)
    before = env.config_text()
    response = assign(admin, name="emma-ipad", profile="nobody", ip="192.168.1.70")
    body = response.get_data(as_text=True)
    assert 'id="profile-error-' in body and 'value="emma-ipad"' in body
    assert env.config_text() == before


def test_renaming_a_device_and_changing_its_profile(env, admin):
    response = assign(admin, name="Kids Tablet", profile="adults", old_name="kids-tablet", ip="192.168.1.23")
    assert 'class="flash ok"' in response.get_data(as_text=True)
    config = configfile.validate_text(env.config_text(), env.config_path)
    assert ("Kids Tablet", "192.168.1.23", "adults") in [(d.name, d.ip, d.profile) for d in config.rules.devices]
    assert "kids-tablet" not in env.config_text()


def test_a_parents_device_is_named_and_unfiltered_in_one_tap(env, admin):
    seen_client(env, "192.168.1.71", hostname="Mum's <Pixel>")
    page = admin.get("/devices").get_data(as_text=True)
    assert "A parent's device" in page and "Mum&#39;s &lt;Pixel&gt;" in page
    response = admin.post("/devices/parents", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                                    "name": "Mum's <Pixel>", "ip": "192.168.1.71", "mac": ""},
                          follow_redirects=True)
    body = response.get_data(as_text=True)
    assert "is a parent&#39;s device now: profile adults, not filtered" in body
    config = configfile.validate_text(env.config_text(), env.config_path)
    assert ("Mum's -Pixel", "192.168.1.71", "adults") in [(d.name, d.ip, d.profile) for d in config.rules.devices]
    assert "New device: Mum" not in body        # its unnamed card went at once, before it asks again


def test_a_parents_device_without_a_host_name_and_without_an_adult_profile(env, admin):
    env.config_path.write_text(env.config_text().replace("  adults:\n    preset: adult\n", "")
                               .replace("profile: adults}", "profile: kids}").replace("default_profile: adults",
                                                                                        "default_profile: kids"))
    seen_client(env, "192.168.1.72", hostname=None)
    page = admin.get("/devices").get_data(as_text=True)
    admin.post("/devices/parents", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                         "name": "", "ip": "192.168.1.72"})
    config = configfile.validate_text(env.config_text(), env.config_path)
    assert config.rules.profiles["adults"].preset == "adult"
    assert ("parent-device-1", "192.168.1.72", "adults") in [(d.name, d.ip, d.profile) for d in config.rules.devices]


def test_the_devices_page_warns_when_unnamed_devices_are_unfiltered_and_sets_their_profile(env, admin):
    page = admin.get("/devices").get_data(as_text=True)
    assert "Profile adults filters almost nothing: a child's new phone is open" in page
    response = admin.post("/devices/unnamed", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                                    "profile": "kids"}, follow_redirects=True)
    assert "Devices nobody has named now use kids." in response.get_data(as_text=True)
    assert configfile.validate_text(env.config_text(), env.config_path).rules.default_profile == "kids"
    assert "filters almost nothing" not in admin.get("/devices").get_data(as_text=True)
    seen_client(env, "192.168.1.73")
    assert "1 device not named yet</a> (filtered as kids)" in admin.get("/").get_data(as_text=True)


def test_device_naming_from_an_outdated_page_is_refused(env, admin):
    page = admin.get("/devices").get_data(as_text=True)
    version = version_from(page)
    hand_edited = env.config_text() + "# edited by hand\n"
    env.config_path.write_text(hand_edited)
    response = admin.post("/devices/assign", data={"csrf_token": page_csrf(admin), "version": version,
                                                   "name": "emma", "profile": "kids", "ip": "192.168.1.70"},
                          follow_redirects=True)
    assert "changed meanwhile" in response.get_data(as_text=True)
    assert env.config_text() == hand_edited


def test_a_devices_page_shows_what_it_did_today_hour_by_hour_from_the_real_log_writer(env, admin):
    import datetime
    from zoneinfo import ZoneInfo

    from filterd.rules.log_settings import LogConfig
    from filterd.store.log_writer import QueryLog
    from test_log_writer import ALLOWED, GAMBLING, event

    now = time.time()
    midnight = datetime.datetime.now(ZoneInfo("UTC")).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    log = QueryLog(env.data_dir / "state.db", LogConfig())
    for item in [event("www.youtube.com", ALLOWED, ts=now, device="kids-tablet"),
                 event("i.ytimg.youtube.com", ALLOWED, ts=now, device="kids-tablet"),
                 event("<b>x</b>.example", ALLOWED, ts=now, device="kids-tablet"),
                 event("casino.example", GAMBLING, ts=now, device="kids-tablet"),        # blocked: not a visit
                 event("wikipedia.org", ALLOWED, ts=now, device="dad-phone"),              # another device
                 event("yesterday.example", ALLOWED, ts=midnight - 60, device="kids-tablet")]:
        log.record(item)
    conn = env.db()
    log.flush(conn)
    conn.close()
    html = admin.get("/devices/kids-tablet").get_data(as_text=True)
    hour = f"{datetime.datetime.fromtimestamp(now, ZoneInfo('UTC')).hour:02d}"
    assert hour in html and "youtube.com" in html
    assert re.search(r"youtube\.com\D*2", html), "two queries to youtube.com in that hour"
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "wikipedia.org" not in html and "yesterday.example" not in html
    timeline, blocked_today = html.split("Blocked today")
    assert "casino.example" not in timeline and "casino.example" in blocked_today


def test_pause_resume_bonus_and_allow_from_the_device_page(env, admin):
    token = page_csrf(admin)
    assert admin.post("/devices/kids-tablet/pause", data={"csrf_token": token, "minutes": "30"}).status_code == 302
    assert "paused" in admin.get("/devices").get_data(as_text=True)
    admin.post("/devices/kids-tablet/resume", data={"csrf_token": token})
    admin.post("/devices/kids-tablet/bonus", data={"csrf_token": token, "minutes": "30"})
    admin.post("/devices/kids-tablet/allow", data={"csrf_token": token, "what": "youtube", "minutes": "60"})
    kinds = [row[0] for row in env.query("SELECT kind FROM overrides ORDER BY id")]
    assert kinds == ["pause", "bonus", "allow"]
    assert env.query("SELECT ended IS NOT NULL FROM overrides WHERE kind = 'pause'") == [(1,)]
    assert [a[1] for a in env.audit() if a[0] == "web UI"] == ["pause", "resume", "bonus", "allow"]


def test_device_page_lists_what_is_in_force_each_with_an_undo_that_ends_it(env, admin):
    token = page_csrf(admin)
    admin.post("/devices/kids-tablet/allow", data={"csrf_token": token, "what": "youtube", "minutes": "60"})
    admin.post("/devices/kids-tablet/bonus", data={"csrf_token": token, "minutes": "30"})
    admin.post("/devices/kids-tablet/pause", data={"csrf_token": token, "minutes": "30"})
    html = admin.get("/devices/kids-tablet").get_data(as_text=True)
    assert html.count('action="/devices/kids-tablet/undo"') == 3 and "YouTube allowed" in html and "Bonus time" in html
    for kind, what, said in (("allow", "youtube", "YouTube is no longer allowed"), ("bonus", "", "Bonus time ended"),
                             ("pause", "", "Pause ended")):
        page = admin.post("/devices/kids-tablet/undo", data={"csrf_token": token, "kind": kind, "what": what,
                                                             "scope": "device"}, follow_redirects=True)
        assert said in page.get_data(as_text=True)
    html = admin.get("/devices/kids-tablet").get_data(as_text=True)
    assert 'action="/devices/kids-tablet/undo"' not in html and "The profile's normal rules apply." in html
    audited = len(env.audit())
    # A second tap (another tab): says nothing changed, writes nothing.
    page = admin.post("/devices/kids-tablet/undo", data={"csrf_token": token, "kind": "bonus", "scope": "device"},
                      follow_redirects=True).get_data(as_text=True)
    assert "had no bonus time: nothing changed" in page and len(env.audit()) == audited
    # Without the form's CSRF token nothing is undone.
    admin.post("/devices/kids-tablet/pause", data={"csrf_token": token, "minutes": "30"})
    assert admin.post("/devices/kids-tablet/undo", data={"kind": "pause", "scope": "device"}).status_code in (400, 403)
    assert env.query("SELECT count(*) FROM overrides WHERE ended IS NULL") == [(1,)]


def test_an_always_allowed_site_is_undone_from_the_device_page_and_leaves_the_rest_of_the_config(env, admin):
    html = admin.get("/devices/kids-tablet").get_data(as_text=True)
    card = html[html.index("Always allowed for kids"):]
    assert "khanacademy.org" in card and "(every device of kids)" in card
    before = env.config_text()
    page = admin.post("/devices/kids-tablet/always-allowed/remove", data={"csrf_token": page_csrf(admin),
                      "what": "khanacademy.org"}, follow_redirects=True).get_data(as_text=True)
    assert "khanacademy.org is no longer always allowed for kids" in page
    assert "Always allowed for kids" not in page
    after = env.config_text()
    assert "khanacademy" not in after
    assert after.replace("allow: []", "allow: [khanacademy.org]") == before     # nothing else rewritten
    audited = len(env.audit())
    page = admin.post("/devices/kids-tablet/always-allowed/remove", data={"csrf_token": page_csrf(admin),
                      "what": "khanacademy.org"}, follow_redirects=True).get_data(as_text=True)
    assert "nothing changed" in page and len(env.audit()) == audited


@pytest.mark.parametrize("minutes", ["abc", "0", "-5", "9999999"])
def test_device_actions_refuse_bad_minutes(env, admin, minutes):
    token = page_csrf(admin)
    response = admin.post("/devices/kids-tablet/pause", data={"csrf_token": token, "minutes": minutes},
                          follow_redirects=True)
    assert 'class="flash error"' in response.get_data(as_text=True)
    assert env.query("SELECT count(*) FROM overrides") == [(0,)]


# ---------------------------------------------------------------- log


def test_a_text_search_with_few_matches_offers_to_search_further_back(env, admin, monkeypatch):
    from filterd.store import log_reader
    monkeypatch.setattr(log_reader, "TEXT_SCAN_ROWS", 3)
    insert_query(env, "old-poker.example")
    for n in range(5):
        insert_query(env, f"news{n}.example", action="allow", category=None)
    html = admin.get("/log?q=poker").get_data(as_text=True)
    assert "old-poker.example" not in html and "Searched back to" in html and "Search further back" in html
    further = re.search(r'href="(/log\?[^"]*before=\d+[^"]*)"', html).group(1).replace("&amp;", "&")
    assert "old-poker.example" in admin.get(further).get_data(as_text=True)


def test_log_filters_and_one_tap_rules(env, admin):
    insert_query(env, "pokerstars.com", category="gambling")
    insert_query(env, "khanacademy.org", action="allow", category=None)
    body = admin.get("/log?decision=blocked").get_data(as_text=True)
    assert "pokerstars.com" in body and "khanacademy.org" not in body
    body = admin.get("/log?q=khan").get_data(as_text=True)
    assert "khanacademy.org" in body and "pokerstars.com" not in body
    why = admin.get("/log/why?name=pokerstars.com&device=kids-tablet")
    assert why.status_code == 200
    assert admin.get("/log/why?name=not%20a%20name").status_code == 400
    token = page_csrf(admin)
    response = admin.post("/log/rule", data={"csrf_token": token, "name": "pokerstars.com", "action": "allow",
                                             "profile": "kids"})
    assert response.status_code == 302
    config = configfile.validate_text(env.config_text(), env.config_path)
    assert "pokerstars.com" in config.rules.profiles["kids"].allow
    before = env.config_text()
    for data in ({"name": "not a domain", "action": "block", "profile": "kids"},
                 {"name": "example.com", "action": "block", "profile": "nobody"}):
        body = admin.post("/log/rule", data={"csrf_token": token, **data}, follow_redirects=True).get_data(as_text=True)
        assert 'class="flash error"' in body
    assert env.config_text() == before


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("current, new, confirm, message", [
    (PASSWORD, "short", "short", "at least 10"),
    (PASSWORD, "long enough one", "long enough two", "differ"),
    ("not the password", "long enough one", "long enough one", "current password is wrong"),
])
def test_password_change_errors_show_beside_the_form_and_change_nothing(env, admin, current, new, confirm, message):
    stored = env.query("SELECT password_hash FROM admin")
    token = page_csrf(admin)
    response = admin.post("/settings", data={"csrf_token": token, "action": "password", "current": current,
                                             "new": new, "confirm": confirm})
    assert response.status_code == 200
    assert message in section(response.get_data(as_text=True), "Password")
    assert env.query("SELECT password_hash FROM admin") == stored
    assert admin.get("/settings").status_code == 200      # still logged in


def test_api_token_needs_a_name(env, admin):
    token = page_csrf(admin)
    response = admin.post("/settings", data={"csrf_token": token, "action": "token", "name": "  "})
    assert "Give the token a name" in section(response.get_data(as_text=True), "API tokens")
    assert env.query("SELECT count(*) FROM api_tokens") == [(0,)]


def test_revoking_an_unknown_token_says_so(env, admin):
    token = page_csrf(admin)
    response = admin.post("/settings", data={"csrf_token": token, "action": "revoke", "token_id": "999"},
                          follow_redirects=True)
    assert 'class="flash error"' in response.get_data(as_text=True)


def test_lists_update_starts_in_the_background(env, admin, monkeypatch):
    import subprocess
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: started.append(args))
    response = admin.post("/lists/update", data={"csrf_token": page_csrf(admin)})
    assert response.status_code == 302
    assert started and started[0][-4:-1] == ["lists", "update", "--config"]
    assert ("web UI", "lists update", "started") in env.audit()


# ---------------------------------------------------------------- the wizard


def test_wizard_creates_a_childs_profile_and_devices(env, admin):
    seen_client(env, "192.168.1.70")                      # calls itself emma-ipad
    seen_client(env, "192.168.1.71", hostname=None)       # says nothing of itself
    page = admin.get("/setup/wizard").get_data(as_text=True)
    response = admin.post("/setup/wizard", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                                 "timezone": "Europe/Paris", "child": "emma", "preset": "young_child",
                                                 "device": ["192.168.1.70", "192.168.1.71"], "default_profile": "kids"})
    assert response.status_code == 302 and location_path(response) == "/"
    config = configfile.validate_text(env.config_text(), env.config_path)
    assert config.timezone == "Europe/Paris" and config.rules.default_profile == "kids"
    assert config.rules.profiles["emma"].preset == "young_child"
    devices = [(d.name, d.ip, d.profile) for d in config.rules.devices]
    assert ("emma-ipad", "192.168.1.70", "emma") in devices and ("emma-device-2", "192.168.1.71", "emma") in devices


@pytest.mark.parametrize("choice, preset", [("same", "young_child"), ("level:teen", "teen")])
def test_wizard_filters_devices_nobody_has_named_by_default(env, admin, choice, preset):
    """The recommended choice: unnamed devices filtered like the youngest child (here the
    wizard's new young_child, younger than the existing kids profile's child preset)."""
    page = admin.get("/setup/wizard").get_data(as_text=True)
    assert 'value="same" checked' in page
    admin.post("/setup/wizard", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                      "timezone": "UTC", "child": "Leo", "preset": "young_child",
                                      "default_profile": choice})
    config = configfile.validate_text(env.config_text(), env.config_path)
    assert config.rules.default_profile == "new-devices"
    assert config.rules.profiles["new-devices"].preset == preset
    assert "adult" in config.rules.profiles["new-devices"].block_categories


def test_wizard_never_replaces_an_existing_profile(env, admin):
    before = env.config_text()
    page = admin.get("/setup/wizard").get_data(as_text=True)
    response = admin.post("/setup/wizard", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                                 "timezone": "UTC", "child": "kids", "preset": "young_child"})
    assert response.status_code == 200
    assert "exists already" in response.get_data(as_text=True)
    assert env.config_text() == before


def test_wizard_refuses_an_unknown_time_zone(env, admin):
    before = env.config_text()
    page = admin.get("/setup/wizard").get_data(as_text=True)
    response = admin.post("/setup/wizard", data={"csrf_token": page_csrf(admin), "version": version_from(page),
                                                 "timezone": "Mars/Olympus", "child": ""})
    assert 'id="timezone-error"' in response.get_data(as_text=True)
    assert env.config_text() == before


def test_logged_out_parent_is_sent_to_login_and_back(env):
    client = env.client()
    response = client.get("/devices/kids-tablet")
    assert location_path(response) == "/login"
    response = login(client, next_path=response.headers["Location"].split("next=", 1)[1])
    assert response.headers["Location"].endswith("/devices/kids-tablet")


def test_the_inline_code_check_finds_what_it_looks_for():
    assert inline_code('<p style="color: red">') == ["style= on <p>"]
    assert inline_code("<script>alert(1)</script>") == ["inline <script>", "code inside <script>"]
    assert inline_code('<img src=x onerror="alert(1)">') == ["onerror= on <img>"]
    assert inline_code('<a href="javascript:alert(1)">') == ["javascript: URL on <a>"]
    assert inline_code('<script src="/static/app.js"></script><p title="&#34; onerror=x">') == []


def test_device_names_are_escaped(env, admin):
    configfile.edit(env.config_path, None, lambda doc: doc["devices"].append(
        {"name": "Emma's iPad", "ip": "192.168.1.71", "profile": "kids"}))
    token = page_csrf(admin)
    admin.post("/devices/Emma's iPad/pause", data={"csrf_token": token})
    for path in ("/devices", "/devices/Emma's%20iPad", "/profiles", "/log", "/settings"):
        body = admin.get(path).get_data(as_text=True)
        assert "Emma's iPad" not in body, path
    assert "Emma&#39;s iPad" in admin.get("/devices").get_data(as_text=True)


# ---------------------------------------------------------------- settings: the filter's own settings


def filter_form(admin, **changes) -> dict:
    page = admin.get("/settings").get_data(as_text=True)
    form = {"csrf_token": page_csrf(admin), "action": "filter", "version": version_from(page),
            "upstreams": "udp://9.9.9.9\ntls://dns.quad9.net", "block_mode": "null", "timezone": "Europe/Paris",
            "log_mode": "anonymous", "retention_days": "14", "hostnames": "filter.home\nfiltre.maison"}
    form.update(changes)
    return form


def test_settings_change_upstreams_block_mode_time_zone_log_and_host_names(env, admin):
    response = admin.post("/settings", data=filter_form(admin))
    assert response.status_code == 302
    config = env.new_app().extensions["filterd"].config()
    assert [u.url for u in config.dns.upstreams] == ["udp://9.9.9.9", "tls://dns.quad9.net"]
    assert config.dns.block_mode == "null"
    assert config.timezone == "Europe/Paris"
    assert (config.log.mode, config.log.retention_days) == ("anonymous", 14)
    assert config.rules.web.hostnames == ("filter.home", "filtre.maison")
    trail = [detail for _, action, detail in env.audit() if action == "config"]
    assert trail[-1].startswith("filter settings changed: timezone: UTC → Europe/Paris; ")
    assert "log.mode: full → anonymous" in trail[-1]


@pytest.mark.parametrize("field, value, says", [
    ("upstreams", "ftp://9.9.9.9", "udp://"),
    ("timezone", "Mars/Olympus", "time zone"),
    ("retention_days", "a month", "whole number"),
    ("hostnames", "not a host!", "host name"),
], ids=["upstream", "timezone", "retention", "hostname"])
def test_a_bad_filter_setting_shows_beside_its_field_and_writes_nothing(env, admin, field, value, says):
    before = env.config_text()
    response = admin.post("/settings", data=filter_form(admin, **{field: value}))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    error = re.search(rf'<p class="error" id="{field.split("_")[0]}[a-z_]*-error"[^>]*>([^<]*)</p>', page)
    assert error and says in error.group(1)
    assert value.split("\n")[0] in page      # what the parent typed is kept in the form
    assert env.config_text() == before


def test_filter_settings_based_on_an_old_version_are_refused(env, admin):
    form = filter_form(admin)
    env.config_path.write_text(env.config_text() + "\n# edited by hand meanwhile\n")
    response = admin.post("/settings", data=form)
    assert response.status_code == 200
    assert "changed meanwhile" in response.get_data(as_text=True)
    assert "Europe/Paris" not in env.config_text()


def test_pause_on_the_devices_list_asks_for_how_long_an_hour_by_default(env, admin):
    page = admin.get("/devices").get_data(as_text=True)
    assert '<option value="60" selected>1 hour</option>' in page
    response = admin.post("/devices/kids-tablet/pause", data={"csrf_token": page_csrf(admin), "minutes": "60",
                                                               "back": "/devices"}, follow_redirects=True)
    body = response.get_data(as_text=True)
    assert re.search(r"kids-tablet paused for 60 min \(until \w{3} \d\d:\d\d\)", body), body[:2000]
    (until,) = env.query("SELECT until - created FROM overrides WHERE kind = 'pause' AND ended IS NULL")[0]
    assert round(until) == 3600


def test_a_new_device_card_says_when_it_came_and_what_it_asked_for_first(env, admin):
    """A parent tells a child's new tablet from the printer by what it asked for first."""
    seen_client(env, "192.168.1.74", hostname=None)
    now = time.time()
    for i, name in enumerate(["time.apple.com", "gateway.icloud.com", "www.roblox.com", "api.roblox.com",
                              "<img src=x onerror=alert(1)>.example"]):
        insert_query(env, name, device=None, client="192.168.1.74", action="allow", category=None, ts=now + i)
    insert_query(env, "other-device.example", device=None, client="192.168.1.99", action="allow", category=None, ts=now)
    body = admin.get("/devices").get_data(as_text=True)
    card = body[body.index("New device at 192.168.1.74"):]
    card = card[:card.index("</li>")]
    assert "First seen" in card
    assert "first asked for apple.com, icloud.com, roblox.com, " in card
    assert "other-device" not in card and "<img" not in card


def test_a_new_device_card_names_its_maker_from_the_ieee_registry(env, admin):
    """Debian's ieee-data (installed by make test, recommended by the package): a Nintendo
    Switch's address says Nintendo; a private (random) address names no maker."""
    seen_client(env, "192.168.1.75", hostname=None, mac="00:09:bf:12:34:56")
    seen_client(env, "192.168.1.76", hostname=None, mac="3a:09:bf:12:34:56")
    body = admin.get("/devices").get_data(as_text=True)
    card = body[body.index("New device at 192.168.1.75"):]
    assert "Made by Nintendo Co., Ltd." in card[:card.index("</li>")]
    other = body[body.index("New device at 192.168.1.76"):]
    assert "Made by" not in other[:other.index("</li>")]


def test_a_damaged_schedule_count_is_refused_not_a_server_error(env, admin):
    """The week editor's hidden row count, as Wapiti sent it (SQL payloads) or as a huge number:
    400 with a message, never a 500 nor a loop over a billion rows; the profile is unchanged."""
    before = env.config_path.read_text()
    for count in ("' or sleep(11)#1", "1e3", "-1", "999999999", "²"):
        form = profile_form(admin)
        form["schedule_count"] = count
        response = admin.post("/profiles/kids", data=form)
        assert response.status_code == 400, (count, response.status_code)
        assert "Reload the page" in response.get_data(as_text=True)
    assert env.config_path.read_text() == before


# ---------------------------------------------------------------- log: stored reasons, filters, "why?" then


def _logged(env, name: str, ts: float, rule: str, reason: str, action: str = "block",
            category: str | None = None, device: str = "kids-tablet") -> int:
    env.execute("INSERT INTO queries (ts, device, client, name, qtype, action, rule, reason, category, rcode,"
                " latency_ms, profile) VALUES (?, ?, '192.168.1.23', ?, 1, ?, ?, ?, ?, 0, 1.0, 'kids')",
                (ts, device, name, action, rule, reason, category))
    return env.query("SELECT max(id) FROM queries")[0][0]


def _last_monday_at(hour: int, tz_name: str) -> float:
    import datetime
    from zoneinfo import ZoneInfo

    now = datetime.datetime.now(ZoneInfo(tz_name))
    day = now.date() - datetime.timedelta(days=(now.weekday() - 0) % 7 or 7)
    return datetime.datetime.combine(day, datetime.time(hour), tzinfo=ZoneInfo(tz_name)).timestamp()


def test_log_rows_show_their_stored_reason_and_filter_by_reason_and_last_night(env, admin):
    from zoneinfo import ZoneInfo

    from webui.log import last_night

    tz = env.app.extensions["filterd"].config().timezone
    start, end = last_night(time.time(), ZoneInfo(tz))
    night_at = start + min(3600, (time.time() - start) / 2)      # before now, even at 20:30
    day_at = end + 60 if end + 60 < time.time() else start - 3600
    rows = [(night_at, "night-game.test", "schedule", "bedtime: the internet is off until 07:00", None),
            (day_at, "day-casino.test", "category", "category Gambling (list ut1-gambling)", "gambling")]
    for at, name, rule, reason, category in sorted(rows):      # the log is appended in time order
        _logged(env, name, at, rule, reason, category=category)
    html = admin.get("/log?since=24h").get_data(as_text=True)
    assert "bedtime: the internet is off until 07:00" in html        # without a tap
    night = admin.get("/log?since=night&reason=schedule").get_data(as_text=True)
    assert "night-game.test" in night and "day-casino.test" not in night
    by_reason = admin.get("/log?since=7d&reason=category").get_data(as_text=True)
    assert "day-casino.test" in by_reason and "night-game.test" not in by_reason


def test_why_of_a_logged_block_explains_it_as_it_was_not_as_it_is_after_bonus_time(env, admin):
    tz = env.app.extensions["filterd"].config().timezone
    at = _last_monday_at(22, tz)                 # the kids' bedtime runs Sun–Thu 21:00–07:00
    row = _logged(env, "cartoons.test", at, "schedule", "bedtime: the internet is off until 07:00")
    env.execute("INSERT INTO overrides (kind, subject_kind, subject, value, created, until, source)"
                " VALUES ('bonus', 'device', 'kids-tablet', NULL, ?, ?, 'test')", (at + 60, time.time() + 3600))
    html = admin.get(f"/log/why?name=cartoons.test&device=kids-tablet&qtype=1&row={row}").get_data(as_text=True)
    then, now = html.split("Right now", 1)
    assert "Blocked" in then and "bedtime: the internet is off until 07:00" in then
    assert "Outside bedtime: allowed" in then
    assert "have changed since" not in then          # decided again for then: the same block
    assert "Allowed" in now                          # bonus time lifts bedtime now, whatever the hour


# ---------------------------------------------------------------- profile edits relative to the preset


def test_saving_a_preset_profile_stores_only_the_difference_and_keeps_the_rest_byte_for_byte(env, admin):
    before = env.config_text()
    form = profile_form(admin)
    form["category"] = [c for c in form["category"] if c != "social_networks"] + ["games"]
    form["service"] = [s for s in form["service"] if s != "reddit"]
    assert admin.post("/profiles/kids", data=form).status_code == 302
    text = env.config_text()
    kids = text[text.index("  kids:"):text.index("  adults:")]
    assert "preset: child" in kids
    import yaml
    written = yaml.safe_load(text)["profiles"]["kids"]
    assert (written["block_categories_add"], written["block_categories_remove"], written["block_services_remove"]) == \
        (["games"], ["social_networks"], ["reddit"])
    # Nothing of the preset copied in: it keeps following the preset.
    assert "\n    block_categories:" not in kids and "safesearch" not in kids and "youtube" not in kids
    # Untouched keys and other profiles kept as they were written (compact one-line YAML too).
    assert "allow: [khanacademy.org]" in kids
    assert '{name: bedtime, days: [sun, mon, tue, wed, thu], start: "21:00", end: "07:00", block: all}' in kids
    assert text[text.index("  adults:"):] == before[before.index("  adults:"):]
    profile = env.app.extensions["filterd"].config().rules.profiles["kids"]
    assert "games" in profile.block_categories and "social_networks" not in profile.block_categories
    assert "reddit" not in profile.block_services and "tiktok" in profile.block_services
    # The page says which toggles differ from the preset.
    page = admin.get("/profiles/kids").get_data(as_text=True)
    assert "Changed from the child preset" in page and "Games" in page


def test_turning_a_toggle_back_to_the_preset_removes_the_difference(env, admin):
    form = profile_form(admin)
    form["category"] = form["category"] + ["games"]
    admin.post("/profiles/kids", data=form)
    assert "block_categories_add" in env.config_text()
    form = profile_form(admin)
    form["category"] = [c for c in form["category"] if c != "games"]
    admin.post("/profiles/kids", data=form)
    text = env.config_text()
    assert "block_categories_add" not in text and "block_categories_remove" not in text


# ---------------------------------------------------------------- allow from the log, asked first


def test_allow_from_the_log_asks_whom_how_long_and_bedtime_then_offers_undo(env, admin):
    row = _logged(env, "www.chess.test", time.time() - 60, "category", "category Games (list ut1-games)",
                  category="games")
    html = admin.get("/log?since=1h").get_data(as_text=True)
    assert f'href="/log/allow?row={row}"' in html.replace("&amp;", "&")
    dialog = admin.get(f"/log/allow?row={row}").get_data(as_text=True)
    for words in ("Allow chess.test?", "This device (kids-tablet)", "Every device of kids", "For 1 hour (until ",
                  "Today (until ", "Until undone", "Bedtime and other schedules still apply"):
        assert words in dialog, words
    assert env.query("SELECT count(*) FROM overrides") == [(0,)]          # asking wrote nothing
    done = admin.post("/log/allow", data={"csrf_token": page_csrf(admin), "row": row, "who": "device",
                                          "for": "60", "keep_schedules": "on"}).get_data(as_text=True)
    assert "chess.test allowed" in done and "bedtime and other schedules still apply" in done and ">Undo<" in done
    assert env.query("SELECT kind, subject_kind, subject, value FROM overrides") == \
        [("allow_day", "device", "kids-tablet", "chess.test")]
    assert "chess.test" not in env.config_text()                          # the config is not touched
    undone = admin.post("/log/allow/undo", data={"csrf_token": page_csrf(admin), "device": "kids-tablet",
                                                 "scope": "device", "what": "chess.test"}, follow_redirects=True)
    assert "Undone: 1 allow ended for kids-tablet" in undone.get_data(as_text=True)
    assert env.query("SELECT ended IS NOT NULL FROM overrides") == [(1,)]


def test_allow_from_the_log_for_the_profile_always_and_at_bedtime_too(env, admin):
    row = _logged(env, "chess.test", time.time() - 60, "category", "category Games", category="games")
    done = admin.post("/log/allow", data={"csrf_token": page_csrf(admin), "row": row, "who": "profile",
                                          "for": "always"}).get_data(as_text=True)
    assert "every device of kids" in done and "until you undo it" in done and "at bedtime too" in done
    assert env.query("SELECT kind, subject_kind, subject, value, until FROM overrides") == \
        [("allow", "profile", "kids", "chess.test", None)]
    # Without the form's token nothing is allowed.
    assert admin.post("/log/allow", data={"row": row, "who": "device", "for": "60"}).status_code in (400, 403)


def test_a_device_just_named_loses_its_unnamed_row_at_once_in_the_api_and_the_page(env, admin):
    seen_client(env)
    admin.environ_base["HTTP_X_CSRF_TOKEN"] = page_csrf(admin)
    before = admin.get("/api/devices").get_json()
    assert [(r["name"], r["ip"]) for r in before if r["ip"] == "192.168.1.70"] == [(None, "192.168.1.70")]
    assign(admin, name="emma-ipad", profile="kids", ip="192.168.1.70")
    after = [(r["name"], r["ip"], r["first_seen"] is not None) for r in admin.get("/api/devices").get_json()
             if r["ip"] == "192.168.1.70"]
    assert after == [("emma-ipad", "192.168.1.70", True)]       # one row, the named one, with its history
