"""The web UI's gate (webui/security.py, webui/auth.py, webui/passwords.py) against children on the Wi-Fi.

Host names (DNS rebinding), first run, deny by default over every route and method, sessions,
CSRF, API tokens, login throttling, escaping, response headers and open redirects.
"""
from __future__ import annotations

import base64
import re
import time

import pytest
from webui_fixtures import (ADMIN_HOST, CONFIG_TEXT, PASSWORD, PEER, XSS_PAYLOADS, Env, admin, cookie_headers,  # noqa: F401
                            csrf_from, env, fresh_env, insert_query, is_block_page, last_cookie_value,
                            location_path, login, page_csrf)

from webui import passwords, security

SAMPLE_ARGS = {"name": "kids-tablet", "filename": "style.css", "request_id": 1, "profile": "kids", "channel": "phone",
               "limit": "youtube", "version_id": 1, "token": "kids-tablet.1.0", "what": "youtube"}
PROFILE_ENDPOINTS = {"pages.profile", "pages.profile_override", "api.profile", "api.put_profile"}
EXTRA_METHODS = ("HEAD", "OPTIONS")
FOREIGN_HOSTS = ("evil.example", "tiktok.com", "127.0.0.1.nip.io", "evil.example:8080", "filter.home.evil.example",
                 "127.0.0.1:evil", "")
REQUIRED_CSP = ("default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'",
                "form-action 'self'")


def every_route(app) -> list[tuple[str, str, str]]:
    """(endpoint, path, method) for every rule in the URL map, every method it takes plus HEAD and
    OPTIONS, and the path with and without a trailing slash."""
    out = []
    for rule in app.url_map.iter_rules():
        args = {key: ("kids" if rule.endpoint in PROFILE_ENDPOINTS else SAMPLE_ARGS[key]) for key in rule.arguments}
        path = rule.build(args)[1]
        variants = {path, path.rstrip("/") + "/"}
        for method in sorted(set(rule.methods) | set(EXTRA_METHODS)):
            for variant in sorted(variants):
                out.append((rule.endpoint, variant, method))
    return out


def request(client, method: str, path: str, **options):
    return client.open(path, method=method, **options)


def assert_refused(response, path: str, login_path: str = "/login") -> None:
    if path.startswith("/api/"):
        assert response.status_code == 401, (path, response.status_code)
        if response.data:
            assert response.get_json()["error"]
    else:
        assert response.status_code in (302, 303), (path, response.status_code)
        assert location_path(response) == login_path, (path, response.headers.get("Location"))


def assert_headers(response) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    directives = [d.strip() for d in csp.split(";")]
    for required in REQUIRED_CSP:
        assert required in directives, (required, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers.get("X-Frame-Options") == "DENY"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Referrer-Policy") == "same-origin"
    assert "Server" not in response.headers
    assert "X-Powered-By" not in response.headers


# ---------------------------------------------------------------- host names (DNS rebinding)


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_foreign_host_gets_the_block_page_on_every_route_and_method(env, host):
    client = env.logged_in()   # even with a valid session cookie sent along
    assert client.get_cookie("filterd_session") is not None
    routes = every_route(env.app) + [("-", "/no/such/page", "GET"), ("-", "/", "DELETE"), ("-", "/login", "PUT")]
    for endpoint, path, method in routes:
        if endpoint == "static":
            continue   # the block page's own stylesheet, on whatever name led here
        response = request(client, method, path, headers={"Host": host},
                           data={"csrf_token": "x", "password": PASSWORD, "action": "token", "name": "t"})
        assert response.status_code in (200, 403), (host, method, path, response.status_code)
        assert "Location" not in response.headers, (host, method, path)
        if method != "HEAD":
            assert is_block_page(response), (host, method, path)
        assert_headers(response)
    assert env.query("SELECT count(*) FROM api_tokens") == [(0,)]
    assert env.query("SELECT count(*) FROM overrides") == [(0,)]


def test_foreign_host_never_sees_setup_on_first_run(fresh_env):
    client = fresh_env.client()
    for path in ("/", "/setup", "/login", "/api/status"):
        response = client.get(path, headers={"Host": "evil.example"})
        assert is_block_page(response) and "Location" not in response.headers
    response = client.post("/setup", headers={"Host": "evil.example"},
                           data={"password": "attacker-password", "confirm": "attacker-password"})
    assert is_block_page(response)
    assert fresh_env.query("SELECT count(*) FROM admin") == [(0,)]


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "127.0.0.1", "127.0.0.1:9999", "filter.home", "FILTER.Home.",
                                  "filter.home:80", "192.168.1.2", "192.168.1.2:8080"])
def test_admin_host_names_reach_the_admin_ui_whatever_the_port(env, host):
    client = env.client()
    response = client.get("/settings", headers={"Host": host})
    assert response.status_code == 302 and location_path(response) == "/login"
    response = client.get("/login", headers={"Host": host})
    assert response.status_code == 200 and 'name="csrf-token"' in response.get_data(as_text=True)


def test_hostnames_and_addresses_come_from_the_config(tmp_path):
    text = CONFIG_TEXT.format(data_dir=tmp_path / "var").replace(
        'listen: "127.0.0.1:8080"\n  address: 192.168.1.2\n  hostnames: [filter.home]',
        'listen: "192.168.1.2:80"\n  address: 192.168.1.3\n  address6: fd00::2\n  hostnames: [parents.lan, filter.home]')
    other = Env(tmp_path, text)
    other.set_password()
    client = other.client()
    for host in ("parents.lan", "filter.home:80", "192.168.1.2", "192.168.1.3", "[fd00::2]:80", "[FD00::2]"):
        response = client.get("/login", headers={"Host": host})
        assert response.status_code == 200 and not is_block_page(response), host
    for host in ("127.0.0.1:8080", "localhost", "evil.example", "[fd00::3]"):
        assert is_block_page(client.get("/login", headers={"Host": host})), host


def test_host_of_parses_ports_brackets_and_refuses_junk():
    assert security.host_of("Filter.Home:8080") == "filter.home"
    assert security.host_of("[::1]:8080") == "::1"
    assert security.host_of("filter.home.") == "filter.home"
    assert security.host_of("127.0.0.1:evil") == ""
    assert security.host_of("[::1]evil") == ""


# ---------------------------------------------------------------- first run


def test_first_run_every_admin_route_leads_to_setup(fresh_env):
    client = fresh_env.client()
    for endpoint, path, method in every_route(fresh_env.app):
        if endpoint == "static" or (endpoint == "auth.setup" and "/" not in path.strip("/")
                                    and not path.endswith("/")):
            continue
        response = request(client, method, path)
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path)
        else:
            assert response.status_code in (302, 303), (method, path, response.status_code)
            assert location_path(response) == "/setup", (method, path)
    assert fresh_env.query("SELECT count(*) FROM admin") == [(0,)]


def test_no_default_password_works_before_setup(fresh_env):
    client = fresh_env.client()
    for guess in ("admin", "password", "filterd", ""):
        response = client.post("/login", data={"password": guess})
        assert response.status_code in (302, 303) and location_path(response) == "/setup"
    assert client.get_cookie("filterd_session") is None


@pytest.mark.parametrize("password, confirm, message", [
    ("short", "short", "at least 10"),
    ("123456789", "123456789", "at least 10"),
    ("long enough password", "long enough passw0rd", "differ"),
])
def test_setup_refuses_a_short_or_unconfirmed_password(fresh_env, password, confirm, message):
    client = fresh_env.client()
    token = page_csrf(client, "/setup")
    response = client.post("/setup", data={"csrf_token": token, "password": password, "confirm": confirm,
                                           "setup_code": fresh_env.setup_code()})
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert fresh_env.query("SELECT count(*) FROM admin") == [(0,)]


def test_setup_needs_its_csrf_token(fresh_env):
    client = fresh_env.client()
    client.get("/setup")
    for data in ({"password": PASSWORD, "confirm": PASSWORD},
                 {"password": PASSWORD, "confirm": PASSWORD, "csrf_token": "forged"}):
        assert client.post("/setup", data=data).status_code == 400
    assert fresh_env.query("SELECT count(*) FROM admin") == [(0,)]


def test_setup_sets_a_scrypt_password_then_offers_the_skippable_wizard(fresh_env):
    client = fresh_env.client()
    token = page_csrf(client, "/setup")
    response = client.post("/setup", data={"csrf_token": token, "password": PASSWORD, "confirm": PASSWORD,
                                           "setup_code": fresh_env.setup_code()})
    assert response.status_code == 302 and location_path(response) == "/setup/wizard"
    stored = fresh_env.query("SELECT password_hash FROM admin")[0][0]
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    wizard = client.get("/setup/wizard")
    assert wizard.status_code == 200
    assert 'href="/"' in wizard.get_data(as_text=True)   # skip: straight to the dashboard
    assert client.get("/").status_code == 200
    # Set up once: /setup now leads away, and cannot set another password.
    assert client.get("/setup").status_code == 302
    other = fresh_env.client(peer="192.168.1.66")
    token = page_csrf(other, "/login")
    other.post("/setup", data={"csrf_token": token, "password": "child's password", "confirm": "child's password"})
    assert fresh_env.query("SELECT password_hash FROM admin")[0][0] == stored


# ---------------------------------------------------------------- deny by default


def test_anonymous_requests_are_refused_on_every_route_and_method(env):
    client = env.client()
    open_endpoints = {"static", "auth.login"}
    checked = 0
    for endpoint, path, method in every_route(env.app):
        response = request(client, method, path)
        if endpoint in security.PUBLIC_DOWNLOADS and path.rstrip("/") == path:
            # The house CA's public certificate and trust check: open, and absent while the CA is off.
            assert response.status_code in (200, 404), (method, path, response.status_code)
            assert b"PRIVATE KEY" not in response.data
            continue
        if endpoint == "static" or (endpoint in open_endpoints and path.rstrip("/") == path):
            if method == "POST":
                assert response.status_code == 400   # the login form without its CSRF token
            else:
                assert response.status_code == 200, (method, path)
            continue
        assert_refused(response, path)
        checked += 1
    assert checked > 60
    assert env.query("SELECT count(*) FROM sessions") == [(0,)]
    assert env.query("SELECT count(*) FROM overrides") == [(0,)]


def test_anonymous_requests_with_other_methods_are_refused(env):
    client = env.client()
    for path in ("/", "/settings", "/devices/kids-tablet", "/api/status", "/api/profiles/kids", "/no/such/page",
                 "/api/no/such"):
        for method in ("PUT", "DELETE", "PATCH", "POST"):
            assert_refused(request(client, method, path), path)


def test_expected_routes_exist(env):
    rules = {rule.rule for rule in env.app.url_map.iter_rules()}
    for path in ("/setup", "/login", "/logout", "/", "/devices", "/devices/<name>", "/profiles", "/profiles/<name>",
                 "/log", "/lists", "/requests", "/settings", "/api/status", "/api/devices",
                 "/api/devices/<name>/pause", "/api/devices/<name>/resume", "/api/devices/<name>/allow",
                 "/api/devices/<name>/bonus", "/api/profiles", "/api/profiles/<name>", "/api/queries",
                 "/api/requests", "/api/lists/update"):
        assert path in rules, path


# ---------------------------------------------------------------- passwords


def test_passwords_are_hashed_with_scrypt_and_a_random_salt():
    first, second = passwords.hash_password(PASSWORD), passwords.hash_password(PASSWORD)
    assert first != second
    scheme, n, r, p, salt, digest = first.split("$")
    assert scheme == "scrypt" and int(n) >= 2**14 and int(r) >= 8 and int(p) >= 1
    assert len(base64.b64decode(salt)) >= 16 and len(base64.b64decode(digest)) >= 32
    assert passwords.verify_password(PASSWORD, first)
    assert not passwords.verify_password(PASSWORD + "x", first)
    assert not passwords.verify_password(PASSWORD, "sha256$abc")
    assert not passwords.verify_password(PASSWORD, "garbage")


# ---------------------------------------------------------------- sessions


def test_login_rotates_the_session_id(env):
    client = env.client()
    client.set_cookie("filterd_session", "planted-by-a-child")
    response = login(client)
    assert response.status_code == 302
    after = last_cookie_value(response, "filterd_session")
    assert after and after != "planted-by-a-child"
    assert client.get_cookie("filterd_session").value == after
    # Logging in again on a live session gives yet another ID, and the old one is dead.
    again = last_cookie_value(login(client), "filterd_session")
    assert again and again != after
    stale = env.client()
    stale.set_cookie("filterd_session", after)
    assert location_path(stale.get("/settings")) == "/login"


def test_session_ids_are_stored_hashed(env):
    client = env.logged_in(through_login=True)
    raw = client.get_cookie("filterd_session").value
    rows = env.query("SELECT id_hash FROM sessions")
    assert rows == [(security.token_hash(raw),)]
    assert raw not in str(rows)


def test_session_cookie_is_httponly_samesite_strict(env):
    response = login(env.client())
    header = cookie_headers(response, "filterd_session")[-1]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    assert "Secure" not in header    # plain http on the LAN: a Secure cookie would never come back


def test_session_cookie_over_https_is_secure_with_host_prefix(env):
    client = env.client(base_url="https://127.0.0.1:8080")
    response = login(client)
    assert response.status_code == 302
    header = cookie_headers(response, "__Host-filterd_session")[-1]
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    assert "Domain" not in header
    assert not cookie_headers(response, "filterd_session")
    assert client.get("/settings").status_code == 200


def test_logout_ends_the_session_server_side(env, admin):
    cookie = admin.get_cookie("filterd_session").value
    token = page_csrf(admin)
    response = admin.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and location_path(response) == "/login"
    assert env.query("SELECT count(*) FROM sessions") == [(0,)]
    replay = env.client()
    replay.set_cookie("filterd_session", cookie)
    assert location_path(replay.get("/settings")) == "/login"


def test_logout_needs_post_and_csrf(env, admin):
    assert admin.get("/logout").status_code == 405
    assert admin.post("/logout").status_code == 400
    assert env.query("SELECT count(*) FROM sessions") == [(1,)]


def test_password_change_ends_every_session(env, admin):
    other = env.logged_in(peer="192.168.1.51")
    old_cookie = admin.get_cookie("filterd_session").value
    token = page_csrf(admin)
    new_password = "a brand new password"
    response = admin.post("/settings", data={"csrf_token": token, "action": "password", "current": PASSWORD,
                                             "new": new_password, "confirm": new_password})
    assert response.status_code == 302 and location_path(response) == "/login"
    assert env.query("SELECT count(*) FROM sessions") == [(0,)]
    assert location_path(other.get("/settings")) == "/login"
    replay = env.client()
    replay.set_cookie("filterd_session", old_cookie)
    assert location_path(replay.get("/settings")) == "/login"
    assert login(env.client(), PASSWORD).status_code == 401
    assert login(env.client(), new_password).status_code == 302


@pytest.mark.parametrize("column, age_s, alive", [
    ("last_seen", 7 * 86400 - 600, True),
    ("last_seen", 7 * 86400 + 60, False),
    ("created", 30 * 86400 - 600, True),
    ("created", 30 * 86400 + 60, False),
])
def test_sessions_expire_after_7_idle_days_or_30_days_in_all(env, admin, column, age_s, alive):
    env.execute(f"UPDATE sessions SET {column} = ?", (time.time() - age_s,))  # noqa: S608 (a test constant)
    response = admin.get("/settings")
    if alive:
        assert response.status_code == 200
    else:
        assert response.status_code == 302 and location_path(response) == "/login"
        assert env.query("SELECT count(*) FROM sessions") == [(0,)]


# ---------------------------------------------------------------- CSRF


def test_every_admin_page_carries_the_csrf_token_in_a_meta_tag(env, admin):
    token = env.query("SELECT csrf_token FROM sessions")[0][0]
    for path in ("/", "/devices", "/devices/kids-tablet", "/profiles", "/profiles/kids", "/log", "/lists",
                 "/requests", "/settings", "/setup/wizard", "/log/why?name=example.com", "/no/such/page"):
        response = admin.get(path)
        assert csrf_from(response.get_data(as_text=True)) == token, path


def test_state_changes_without_a_valid_token_get_400_and_change_nothing(env, admin):
    config_before = env.config_text()
    posts = [
        ("/settings", {"action": "token", "name": "sneaky"}),
        ("/settings", {"action": "password", "current": PASSWORD, "new": "child's password", "confirm": "child's password"}),
        ("/devices/kids-tablet/pause", {}),
        ("/devices/kids-tablet/allow", {"what": "tiktok", "minutes": "60"}),
        ("/devices/kids-tablet/bonus", {"minutes": "30"}),
        ("/devices/assign", {"name": "kids-tablet", "profile": "adults", "old_name": "kids-tablet"}),
        ("/profiles/kids", {"allow": "tiktok.com"}),
        ("/profiles", {"name": "free", "preset": "adult"}),
        ("/log/rule", {"name": "tiktok.com", "action": "allow", "profile": "kids"}),
        ("/setup/wizard", {"timezone": "UTC", "default_profile": "adults"}),
        ("/lists/update", {}),
        ("/devices/parents", {"name": "x", "ip": "192.168.1.70"}),
        ("/devices/unnamed", {"profile": "adults"}),
        ("/filter/restart", {}),
        ("/logout", {}),
    ]
    for token in (None, "", "wrong-token"):
        for path, data in posts:
            form = dict(data)
            if token is not None:
                form["csrf_token"] = token
            response = admin.post(path, data=form)
            assert response.status_code == 400, (path, token, response.status_code)
    for path, body in (("/api/devices/kids-tablet/pause", {"minutes": 30}), ("/api/profiles/kids", {"allow": []}),
                       ("/api/lists/update", {})):
        method = "PUT" if path == "/api/profiles/kids" else "POST"
        response = admin.open(path, method=method, json=body, headers={"X-CSRF-Token": "wrong"})
        assert response.status_code == 400 and response.get_json()["error"]
    assert env.config_text() == config_before
    assert env.query("SELECT count(*) FROM api_tokens") == [(0,)]
    assert env.query("SELECT count(*) FROM overrides") == [(0,)]
    assert env.query("SELECT count(*) FROM sessions") == [(1,)]
    assert [a for a in env.audit() if a[1] != "login"] == []
    assert login(env.client(), PASSWORD).status_code == 302


def test_token_works_as_form_field_or_header(env, admin):
    token = page_csrf(admin)
    response = admin.post("/settings", data={"csrf_token": token, "action": "token", "name": "by-form"})
    assert response.status_code == 200
    response = admin.post("/settings", data={"action": "token", "name": "by-header"}, headers={"X-CSRF-Token": token})
    assert response.status_code == 200
    assert [r[0] for r in env.query("SELECT name FROM api_tokens ORDER BY id")] == ["by-form", "by-header"]


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:8080.evil.example", "null",
                                    "https://127.0.0.1:8080", "http://filter.home"])
def test_a_foreign_origin_is_refused_even_with_the_token(env, admin, origin):
    token = page_csrf(admin)
    response = admin.post("/settings", data={"csrf_token": token, "action": "token", "name": "x"},
                          headers={"Origin": origin})
    assert response.status_code == 400
    assert env.query("SELECT count(*) FROM api_tokens") == [(0,)]


def test_same_origin_and_cross_site_fetch_metadata(env, admin):
    token = page_csrf(admin)
    ok = admin.post("/settings", data={"csrf_token": token, "action": "token", "name": "same"},
                    headers={"Origin": f"http://{ADMIN_HOST}", "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200
    refused = admin.post("/settings", data={"csrf_token": token, "action": "token", "name": "cross"},
                         headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 400
    assert [r[0] for r in env.query("SELECT name FROM api_tokens")] == ["same"]


def test_login_form_is_csrf_protected(env):
    client = env.client()
    client.get("/login")
    for data in ({"password": PASSWORD}, {"password": PASSWORD, "csrf_token": "forged"}):
        response = client.post("/login", data=data)
        assert response.status_code == 400
    assert client.get_cookie("filterd_session") is None
    assert env.query("SELECT count(*) FROM sessions") == [(0,)]
    # A token from another browser's cookie does not fit this one's.
    other = env.client()
    token = page_csrf(other, "/login")
    assert client.post("/login", data={"csrf_token": token, "password": PASSWORD}).status_code == 400
    token = page_csrf(client, "/login")
    response = client.post("/login", data={"csrf_token": token, "password": PASSWORD},
                           headers={"Origin": "http://evil.example"})
    assert response.status_code == 400


def test_logging_in_again_from_a_logged_in_page_works(env, admin):
    token = page_csrf(admin, "/login")
    response = admin.post("/login", data={"csrf_token": token, "password": PASSWORD})
    assert response.status_code == 302


def test_get_never_changes_state(env, admin):
    insert_query(env, "tiktok.com")
    before = (env.config_text(), env.query("SELECT * FROM overrides"), env.query("SELECT * FROM api_tokens"),
              env.query("SELECT * FROM audit"), env.query("SELECT id_hash, csrf_token FROM sessions"))
    for endpoint, path, method in every_route(env.app):
        if method in ("GET", "HEAD"):
            request(admin, method, path + "?name=tiktok.com&minutes=30&action=token&what=tiktok"
                                          "&timezone=UTC&csrf_token=x&password=x")
    for path in ("/logout", "/devices/kids-tablet/pause", "/lists/update", "/settings?action=token&name=x"):
        admin.get(path)
    after = (env.config_text(), env.query("SELECT * FROM overrides"), env.query("SELECT * FROM api_tokens"),
             env.query("SELECT * FROM audit"), env.query("SELECT id_hash, csrf_token FROM sessions"))
    assert after == before


# ---------------------------------------------------------------- API tokens


def create_token(admin, name: str = "home-assistant", scope: str = "admin") -> str:
    token = page_csrf(admin)
    response = admin.post("/settings", data={"csrf_token": token, "action": "token", "name": name, "scope": scope})
    match = re.search(r"fd_[A-Za-z0-9_-]{20,}", response.get_data(as_text=True))
    assert match, "the new token is shown once"
    return match.group(0)


def test_bearer_token_needs_no_csrf_and_is_stored_hashed(env, admin):
    secret = create_token(admin)
    stored = env.query("SELECT name, token_hash FROM api_tokens")
    assert stored == [("home-assistant", security.token_hash(secret))]
    assert secret not in admin.get("/settings").get_data(as_text=True)   # shown once only
    api = env.client(peer="192.168.1.80")
    headers = {"Authorization": f"Bearer {secret}"}
    assert api.get("/api/status", headers=headers).status_code == 200
    response = api.post("/api/devices/kids-tablet/pause", json={"minutes": 30}, headers=headers)
    assert response.status_code == 200
    actor = env.query("SELECT actor FROM audit WHERE action = 'pause'")[0][0]
    assert "API token" in actor and "home-assistant" in actor
    assert env.query("SELECT last_used IS NOT NULL FROM api_tokens") == [(1,)]


def test_bearer_token_opens_the_api_only(env, admin):
    secret = create_token(admin)
    api = env.client()
    response = api.get("/settings", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 302 and location_path(response) == "/login"


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ", "Basic YWRtaW46YWRtaW4=", "bearer fd_x",
                                    "Bearer " + "x" * 5000])
def test_bad_bearer_tokens_get_401(env, header):
    response = env.client().get("/api/status", headers={"Authorization": header})
    assert response.status_code == 401 and response.get_json()["error"]


def test_revoked_token_gets_401(env, admin):
    secret = create_token(admin)
    token_id = env.query("SELECT id FROM api_tokens")[0][0]
    token = page_csrf(admin)
    response = admin.post("/settings", data={"csrf_token": token, "action": "revoke", "token_id": token_id})
    assert response.status_code == 302
    assert env.query("SELECT count(*) FROM api_tokens") == [(0,)]
    response = env.client().get("/api/status", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401
    assert ("web UI", "api token", f"revoked home-assistant (#{token_id})") in env.audit()


# ---------------------------------------------------------------- login throttling


def fail(client, times: int = 1, headers=None):
    response = None
    for _ in range(times):
        response = login(client, "wrong password!", headers=headers)
    return response


def retry_after(response) -> int:
    assert response.status_code == 429
    return int(response.headers["Retry-After"])


def expire_delays(env) -> None:
    """As if the running delay had passed (the clock is not touched)."""
    env.execute("UPDATE login_throttle SET blocked_until = ?", (time.time() - 1,))


def test_five_failures_then_429_with_retry_after_doubling(env):
    client = env.client()
    for _ in range(4):
        assert fail(client).status_code == 401
    first = retry_after(fail(client))
    assert 0 < first <= 3600
    assert retry_after(fail(client)) <= first         # refused while the delay runs, not counted
    expire_delays(env)
    second = retry_after(fail(client))
    assert second >= 2 * first - 2
    expire_delays(env)
    third = retry_after(fail(client))
    assert third >= 2 * second - 2


def test_a_correct_password_does_not_bypass_a_running_delay(env):
    client = env.client()
    fail(client, 5)
    response = login(client)
    assert response.status_code == 429 and response.headers["Retry-After"]
    assert client.get_cookie("filterd_session") is None
    expire_delays(env)
    assert login(client).status_code == 302
    assert env.query("SELECT count(*) FROM login_throttle") == [(0,)]


def test_x_forwarded_for_does_not_reset_the_throttle(env):
    client = env.client()
    for i in range(5):
        fail(client, headers={"X-Forwarded-For": f"10.0.0.{i}", "X-Real-IP": f"10.0.1.{i}"})
    response = fail(client, headers={"X-Forwarded-For": "10.9.9.9"})
    assert response.status_code == 429
    keys = {row[0] for row in env.query("SELECT key FROM login_throttle")}
    assert keys == {f"peer:{PEER}"}
    assert {row[0] for row in env.query("SELECT peer FROM login_failures")} == {PEER}


def test_throttle_is_per_peer_and_survives_a_restart(env):
    fail(env.client(peer="192.168.1.77"), 5)
    restarted = env.new_app()
    same_peer = env.client(restarted, peer="192.168.1.77")
    response = login(same_peer)
    assert response.status_code == 429                      # the address's back-off, from the DB
    assert int(response.headers["Retry-After"]) > 0
    assert same_peer.get_cookie("filterd_session") is None
    assert login(env.client(restarted, peer="192.168.1.78")).status_code == 302   # no account lock-out


def test_failed_logins_are_listed_on_settings_escaped(env):
    client = env.client(peer="192.168.1.99")
    for payload in XSS_PAYLOADS:
        fail(client, headers={"User-Agent": payload})
    page = env.logged_in().get("/settings").get_data(as_text=True)
    assert "192.168.1.99" in page
    for payload in XSS_PAYLOADS:
        assert payload not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ---------------------------------------------------------------- headers on every response


def test_security_headers_on_every_kind_of_response(env, admin):
    anonymous = env.client()
    responses = [
        admin.get("/"), admin.get("/settings"), admin.get("/no/such/page"), admin.post("/settings"),
        admin.get("/api/status"), admin.get("/api/no/such"), admin.post("/api/devices/nope/pause"),
        anonymous.get("/login"), anonymous.get("/"), anonymous.get("/api/status"),
        anonymous.get("/static/style.css"), anonymous.get("/static/nope.css"),
        anonymous.get("/", headers={"Host": "tiktok.com"}), anonymous.post("/x", headers={"Host": "evil.example"}),
        anonymous.get("/static/style.css", headers={"Host": "tiktok.com"}),
        admin.open("/settings", method="OPTIONS"), admin.head("/"), admin.delete("/settings"),
    ]
    for response in responses:
        assert_headers(response)


def test_no_server_banner_when_served_by_waitress():
    from webui import serve
    source = open(serve.__file__).read()
    assert 'ident=""' in source and "clear_untrusted_proxy_headers=True" in source


# ---------------------------------------------------------------- open redirects


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example", "http://evil.example/",
                                    "/\\evil.example", "\\\\evil.example", "/\t/evil.example", "///evil.example",
                                    "javascript:alert(1)", "evil.example", " //evil.example", "https:evil.example",
                                    "%2F%2Fevil.example"])
def test_login_next_cannot_leave_the_site(env, target):
    from urllib.parse import quote
    response = login(env.client(), next_path=quote(target, safe=""))
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location in ("/", f"http://{ADMIN_HOST}/"), location


def test_login_next_keeps_a_local_path(env):
    response = login(env.client(), next_path="/devices%3Fx%3D1")
    assert response.headers["Location"].endswith("/devices?x=1")


def test_anonymous_page_visit_comes_back_after_login(env):
    client = env.client()
    response = client.get("/profiles/kids")
    assert location_path(response) == "/login"
    next_path = response.headers["Location"].split("next=", 1)[1]
    assert login(client, next_path=next_path).headers["Location"].endswith("/profiles/kids")


@pytest.mark.parametrize("path, data", [
    ("/devices/kids-tablet/pause", {"minutes": "30"}),
    ("/log/rule", {"name": "example.com", "action": "block", "profile": "kids"}),
])
def test_form_back_fields_cannot_leave_the_site(env, admin, path, data):
    token = page_csrf(admin)
    for back in ("https://evil.example/", "//evil.example", "/\\evil.example"):
        response = admin.post(path, data={**data, "csrf_token": token, "back": back})
        assert response.status_code == 302
        assert "evil" not in response.headers["Location"]
    response = admin.post(path, data={**data, "csrf_token": token, "back": "/devices"})
    assert response.headers["Location"].endswith("/devices")


def test_the_current_password_on_settings_is_throttled_too(env, admin):
    token = page_csrf(admin)
    form = {"csrf_token": token, "action": "password", "new": "a brand new password",
            "confirm": "a brand new password"}
    for _ in range(5):
        body = admin.post("/settings", data={**form, "current": "a wrong guess"}).get_data(as_text=True)
        assert "current password is wrong" in body
    body = admin.post("/settings", data={**form, "current": PASSWORD}).get_data(as_text=True)
    assert "Too many wrong passwords" in body
    assert login(env.client(peer="192.168.1.90")).status_code == 302   # a limit of that session only
    stored = env.query("SELECT password_hash FROM admin")[0][0]
    assert passwords.verify_password(PASSWORD, stored)


def test_activity_keeps_an_idle_session_alive(env, admin):
    env.execute("UPDATE sessions SET last_seen = ?", (time.time() - 7 * 86400 + 600,))
    assert admin.get("/settings").status_code == 200
    assert env.query("SELECT last_seen > ? FROM sessions", (time.time() - 600,)) == [(1,)]


def test_served_by_waitress_no_banner_and_the_peer_is_the_socket(env, monkeypatch):
    """The real server settings from `filterd-webui`: no Server header, X-Forwarded-For ignored."""
    import http.client
    import threading

    import waitress

    from webui import serve

    captured = {}
    create_server = waitress.create_server

    class NotServing:
        def run(self):
            return None

    def capture(app, **options):
        captured.update(options, app=app)
        return NotServing()
    monkeypatch.setattr(waitress, "create_server", capture)
    assert serve.main(["--config", str(env.config_path)]) == 0
    options = {k: v for k, v in captured.items() if k not in ("app", "host", "port", "threads")}
    assert options["ident"] == "" and options["clear_untrusted_proxy_headers"] is True
    assert "trusted_proxy" not in options
    server = create_server(captured["app"], host="127.0.0.1", port=0, threads=1, **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        def call(method: str, path: str, body: str | None = None, headers=None):
            connection = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=10)
            connection.request(method, path, body=body, headers={"Host": ADMIN_HOST, **(headers or {})})
            response = connection.getresponse()
            response.read()
            connection.close()
            return response
        page = call("GET", "/login")
        assert page.status == 200 and page.getheader("Server") is None
        cookie = page.getheader("Set-Cookie").split(";", 1)[0]
        token = cookie.split("=", 1)[1]
        failed = call("POST", "/login", f"csrf_token={token}&password=wrong+password",
                      {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded",
                       "X-Forwarded-For": "10.9.9.9", "Forwarded": "for=10.9.9.9"})
        assert failed.status == 401 and failed.getheader("Server") is None
        assert env.query("SELECT peer FROM login_failures") == [("127.0.0.1",)]
    finally:
        server.close()
        server.task_dispatcher.shutdown()


def test_a_csrf_token_with_non_ascii_characters_is_refused_not_a_server_error(env, admin):
    """Wapiti's payloads found it: hmac.compare_digest raised TypeError on such a str (a 500)."""
    client = env.client()
    client.get("/login")
    for token in ("é" * 43, "\u202e" + "a" * 42, "ü"):
        assert client.post("/login", data={"csrf_token": token, "password": PASSWORD}).status_code == 400
        assert admin.post("/settings", data={"csrf_token": token}).status_code == 400
        assert admin.post("/settings", headers={"X-CSRF-Token": token}).status_code == 400
    assert client.get_cookie("filterd_session") is None
