"""Issue #15, the child on the Wi-Fi: each finding attacked over real HTTP against the real web
UI (waitress, as `filterd-webui` serves it; tests/webui_live.py), from loopback addresses that
stand for the devices of the house (127.0.0.2 the child's tablet, 127.0.0.3 a parent's phone).
"""
from __future__ import annotations

import os
import re
import stat
from urllib.parse import urlsplit

import pytest
from webui_fixtures import PASSWORD, Env, env, fresh_env  # noqa: F401
from webui_live import LiveUI

from webui import auth

CHILD, PARENT = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def live(env):
    server = LiveUI(env.app)
    yield server
    server.close()


@pytest.fixture
def live_fresh(fresh_env):
    server = LiveUI(fresh_env.app)
    yield server
    server.close()


def setup_form(client, code: str | None, password: str = PASSWORD) -> dict:
    form = {"csrf_token": client.csrf("/setup"), "password": password, "confirm": password}
    if code is not None:
        form["setup_code"] = code
    return form


# ---------------------------------------------------------------- 1. a fresh install is claimable


def test_a_fresh_install_cannot_be_claimed_without_the_setup_code(fresh_env, live_fresh):
    child = live_fresh.client(CHILD)
    for code in (None, "", "AAAA-BBBB-CCCC"):
        reply = child.post("/setup", setup_form(child, code, "child's own password"))
        assert reply.status == 403, (code, reply.status)
        assert "not the setup code" in reply.text
    assert fresh_env.query("SELECT count(*) FROM admin") == [(0,)]
    # The installer's code, from the file only root and the web UI can read.
    code_file = fresh_env.data_dir / "setup-code"
    assert stat.S_IMODE(os.stat(code_file).st_mode) == 0o600
    parent = live_fresh.client(PARENT)
    reply = parent.post("/setup", setup_form(parent, fresh_env.setup_code().lower().replace("-", " ")))
    assert reply.status == 302 and reply.location.endswith("/setup/wizard")
    assert fresh_env.query("SELECT count(*) FROM admin") == [(1,)]
    assert not code_file.exists()


def test_wrong_setup_codes_are_throttled_like_passwords_from_every_address(fresh_env, live_fresh):
    for peer in ("127.0.0.1", CHILD):     # loopback is no exception
        client = live_fresh.client(peer)
        for _ in range(auth.FREE_ATTEMPTS - 1):
            assert client.post("/setup", setup_form(client, "WRONG-CODE-0000")).status == 403
        reply = client.post("/setup", setup_form(client, "WRONG-CODE-0001"))
        assert reply.status == 429 and int(reply.header("Retry-After")) > 0
        # The right code does not get through a running delay either.
        reply = client.post("/setup", setup_form(client, fresh_env.setup_code()))
        assert reply.status == 429
    assert fresh_env.query("SELECT count(*) FROM admin") == [(0,)]
    failures = fresh_env.query("SELECT peer, user_agent FROM login_failures")
    assert {peer for peer, _ in failures} == {"127.0.0.1", CHILD}
    assert all("setup code" in agent for _, agent in failures)


def test_the_web_ui_prints_and_logs_the_setup_code_until_the_password_is_set(fresh_env, monkeypatch, capsys, caplog):
    import waitress

    from webui import serve
    assert serve.main(["--config", str(fresh_env.config_path), "--setup-code"]) == 0
    code = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}", code)
    assert fresh_env.setup_code() == code
    class NotServing:
        def run(self):
            return None
    monkeypatch.setattr(waitress, "create_server", lambda app, **options: NotServing())
    monkeypatch.setattr("webui.certificate.start_https", lambda app, config: None)
    monkeypatch.setattr("webui.notifications.start_worker", lambda app, config: None)
    with caplog.at_level("INFO", logger="filterd.webui"):
        assert serve.main(["--config", str(fresh_env.config_path)]) == 0
    assert code in caplog.text                       # journalctl -u filterd-webui
    fresh_env.set_password()
    assert serve.main(["--config", str(fresh_env.config_path), "--setup-code"]) == 0
    assert capsys.readouterr().out == ""
    assert not (fresh_env.data_dir / "setup-code").exists()


# ---------------------------------------------------------------- 2. one child locks both parents out


def test_a_childs_wrong_passwords_do_not_lock_the_parent_out(env, live):
    child = live.client(CHILD)
    for _ in range(auth.FREE_ATTEMPTS - 1):
        assert child.login("is it fluffy123").status == 401
    assert child.login("is it fluffy1234").status == 429
    assert child.login(PASSWORD).status == 429         # the guesser waits, even when right
    parent = live.client(PARENT)
    reply = parent.login(PASSWORD)
    assert reply.status == 302, reply.status
    assert parent.get("/settings").status == 200


def test_a_logged_in_password_change_is_not_stopped_by_a_childs_guessing(env, live):
    child = live.client(CHILD)
    for _ in range(auth.FREE_ATTEMPTS + 1):
        child.login("guess guess guess")
    parent = live.client(PARENT)
    assert parent.login(PASSWORD).status == 302
    new = "the new family password"
    reply = parent.post("/settings", {"csrf_token": parent.csrf(), "action": "password", "current": PASSWORD,
                                      "new": new, "confirm": new})
    assert reply.status == 302 and reply.location.endswith("/login")
    assert live.client(PARENT).login(new).status == 302


def test_the_current_password_on_settings_has_its_own_limit_per_session(env, live):
    tablet = live.client(CHILD)        # a parent's session left open on the child's tablet
    assert tablet.login(PASSWORD).status == 302
    form = {"action": "password", "new": "a brand new password", "confirm": "a brand new password"}
    for _ in range(auth.FREE_ATTEMPTS):
        reply = tablet.post("/settings", {**form, "csrf_token": tablet.csrf(), "current": "a wrong guess"})
        assert "current password is wrong" in reply.text
    reply = tablet.post("/settings", {**form, "csrf_token": tablet.csrf(), "current": PASSWORD})
    assert "Too many wrong passwords" in reply.text
    assert live.client(PARENT).login(PASSWORD).status == 302     # the parent's login is untouched
    assert live.client(CHILD).login(PASSWORD).status == 302      # and so is the tablet's address


def test_address_hopping_hits_the_house_wide_cap_but_a_new_address_is_heard(env, live, monkeypatch):
    monkeypatch.setattr(auth, "HOUSE_MAX_FAILURES", 6)
    hoppers = [live.client(f"127.0.0.{n}") for n in range(10, 13)]
    for hopper in hoppers:
        for _ in range(2):
            assert hopper.login("still guessing").status == 401
    reply = hoppers[0].login("one more guess")        # the house has seen 6 wrong guesses: wait
    assert reply.status == 429 and int(reply.header("Retry-After")) > 0
    assert live.client(PARENT).login(PASSWORD).status == 302     # an address that never failed


def test_the_parent_sees_failed_attempts_and_where_from(env, live):
    child = live.client(CHILD)
    child.login("wrong guess one")
    child.login("wrong guess two")
    parent = live.client(PARENT)
    assert parent.login(PASSWORD).status == 302
    dashboard = parent.get("/").text
    assert "2 wrong passwords or setup codes" in dashboard and CHILD in dashboard
    assert CHILD in parent.get("/settings").text


# ---------------------------------------------------------------- 3. a mistyped allow entry switches filtering off


SUFFIXES = ("com", "co.uk", "github.io", "blogspot.com")


@pytest.fixture
def parent(env, live):
    client = live.client(PARENT)
    assert client.login(PASSWORD).status == 302
    return client


def put_profile(parent, body: dict):
    return parent.request("PUT", "/api/profiles/kids", json=body, headers={"X-CSRF-Token": parent.csrf()})


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_the_api_refuses_a_public_suffix_in_allow_or_block(env, parent, suffix):
    before = env.config_text()
    for key in ("allow", "block"):
        reply = put_profile(parent, {key: ["khanacademy.org", suffix]})
        assert reply.status == 400, (key, suffix, reply.status)
        assert "public suffix" in reply.json()["error"] and suffix in reply.json()["error"]
    assert env.config_text() == before
    assert put_profile(parent, {"allow": ["khanacademy.org", f"example.{suffix}"]}).status == 200


def test_the_profile_form_refuses_a_public_suffix(env, parent):
    page = parent.get("/profiles/kids").text
    version = re.search(r'name="version" value="([0-9a-f]+)"', page).group(1)
    before = env.config_text()
    reply = parent.post("/profiles/kids", {"csrf_token": parent.csrf(), "version": version,
                                           "allow": "khanacademy.org\nco.uk", "block": ""})
    assert reply.status == 200 and "public suffix" in reply.text and "co.uk" in reply.text
    assert env.config_text() == before


def test_temporary_allows_refuse_a_public_suffix_from_forms_and_the_api(env, parent):
    reply = parent.post("/devices/kids-tablet/allow", {"csrf_token": parent.csrf(), "what": "co.uk", "minutes": "30"})
    assert reply.status in (302, 303)
    assert "public suffix" in parent.get(urlsplit(reply.location).path).text
    reply = parent.post("/api/devices/kids-tablet/allow", json={"domain": "github.io", "minutes": 30},
                        headers={"X-CSRF-Token": parent.csrf()})
    assert reply.status == 400 and "public suffix" in reply.json()["error"]
    assert env.query("SELECT count(*) FROM overrides") == [(0,)]


def insert_request(env, domain: str, unblocks: str, device: str = "kids-tablet", client: str = "192.168.1.23") -> int:
    import time
    now = time.time()
    env.execute("INSERT INTO access_requests (device, domain, reason, rule, unblocks, client, created, updated)"
                " VALUES (?, ?, 'blocked', 'category', ?, ?, ?, ?)", (device, domain, unblocks, client, now, now))
    return env.query("SELECT max(id) FROM access_requests")[0][0]


@pytest.mark.parametrize("choice", [{"minutes": 60}, {}])
def test_approving_a_request_refuses_a_public_suffix(env, parent, choice):
    request_id = insert_request(env, "someone.github.io", "github.io")
    before = env.config_text()
    reply = parent.post(f"/api/requests/{request_id}/approve", json=choice, headers={"X-CSRF-Token": parent.csrf()})
    assert reply.status == 400 and "public suffix" in reply.json()["error"]
    assert env.config_text() == before
    assert env.query("SELECT count(*) FROM overrides") == [(0,)]
    assert env.query("SELECT status FROM access_requests") == [("pending",)]


def test_filterd_check_and_filterd_allow_refuse_a_public_suffix(env):
    import subprocess
    import sys
    run = lambda *args: subprocess.run([sys.executable, "-m", "filterd", *args, "--config", str(env.config_path)],  # noqa: E731
                                       capture_output=True, text=True, timeout=60)
    result = run("allow", "co.uk", "--device", "kids-tablet")
    assert result.returncode == 2 and "public suffix" in result.stderr
    assert env.query("SELECT count(*) FROM overrides") == [(0,)]
    env.config_path.write_text(env.config_text().replace("allow: [khanacademy.org]", "allow: [khanacademy.org, com]"))
    result = run("check")
    assert result.returncode != 0
    assert "profiles.kids.allow[1]" in result.stdout + result.stderr and "public suffix" in result.stdout + result.stderr


# ---------------------------------------------------------------- 8. open redirect from the block page

BLOCKED = "blocked.example"


def house_config(data_dir) -> str:
    """The fixtures' house, with the child's laptop at CHILD (loopback) in the kids profile; an
    unnamed device at any other address gets the default profile, adults. Both block BLOCKED."""
    from webui_fixtures import CONFIG_TEXT
    return CONFIG_TEXT.format(data_dir=data_dir).replace(
        "allow: [khanacademy.org]", f"allow: [khanacademy.org]\n    block: [{BLOCKED}]").replace(
        "  adults:\n    preset: adult", f"  adults:\n    preset: adult\n    block: [{BLOCKED}]").replace(
        "  - {name: dad-phone,", f"  - {{name: child-laptop, ip: {CHILD}, profile: kids}}\n  - {{name: dad-phone,")


@pytest.fixture
def house(tmp_path, request):
    extra = getattr(request, "param", "")
    environment = Env(tmp_path, house_config(tmp_path / "var") + extra)
    environment.set_password()
    server = LiveUI(environment.app)
    environment.live = server
    yield environment
    server.close()


def browser_target(location: str, base: str) -> str:
    """Where a browser goes: WHATWG URL parsing drops tabs and newlines, then resolves."""
    from urllib.parse import urljoin
    return urljoin(base, "".join(c for c in location if c not in "\t\n\r"))


def ask_form(page_text: str) -> dict:
    token = re.search(r'name="token" value="([^"]+)"', page_text)
    assert token, "no ask-for-access form on the block page"
    return {"token": token.group(1), "message": "for homework"}


@pytest.mark.parametrize("path", ["/%09/evil.example", "/%0a/evil.example", "//evil.example", "/%5C/evil.example",
                                  "/\\evil.example", "/./%09/evil.example?x=1"])
def test_asking_from_the_block_page_redirects_to_its_own_path_only(house, path):
    child = house.live.client(CHILD, host=BLOCKED)
    page = child.get("/")
    assert page.status == 403 and 'class="blockpage"' in page.text
    reply = child.post(path, ask_form(page.text))
    assert reply.status == 303, (path, reply.status, reply.text[:300])
    target = urlsplit(browser_target(reply.location, f"http://{BLOCKED}{path}"))
    assert target.hostname == BLOCKED and "evil" not in (target.netloc or ""), (path, reply.location)
    assert house.query("SELECT device, domain FROM access_requests") == [("child-laptop", BLOCKED)]


# ---------------------------------------------------------------- 7. an unnamed device's approval reaches named devices


def test_approving_an_unnamed_devices_request_says_exactly_who_gets_it(house):
    """The default profile (adults) answers for an unnamed device; dad-phone is a named device of
    that profile, so an approval reaches it too: the card, the flash and the API say so."""
    request_id = insert_request(house, "games.example", "games.example", device="", client="192.168.1.77")
    parent = house.live.client(PARENT)
    assert parent.login(PASSWORD).status == 302
    page = parent.get("/requests").text
    card = page[page.index(f'id="request-{request_id}"'):]
    card = card[:card.index("</li>")]
    assert "every unnamed device" in card and "dad-phone" in card and "profile adults" in card
    assert "child-laptop" not in card and "kids-tablet" not in card
    listed = parent.get("/api/requests", headers={}).json()
    assert listed[0]["applies_to"] == "adults" and listed[0]["applies_to_devices"] == ["dad-phone"]
    reply = parent.post(f"/requests/{request_id}/approve", {"csrf_token": parent.csrf(), "for": "60"})
    assert reply.status == 303
    flashed = parent.get("/requests").text
    assert "every unnamed device and dad-phone" in flashed


# ---------------------------------------------------------------- 6. flooding access requests hides real ones

NOTIFY = ("notify:\n  channels: {phone: {type: ntfy, url: 'https://ntfy.example/our-topic'}}\n"
          "  events: {access_request: [phone]}\n")


def ask(client, site: str):
    page = client.get("/", host=site)
    assert page.status == 403, (site, page.status)
    return client.post("/", ask_form(page.text), host=site)


def test_a_flood_from_unnamed_devices_is_capped_and_a_named_childs_request_still_comes_first(house, monkeypatch):
    from filterd.family import access_requests
    monkeypatch.setattr(access_requests, "MAX_PENDING_UNNAMED", 5)
    for n in range(5):
        assert ask(house.live.client(f"127.0.0.{50 + n}"), f"s{n}.{BLOCKED}").status == 303
    refused = ask(house.live.client("127.0.0.60"), f"s9.{BLOCKED}")
    assert refused.status == 403 and "Many requests are waiting" in refused.text
    assert house.query("SELECT count(*) FROM access_requests WHERE device = ''") == [(5,)]
    assert ask(house.live.client(CHILD), f"homework.{BLOCKED}").status == 303      # a named device: heard
    parent = house.live.client(PARENT)
    assert parent.login(PASSWORD).status == 302
    page = parent.get("/requests").text
    cards = re.findall(r'<span class="site">([^<]+)</span>', page)
    assert cards[0] == f"homework.{BLOCKED}" and len(cards) == 6


def test_requests_are_paged_on_the_page_and_in_the_api(house, monkeypatch):
    from webui import request_pages
    monkeypatch.setattr(request_pages, "PAGE_SIZE", 4)
    for n in range(6):
        insert_request(house, f"s{n}.{BLOCKED}", f"s{n}.{BLOCKED}", device="", client=f"192.168.1.{100 + n}")
    parent = house.live.client(PARENT)
    assert parent.login(PASSWORD).status == 302
    first = parent.get("/requests").text
    assert len(re.findall(r'class="card request"', first)) == 4 and "page 1 of 2" in first
    second = parent.get("/requests?page=2").text
    assert len(re.findall(r'class="card request"', second)) == 2
    assert set(re.findall(r'<span class="site">([^<]+)</span>', first)).isdisjoint(
        re.findall(r'<span class="site">([^<]+)</span>', second))
    reply = parent.get("/api/requests?limit=4")
    assert len(reply.json()) == 4 and reply.header("X-Total-Count") == "6"
    assert "offset=4" in reply.header("Link")
    assert len(parent.get("/api/requests?limit=4&offset=4").json()) == 2
    assert parent.get("/api/requests?limit=100000").status == 400


def test_a_new_address_does_not_reset_an_unnamed_devices_limit_when_its_mac_is_known(house, monkeypatch):
    from filterd.family import access_requests
    from webui import blockpage
    monkeypatch.setattr(access_requests, "MAX_PER_HOUR", 3)
    # The ARP table (what read_neighbours reads from /proc/net/arp) knows one MAC behind every address.
    monkeypatch.setattr(blockpage, "read_neighbours", lambda: {f"127.0.0.{n}": "02:11:22:33:44:55" for n in range(70, 80)})
    for n in range(3):
        assert ask(house.live.client(f"127.0.0.{70 + n}"), f"m{n}.{BLOCKED}").status == 303
    refused = ask(house.live.client("127.0.0.75"), f"m9.{BLOCKED}")
    assert refused.status == 403 and "a lot of sites this hour" in refused.text
    assert house.query("SELECT DISTINCT mac FROM access_requests") == [("02:11:22:33:44:55",)]


@pytest.mark.parametrize("house", [NOTIFY], indirect=True)
def test_notifications_of_new_requests_are_rate_limited_and_summed_up(house, monkeypatch):
    import json

    from filterd.family import access_requests
    from filterd.family.channels import compose
    monkeypatch.setattr(access_requests, "NOTIFY_BURST", 2)
    for n in range(6):
        assert ask(house.live.client(f"127.0.0.{50 + n}"), f"n{n}.{BLOCKED}").status == 303
    rows = house.query("SELECT payload, next_try, created FROM notifications ORDER BY id")
    assert len(rows) == 3, rows
    told = [json.loads(r[0]) for r in rows[:2]]
    assert [t["domain"] for t in told] == [f"n0.{BLOCKED}", f"n1.{BLOCKED}"]
    summary = json.loads(rows[2][0])
    assert summary["summary"] is True and summary["more"] == 4 and summary["domain"] == f"n5.{BLOCKED}"
    assert rows[2][1] > rows[0][2]           # sent when the window ends, not now
    from zoneinfo import ZoneInfo
    message = compose("access_request", summary, "http://filter.home/", ZoneInfo("UTC"))
    assert message.title == "4 more requests for access" and "requests" in message.link


# ---------------------------------------------------------------- headers


def test_every_kind_of_response_says_x_xss_protection_0(house):
    anonymous, parent = house.live.client(), house.live.client(PARENT)
    assert parent.login(PASSWORD).status == 302
    replies = [anonymous.get("/login"), anonymous.get("/settings"), anonymous.get("/api/status"),
               anonymous.get("/static/style.css"), anonymous.get("/", host="tiktok.com"),
               house.live.client(CHILD).get("/", host=BLOCKED), parent.get("/"), parent.get("/no/such/page")]
    for reply in replies:
        assert reply.header("X-XSS-Protection") == "0", reply.status


# ---------------------------------------------------------------- backups


SECRETS = ("webhook-secret-0123", "ntfy-token-4567", "smtp-password-89ab")
CHANNELS = f"""
notify:
  channels:
    # the family's phones
    phone: {{type: ntfy, url: "https://ntfy.example/kids", token: {SECRETS[1]}}}
    hook: {{type: webhook, url: "https://hooks.example/in", secret: {SECRETS[0]}}}
    mum: {{type: email, host: smtp.example, username: mum, password: {SECRETS[2]},
          from: filter@example.com, to: [mum@example.com]}}
  events:
    access_request: [phone, hook]
"""


@pytest.mark.parametrize("house", [CHANNELS], indirect=True)
def test_a_backup_can_be_downloaded_without_the_notification_secrets(house):
    import gzip
    import json
    parent = house.live.client(PARENT)
    assert parent.login(PASSWORD).status == 302
    assert "secrets=omit" in parent.get("/settings").text
    documents = {}
    for query in ("", "?secrets=omit"):
        reply = parent.get("/settings/backup" + query)
        assert reply.status == 200 and reply.header("Content-Type") == "application/gzip"
        documents[query] = json.loads(gzip.decompress(reply.data))["config"]
    assert all(secret in documents[""] for secret in SECRETS)
    assert not any(secret in documents["?secrets=omit"] for secret in SECRETS)
    assert "# the family's phones" in documents["?secrets=omit"] and "https://ntfy.example/kids" in documents["?secrets=omit"]


def test_filterd_backup_writes_a_file_only_its_owner_reads(env, tmp_path):
    import subprocess
    import sys
    target = tmp_path / "backup.json.gz"
    result = subprocess.run([sys.executable, "-m", "filterd", "backup", str(target), "--config", str(env.config_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


# ---------------------------------------------------------------- API tokens with scopes and expiry


def new_token(parent, scope: str, days: str = "") -> str:
    reply = parent.post("/settings", {"csrf_token": parent.csrf(), "action": "token", "name": f"t-{scope}",
                                      "scope": scope, "expires_days": days})
    match = re.search(r"fd_[A-Za-z0-9_-]{20,}", reply.text)
    assert match, reply.text[:500]
    return match.group(0)


def test_api_tokens_do_only_what_their_scope_allows(env, parent, live):
    tokens = {scope: new_token(parent, scope) for scope in ("read", "family", "admin")}
    script = live.client("127.0.0.9")          # home automation: no cookies, no CSRF token

    def call(scope, method, path, body=None):
        return script.request(method, path, json=body, headers={"Authorization": f"Bearer {tokens[scope]}"})
    expected = [   # (method, path, body, statuses for read, family, admin)
        ("GET", "/api/status", None, (200, 200, 200)),
        ("GET", "/api/requests", None, (200, 200, 200)),
        ("POST", "/api/devices/kids-tablet/pause", {"minutes": 5}, (403, 200, 200)),
        ("POST", "/api/devices/kids-tablet/resume", {}, (403, 200, 200)),
        ("PUT", "/api/profiles/kids", {"allow": ["khanacademy.org", "example.org"]}, (403, 403, 200)),
    ]
    for method, path, body, statuses in expected:
        for scope, status in zip(("read", "family", "admin"), statuses):
            reply = call(scope, method, path, body)
            assert reply.status == status, (scope, method, path, reply.status, reply.text[:200])
            if status == 403:
                assert "scope" in reply.json()["error"]
    page = parent.get("/settings").text
    assert "Read only" in page and "Full admin" in page and "last used" in page


def test_an_expired_api_token_is_refused(env, parent, live):
    token = new_token(parent, "admin", days="30")
    script = live.client("127.0.0.9")
    headers = {"Authorization": f"Bearer {token}"}
    assert script.get("/api/status", headers=headers).status == 200
    assert "expires" in parent.get("/settings").text
    env.execute("UPDATE api_tokens SET expires = ?", (1.0,))     # as if the 30 days had passed
    assert script.get("/api/status", headers=headers).status == 401
    assert "expired" in parent.get("/settings").text


# ---------------------------------------------------------------- the HTTPS block page's certificates


@pytest.fixture
def https_house(tmp_path):
    """The HTTPS block page of a `ca` config on 127.0.0.1 at a free port; the tablet at 127.0.0.2
    is blocked from blocked.example and its sub-domains."""
    from standin import free_port
    from test_webui_certificate import ca_config

    from filterd.rules.config import load_config
    from webui.certificate import start_https
    port = free_port()
    environment = Env(tmp_path, ca_config(tmp_path / "var", port, address="127.0.0.1"))
    environment.set_password()
    server = start_https(environment.app, load_config(environment.config_path))
    assert server is not None
    environment.https_port = port
    yield environment
    server.stop()


def minted_names(environment, name: str, source: str) -> list[str] | None:
    """The DNS names of the certificate served for SNI `name`, or None when it is not one the
    house CA vouches for that name with (the filter's own certificate)."""
    import ssl

    from cryptography import x509
    from test_webui_certificate import https_get, house_ca_pem
    try:
        _, _, peer = https_get(environment.https_port, name, house_ca_pem(environment), source=source)
    except ssl.SSLCertVerificationError:
        return None
    return peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_the_https_block_page_mints_only_for_names_the_device_is_blocked_from(https_house):
    assert minted_names(https_house, "bank.example", CHILD) is None             # open to the tablet
    assert minted_names(https_house, BLOCKED, CHILD) == [BLOCKED]
    assert minted_names(https_house, f"www.{BLOCKED}", CHILD) == [f"www.{BLOCKED}"]
    assert minted_names(https_house, BLOCKED, "127.0.0.1") is None              # open to the parent


def test_the_https_block_page_mints_a_few_new_names_a_minute_per_client(https_house, monkeypatch):
    from webui import certificate
    monkeypatch.setattr(certificate, "MINTS_PER_MINUTE", 3)
    names = [f"n{n}.{BLOCKED}" for n in range(5)]
    assert [minted_names(https_house, name, CHILD) for name in names] == [[n] for n in names[:3]] + [None, None]
    assert minted_names(https_house, names[0], CHILD) == [names[0]]             # made already: still served


# ---------------------------------------------------------------- admin pages over HTTPS


@pytest.fixture
def https_admin(https_house):
    """The house with the HTTPS server running, and the HTTP side served by waitress."""
    server = LiveUI(https_house.app)
    https_house.live = server
    yield https_house
    server.close()


def https_request(environment, name: str, path: str, source: str = PARENT):
    import http.client
    import ssl

    from test_webui_certificate import PinnedHTTPSConnection, house_ca_pem
    context = ssl.create_default_context(cadata=house_ca_pem(environment))
    connection = PinnedHTTPSConnection("127.0.0.1", environment.https_port, name, context, source)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def test_admin_pages_over_http_redirect_to_https_where_the_house_ca_serves(https_admin):
    parent = https_admin.live.client(PARENT, host="filter.home")
    reply = parent.get("/settings?tab=1")
    assert reply.status == 308 and reply.location == f"https://filter.home:{https_admin.https_port}/settings?tab=1"
    assert parent.get("/login").status == 308
    assert parent.get("/ca.crt").status == 200                  # fetched before the device trusts the CA
    # `make run`'s loopback stays plain HTTP; the block page on a foreign name stays HTTP.
    assert https_admin.live.client(PARENT).get("/login").status == 200
    blocked = https_admin.live.client(CHILD).get("/", host=BLOCKED)
    assert blocked.status == 403 and blocked.header("Strict-Transport-Security") is None


def test_admin_pages_over_https_send_hsts_and_secure_host_cookies_and_the_block_page_does_not(https_admin):
    login = https_request(https_admin, "filter.home", "/login")
    assert login.status == 200
    assert login.getheader("Strict-Transport-Security") == "max-age=31536000"
    cookie = login.getheader("Set-Cookie")
    assert cookie.startswith("__Host-filterd_login_csrf=") and "Secure" in cookie and "Domain" not in cookie
    blocked = https_request(https_admin, BLOCKED, "/", source=CHILD)
    assert blocked.status == 403 and blocked.getheader("Strict-Transport-Security") is None


def test_admin_https_off_keeps_admin_pages_on_http(tmp_path):
    from standin import free_port
    from test_webui_certificate import ca_config

    from filterd.rules.config import load_config
    from webui.certificate import start_https
    port = free_port()
    text = ca_config(tmp_path / "var", port, address="127.0.0.1").replace("https_port:", "admin_https: off\n  https_port:")
    environment = Env(tmp_path, text)
    environment.set_password()
    https = start_https(environment.app, load_config(environment.config_path))
    live = LiveUI(environment.app)
    try:
        assert live.client(PARENT, host="filter.home").get("/login").status == 200
    finally:
        live.close()
        https.stop()
