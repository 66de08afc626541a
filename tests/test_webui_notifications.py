"""The notifications settings page (channels, their state, the test button) and the weekly
summary page: admin-only, CSRF on the button, nothing secret shown, everything escaped."""
from __future__ import annotations

import time

import pytest
from test_notify import SECRET, SMTP_PASSWORD, NTFY_TOKEN, Receiver
from test_webui_pages import assert_no_raw_payload, inline_code
from webui_fixtures import CONFIG_TEXT, XSS_PAYLOADS, Env, csrf_from, insert_query

from filterd import notify
from standin import free_port

URL_TOKEN = "path-token-0f9e8d"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def dead_port() -> int:
    return free_port()


@pytest.fixture
def env(tmp_path, receiver, dead_port) -> Env:
    notify_yaml = f"""
notify:
  channels:
    phone: {{type: ntfy, url: "{receiver.url('/kids-' + URL_TOKEN)}", token: {NTFY_TOKEN}, priority: high}}
    hook: {{type: webhook, url: "http://127.0.0.1:{dead_port}/{URL_TOKEN}", secret: {SECRET}, timeout: 1}}
    mum: {{type: email, host: smtp.invalid, port: 2525, username: mum, password: {SMTP_PASSWORD},
          from: filter@example.com, to: [mum@example.com]}}
  events:
    access_request: [phone, hook]
    weekly_summary: [mum]
"""
    environment = Env(tmp_path, CONFIG_TEXT.format(data_dir=tmp_path / "var") + notify_yaml)
    environment.set_password()
    return environment


@pytest.fixture
def admin(env):
    return env.logged_in()


def test_channel_list_shows_each_channel_its_events_and_failures_without_secrets(env, admin):
    db = env.db()
    config = env.app.extensions["filterd"].config()
    notify.enqueue(db, config.notify, "access_request", {"request_id": 1, "device": "kids-tablet",
                                                         "domain": "roblox.com", "reason": "games", "message": "",
                                                         "asks": 1})
    notify.send_due(db, config)
    response = admin.get("/settings/notifications")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for name in ("phone", "hook", "mum"):
        assert f'id="channel-{name}"' in page
    assert "a child asks for a site" in page and "the weekly summary" in page
    assert "failing" in page and "refused the connection" in page      # hook: nothing listens on its port
    assert "mum@example.com via smtp.invalid:2525" in page
    for secret in (SECRET, SMTP_PASSWORD, NTFY_TOKEN, URL_TOKEN):
        assert secret not in page
    assert inline_code(page) == []
    assert page.count('name="csrf_token"') >= 3                         # one test form per channel (+ logout)


def test_test_button_sends_a_notification_and_says_so(env, admin, receiver):
    token = csrf_from(admin.get("/settings/notifications").get_data(as_text=True))
    response = admin.post("/settings/notifications/test", data={"csrf_token": token, "channel": "phone"})
    assert response.status_code == 303
    [(path, headers, _)] = receiver.received
    assert path == f"/kids-{URL_TOKEN}" and headers["Title"] == "Test notification from filterd"
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "Test notification sent to phone" in page
    assert ("web UI", "notification test", "phone: sent") in env.audit()


def test_test_button_reports_a_failing_channel(env, admin):
    token = csrf_from(admin.get("/settings/notifications").get_data(as_text=True))
    response = admin.post("/settings/notifications/test", data={"csrf_token": token, "channel": "hook"})
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "The test to hook failed" in page and "refused the connection" in page
    assert SECRET not in page


def test_test_button_without_csrf_token_is_refused(env, admin, receiver):
    response = admin.post("/settings/notifications/test", data={"channel": "phone"})
    assert response.status_code == 400
    token = csrf_from(admin.get("/settings/notifications").get_data(as_text=True))
    response = admin.post("/settings/notifications/test", data={"csrf_token": token, "channel": "phone"},
                          headers={"Origin": "http://evil.example"})
    assert response.status_code == 400
    assert receiver.received == []


def test_unknown_channel_is_an_error_not_a_send(env, admin, receiver):
    token = csrf_from(admin.get("/settings/notifications").get_data(as_text=True))
    response = admin.post("/settings/notifications/test", data={"csrf_token": token, "channel": "<b>x</b>"})
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "no such channel" in page and "<b>x</b>" not in page
    assert receiver.received == []


def test_anonymous_visitor_is_refused(env, receiver):
    anonymous = env.client()
    for path in ("/settings/notifications", "/summary/kids"):
        response = anonymous.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    response = anonymous.post("/settings/notifications/test", data={"channel": "phone"})
    assert response.status_code in (303, 400)
    assert receiver.received == []


def test_summary_page_escapes_names_and_messages_from_the_network(env, admin):
    now = time.time()
    for payload in XSS_PAYLOADS:
        insert_query(env, payload, action="allow", category=None, ts=now)
        env.execute("INSERT INTO name_rollups (blocked, hour, device, name, queries) VALUES (0, ?, 'kids-tablet', ?, 9)",
                    (int(now // 3600), payload))
        env.execute("INSERT INTO access_requests (device, domain, reason, unblocks, message, created, updated)"
                    " VALUES ('kids-tablet', 'example.com', 'games', 'example.com', ?, ?, ?)", (payload, now, now))
    env.execute("INSERT INTO rollups (hour, device, category, queries, blocked) VALUES (?, 'kids-tablet', 'adult', 5, 2)",
                (int(now // 3600),))
    response = admin.get("/summary/kids")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert_no_raw_payload(page, "/summary/kids")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Weekly summary: kids" in page and "kids-tablet" in page
    assert "Adult content" in page
    assert inline_code(page) == []


def test_summary_of_an_unknown_profile_is_not_found(admin):
    assert admin.get("/summary/nobody").status_code == 404
