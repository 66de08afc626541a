"""The JSON API (webui/api.py): same auth as the pages (a session with its CSRF token, or a
bearer token), errors as {"error", "field"} with a 4xx, every change in the audit trail."""
from __future__ import annotations

import re
import time

import pytest
from webui_fixtures import XSS_PAYLOADS, admin, env, insert_query, page_csrf  # noqa: F401

from filterd.store import configfile


@pytest.fixture
def api(env):
    """A client with a bearer token made on the Settings page (no cookies, no CSRF token)."""
    parent = env.logged_in()
    page = parent.post("/settings", data={"csrf_token": page_csrf(parent), "action": "token",
                                          "name": "home-assistant", "scope": "admin"}).get_data(as_text=True)
    secret = re.search(r"fd_[A-Za-z0-9_-]{20,}", page).group(0)
    client = env.client(peer="192.168.1.80")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client


@pytest.fixture
def browser(admin):
    """A logged-in browser session calling the API with its CSRF header, as the pages' scripts do."""
    admin.environ_base["HTTP_X_CSRF_TOKEN"] = page_csrf(admin)
    return admin


def assert_error(response, status: int, field: str | None = "any") -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "field"} and body["error"]
    if field != "any":
        assert body["field"] == field, body
    return body


def overrides(env) -> list[tuple]:
    return env.query("SELECT kind, subject_kind, subject, value, until - created, ended IS NOT NULL, source"
                     " FROM overrides ORDER BY id")


# ---------------------------------------------------------------- reading


def test_status(api):
    body = api.get("/api/status").get_json()
    assert body["running"] is False and body["workers"] == 0 and isinstance(body["lists"], list)


def test_devices_lists_configured_and_seen_devices_with_pauses(env, api):
    now = time.time()
    env.execute("INSERT INTO clients_seen (client, mac, device, hostname, first_seen, last_seen, queries)"
                " VALUES ('192.168.1.70', NULL, NULL, 'emma-ipad', ?, ?, 1)", (now, now))
    api.post("/api/devices/kids-tablet/pause", json={})
    rows = {row["name"] or row["ip"]: row for row in api.get("/api/devices").get_json()}
    assert rows["kids-tablet"]["paused"] is True and rows["kids-tablet"]["paused_until"] is None
    assert rows["dad-phone"]["paused"] is False
    assert rows["192.168.1.70"]["hostname"] == "emma-ipad" and rows["192.168.1.70"]["known"] is False


def test_profiles_and_one_profile(api):
    body = api.get("/api/profiles").get_json()
    assert re.fullmatch(r"[0-9a-f]{16}", body["version"])
    assert {p["name"] for p in body["profiles"]} == {"kids", "adults"}
    kids = api.get("/api/profiles/kids").get_json()
    assert kids["allow"] == ["khanacademy.org"] and kids["preset"] == "child"
    assert kids["schedules"][0] == {"name": "bedtime", "days": [0, 1, 2, 3, 6], "start": "21:00", "end": "07:00",
                                    "block": "all", "allow": []}
    assert_error(api.get("/api/profiles/nobody"), 404, "name")


def test_queries_filters_and_paging(env, api):
    now = time.time()
    insert_query(env, "old.example", ts=now - 3 * 86400)
    insert_query(env, "pokerstars.com", category="gambling", ts=now - 60)
    insert_query(env, "khanacademy.org", action="allow", category=None, ts=now - 50)
    insert_query(env, "tiktok.com", device="dad-phone", client="192.168.1.24", category="social_networks", ts=now - 40)
    insert_query(env, "unknown.example", device=None, client="192.168.1.99", action="allow", category=None, ts=now - 30)

    def names(query: str) -> list[str]:
        response = api.get("/api/queries" + query)
        assert response.status_code == 200
        return [row["name"] for row in response.get_json()]

    assert names("") == ["unknown.example", "tiktok.com", "khanacademy.org", "pokerstars.com"]
    assert names("?since=7d")[-1] == "old.example"
    assert names("?device=kids-tablet") == ["khanacademy.org", "pokerstars.com"]
    assert names("?device=192.168.1.99") == ["unknown.example"]
    assert names("?decision=blocked") == ["tiktok.com", "pokerstars.com"]
    assert names("?decision=allow") == ["unknown.example", "khanacademy.org"]
    assert names("?category=gambling") == ["pokerstars.com"]
    assert names("?q=KHAN") == ["khanacademy.org"]
    assert names("?q=%25") == []                         # LIKE wildcards are literal
    first_page = api.get("/api/queries?limit=2").get_json()
    assert [row["name"] for row in first_page] == ["unknown.example", "tiktok.com"]
    assert names(f"?limit=2&before={first_page[-1]['id']}") == ["khanacademy.org", "pokerstars.com"]
    assert names("?limit=-5") == ["unknown.example"]
    assert len(names("?limit=abc&since=nonsense&decision=nonsense")) == 4
    row = api.get("/api/queries?limit=1").get_json()[0]
    assert {"id", "ts", "device", "client", "name", "qtype", "action", "rule", "reason", "category"} <= set(row)


def test_queries_json_never_carries_the_raw_payload(env, api):
    for payload in XSS_PAYLOADS:
        insert_query(env, payload)
    response = api.get("/api/queries")
    text = response.get_data(as_text=True)
    for payload in XSS_PAYLOADS:
        assert payload not in text
    assert {row["name"] for row in response.get_json()} == set(XSS_PAYLOADS)


def test_requests_is_an_empty_list_for_now(api):
    assert api.get("/api/requests").get_json() == []


# ---------------------------------------------------------------- pause, resume, allow, bonus


def test_pause_for_minutes_and_until_resumed_then_resume(env, api):
    assert api.post("/api/devices/kids-tablet/pause", json={"minutes": 30}).get_json() == {"ok": True}
    assert api.post("/api/devices/Kids-Tablet/pause").status_code == 200       # no body: until resumed
    rows = overrides(env)
    assert [r[:4] for r in rows] == [("pause", "device", "kids-tablet", None)] * 2
    assert rows[0][4] == pytest.approx(1800, abs=1) and rows[1][4] is None
    body = api.post("/api/devices/kids-tablet/resume", json={}).get_json()
    assert body == {"ok": True, "resumed": 2}
    assert all(row[5] for row in overrides(env))


def test_allow_a_domain_or_a_service_for_a_while(env, api):
    assert api.post("/api/devices/kids-tablet/allow", json={"domain": "Wikipedia.org.", "minutes": 60}).status_code == 200
    assert api.post("/api/devices/kids-tablet/allow", json={"service": "youtube", "minutes": 15}).status_code == 200
    rows = overrides(env)
    assert [(r[0], r[3]) for r in rows] == [("allow", "wikipedia.org"), ("allow", "youtube")]
    assert rows[0][4] == pytest.approx(3600, abs=1) and rows[1][4] == pytest.approx(900, abs=1)


def test_bonus_minutes(env, api):
    assert api.post("/api/devices/kids-tablet/bonus", json={"minutes": 30}).status_code == 200
    assert overrides(env)[0][:2] == ("bonus", "device")
    # No running schedule to lift (the adults have none): said so, with the field.
    assert_error(api.post("/api/devices/dad-phone/bonus", json={}), 400, "minutes")


@pytest.mark.parametrize("path, body, status, field", [
    ("/api/devices/nobody/pause", {"minutes": 30}, 404, "name"),
    ("/api/devices/nobody/resume", {}, 404, "name"),
    ("/api/devices/kids-tablet/pause", {"minutes": "abc"}, 400, "minutes"),
    ("/api/devices/kids-tablet/pause", {"minutes": 0}, 400, "minutes"),
    ("/api/devices/kids-tablet/pause", {"minutes": -30}, 400, "minutes"),
    ("/api/devices/kids-tablet/pause", {"minutes": [30]}, 400, "minutes"),
    ("/api/devices/kids-tablet/pause", {"minutes": 10**9}, 400, "minutes"),
    ("/api/devices/kids-tablet/allow", {"domain": "not a domain", "minutes": 60}, 400, "domain"),
    ("/api/devices/kids-tablet/allow", {"minutes": 60}, 400, "domain"),
    ("/api/devices/kids-tablet/allow", {"domain": "<script>alert(1)</script>"}, 400, "domain"),
    ("/api/devices/kids-tablet/bonus", {"minutes": "soon"}, 400, "minutes"),
])
def test_action_errors_name_their_field(env, api, path, body, status, field):
    response = api.post(path, json=body)
    assert_error(response, status, field)
    assert "<script>" not in response.get_data(as_text=True)
    assert overrides(env) == []


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '"text"', "{"])
def test_a_body_that_is_not_a_json_object_is_refused(env, api, data):
    assert_error(api.post("/api/devices/kids-tablet/pause", data=data, content_type="application/json"), 400)
    assert_error(api.put("/api/profiles/kids", data=data, content_type="application/json"), 400)
    assert overrides(env) == []


# ---------------------------------------------------------------- profiles


def test_put_profile_changes_only_the_given_keys_keeping_comments(env, api):
    version = api.get("/api/profiles").get_json()["version"]
    response = api.put("/api/profiles/kids", json={"version": version, "allow": ["khanacademy.org", "scratch.mit.edu"],
                                                   "block_services": ["tiktok", "roblox"]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is True and body["version"] != version
    assert body["profile"]["allow"] == ["khanacademy.org", "scratch.mit.edu"]
    assert body["profile"]["block_services"] == ["tiktok", "roblox"]
    assert body["profile"]["schedules"][0]["name"] == "bedtime"
    text = env.config_text()
    assert "# Emma and Noah" in text and "# where we live" in text and "# Devices, by address" in text
    assert "adults:\n    preset: adult\n" in text
    assert api.get("/api/profiles").get_json()["version"] == body["version"]


def test_put_profile_with_an_outdated_version_is_refused(env, api):
    version = api.get("/api/profiles").get_json()["version"]
    hand_edited = env.config_text() + "# a parent's note\n"
    env.config_path.write_text(hand_edited)
    body = assert_error(api.put("/api/profiles/kids", json={"version": version, "allow": []}), 409, "version")
    assert "changed meanwhile" in body["error"]
    assert env.config_text() == hand_edited


@pytest.mark.parametrize("body, field", [
    ({"schedules": [{"name": "bed", "days": ["mon"], "start": "25:00", "end": "07:00"}]},
     "profiles.kids.schedules[0].start"),
    ({"block_categories": ["adult", "nonsense"]}, "profiles.kids.block_categories[1]"),
    ({"block_services": ["nonsense"]}, "profiles.kids.block_services[0]"),
    ({"youtube": "sometimes"}, "profiles.kids.youtube"),
    ({"safesearch": "yes"}, "profiles.kids.safesearch"),
    ({"preset": "toddler"}, "profiles.kids.preset"),
    ({"schedules": "bedtime"}, "profiles.kids.schedules"),
    ({"password": "x"}, "password"),
    ({}, None),
    ({"version": "0000000000000000"}, None),
])
def test_put_profile_errors_name_the_field_and_write_nothing(env, api, body, field):
    before = env.config_text()
    response = api.put("/api/profiles/kids", json=body)
    assert response.status_code in (400, 409)
    assert_error(response, response.status_code, field)
    assert env.config_text() == before
    assert not (env.folder / "filterd.yaml.bak").exists()


# ---------------------------------------------------------------- lists, auth, errors, audit


def test_lists_update_starts_and_is_audited(env, api, monkeypatch):
    import subprocess
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: started.append(args))
    response = api.post("/api/lists/update")
    assert response.status_code == 202 and response.get_json() == {"ok": True, "started": True}
    assert started[0][-4:-1] == ["lists", "update", "--config"]
    assert env.audit()[-1][1:] == ("lists update", "started")
    assert env.audit()[-1][0].startswith("API token home-assistant")


def test_browser_session_uses_the_api_with_its_csrf_header(env, browser):
    assert browser.post("/api/devices/kids-tablet/pause", json={"minutes": 5}).status_code == 200
    assert env.audit()[-1][:2] == ("web UI", "pause")
    browser.environ_base.pop("HTTP_X_CSRF_TOKEN")
    assert_error(browser.post("/api/devices/kids-tablet/pause", json={"minutes": 5}), 400)
    assert len(overrides(env)) == 1


def test_anonymous_api_calls_get_401_json(env):
    client = env.client()
    for method, path in (("GET", "/api/status"), ("GET", "/api/queries"), ("POST", "/api/devices/kids-tablet/pause"),
                         ("PUT", "/api/profiles/kids"), ("POST", "/api/lists/update"), ("GET", "/api/nope")):
        assert_error(client.open(path, method=method, json={}), 401)
    assert overrides(env) == []


def test_unknown_api_paths_and_methods_answer_json(api):
    assert_error(api.get("/api/nope"), 404, None)
    response = api.delete("/api/status")
    assert_error(response, 405, None)
    assert "GET" in response.headers["Allow"]


def test_every_change_is_audited_with_its_actor(env, api, browser):
    api.post("/api/devices/kids-tablet/pause", json={"minutes": 10})
    api.post("/api/devices/kids-tablet/resume")
    api.post("/api/devices/kids-tablet/allow", json={"domain": "wikipedia.org", "minutes": 10})
    api.post("/api/devices/kids-tablet/bonus", json={"minutes": 10})
    api.put("/api/profiles/kids", json={"allow": ["khanacademy.org"]})
    browser.post("/api/devices/dad-phone/pause", json={"minutes": 10})
    from filterd import cli
    assert cli.main(["pause", "dad-phone", "--for", "5m", "--config", str(env.config_path)]) == 0
    trail = env.audit()
    by_token = [(action, detail) for actor, action, detail in trail if actor.startswith("API token home-assistant")]
    assert [action for action, _ in by_token] == ["pause", "resume", "allow", "bonus", "config"]
    assert ("web UI", "pause", "device dad-phone for 10 min") in trail
    assert trail[-1][:2] == ("cli", "pause")
    sources = [row[-1] for row in overrides(env)]
    assert sources[0].startswith("API token") and sources[-2] == "web UI" and sources[-1] == "cli"


def test_put_profile_config_is_what_filterd_check_accepts(env, api):
    api.put("/api/profiles/kids", json={"schedules": [{"name": "homework", "days": "weekdays", "start": "16:00",
                                                        "end": "18:00", "block": ["games", "youtube"]}]})
    config = configfile.validate_text(env.config_text(), env.config_path)
    assert config.rules.profiles["kids"].schedules[0].block == ("games", "youtube")


# ---------------------------------------------------------------- undo


def test_each_grant_can_be_undone_through_the_api(env, api):
    api.post("/api/devices/kids-tablet/allow", json={"domain": "pokerstars.com", "minutes": 60})
    api.post("/api/devices/kids-tablet/bonus", json={"minutes": 30})
    api.post("/api/devices/kids-tablet/pause", json={"minutes": 30})
    for path in ("/api/devices/kids-tablet/allow/PokerStars.com", "/api/devices/kids-tablet/bonus",
                 "/api/devices/kids-tablet/pause"):
        response = api.delete(path)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"ok": True, "changed": True, "ended": 1}
    assert all(row[5] for row in overrides(env))
    actions = [row[0] for row in env.query("SELECT action FROM audit WHERE action NOT LIKE 'token%' ORDER BY id")]
    assert actions[-3:] == ["revoke", "end bonus", "resume"]


def test_undo_of_nothing_in_force_is_404_and_not_audited(env, api):
    audited = env.query("SELECT count(*) FROM audit")[0][0]
    for path, words in (("/api/devices/kids-tablet/allow/pokerstars.com", "pokerstars.com was not allowed"),
                        ("/api/devices/kids-tablet/bonus", "kids-tablet had no bonus time"),
                        ("/api/devices/kids-tablet/pause", "kids-tablet was not paused")):
        response = api.delete(path)
        assert response.status_code == 404
        body = response.get_json()
        assert body["changed"] is False and body["error"].startswith(words) and "nothing changed" in body["error"]
    assert_error(api.delete("/api/devices/nobody/bonus"), 404, "name")
    assert env.query("SELECT count(*) FROM audit")[0][0] == audited


def test_allow_of_what_is_already_allowed_changes_nothing(env, api):
    api.post("/api/devices/kids-tablet/allow", json={"domain": "wikipedia.org"})
    audited = env.query("SELECT count(*) FROM audit")[0][0]
    body = api.post("/api/devices/kids-tablet/allow", json={"domain": "wikipedia.org", "minutes": 60}).get_json()
    assert body["changed"] is False and "already allowed" in body["error"]
    assert len(overrides(env)) == 1 and env.query("SELECT count(*) FROM audit")[0][0] == audited


def test_an_allow_can_keep_schedules(env, api):
    assert api.post("/api/devices/kids-tablet/allow", json={"domain": "chess.test", "minutes": 60,
                                                           "keep_schedules": True}).get_json()["changed"] is True
    assert [(r[0], r[3]) for r in overrides(env)] == [("allow_day", "chess.test")]
    assert_error(api.post("/api/devices/kids-tablet/allow", json={"domain": "chess.test", "keep_schedules": "yes"}),
                 400, "keep_schedules")
    assert api.delete("/api/devices/kids-tablet/allow/chess.test").get_json()["ended"] == 1
