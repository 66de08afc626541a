"""The notifications settings page (channels, their state, the test button) and the weekly
summary page: admin-only, CSRF on the button, nothing secret shown, everything escaped."""
from __future__ import annotations

import time

import pytest
from test_notify import SECRET, SMTP_PASSWORD, NTFY_TOKEN
from test_webui_pages import assert_no_raw_payload, inline_code
from webui_fixtures import CONFIG_TEXT, XSS_PAYLOADS, Env, csrf_from, insert_query, version_from

from filterd.family import notify
from filterd.rules import notify_settings
from standin import free_port

URL_TOKEN = "path-token-0f9e8d"


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
    from filterd.family import alerts

    now = alerts.last_weekly_moment(env.app.extensions["filterd"].config(), time.time()).timestamp() - 7200
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


def test_summary_page_and_e_mail_count_the_same_requests_with_one_cut_off(env, admin):
    from filterd.family import alerts, summary

    config = env.app.extensions["filterd"].config()
    cut_off = alerts.last_weekly_moment(config, time.time()).timestamp()
    for created in (cut_off - 3600, cut_off - 60, cut_off + 1):      # the last one: after the e-mail went
        env.execute("INSERT INTO access_requests (device, domain, reason, unblocks, message, created, updated)"
                    " VALUES ('kids-tablet', 'example.com', 'games', 'example.com', '', ?, ?)", (created, created))
    page = admin.get("/summary/kids").get_data(as_text=True)
    with env.app.app_context():
        mailed = summary.weekly_summary(env.app.extensions["filterd"].db(), config, "kids", cut_off)
    assert len(mailed["requests"]) == 2
    assert f'<p class="big">{len(mailed["requests"])}</p><p>0 approved, 0 declined, 2 waiting</p>' in page


def test_summary_of_an_unknown_profile_is_not_found(admin):
    assert admin.get("/summary/nobody").status_code == 404


# ---------------------------------------------------------------- adding, changing and removing channels


def page_tokens(client) -> tuple[str, str]:
    """The CSRF token and the config version the notifications page's forms carry."""
    page = client.get("/settings/notifications").get_data(as_text=True)
    return csrf_from(page), version_from(page)


def post_add(client, **fields):
    token, version = page_tokens(client)
    return client.post("/settings/notifications/add", data={"csrf_token": token, "version": version, **fields})


def channel_card(page: str, name: str) -> str:
    """The HTML of one channel's card (up to the next card or the add form)."""
    start = page.index(f'id="channel-{name}"')
    ends = [i for i in (page.find('<li class="card" id="channel-', start + 1), page.find('id="add"', start)) if i > 0]
    return page[start:min(ends)]


def add_form(page: str) -> str:
    return page[page.index('<section class="card" id="add">'):page.index("<h2>What goes where</h2>")]


def current_notify(env) -> notify_settings.NotifyConfig:
    return env.new_app().extensions["filterd"].config().notify


def assert_comments_kept(text: str) -> None:
    assert "# The house's rules (a parent's comments" in text and "# Emma and Noah" in text
    assert "timezone: UTC   # where we live" in text


def test_adding_an_ntfy_channel_writes_it_with_its_events_and_shows_it(env, admin):
    response = post_add(admin, name="tablet", type="ntfy", **{"ntfy-url": "https://ntfy.sh/topic-9x8y7z",
                        "ntfy-priority": "urgent", "event": ["new_device", "daemon_problem"],
                        # the other types' fields are not used
                        "webhook-url": "not a url", "email-host": "x y"})
    assert response.status_code == 303 and response.headers["Location"].endswith("#channel-tablet")
    text = env.config_text()
    assert_comments_kept(text)
    assert "# Devices, by address" in text
    channel = current_notify(env).channel("tablet")
    assert (channel.type, channel.url, channel.priority) == ("ntfy", "https://ntfy.sh/topic-9x8y7z", "urgent")
    config = current_notify(env)
    assert config.channels_for("new_device") == ("tablet",)
    assert config.channels_for("daemon_problem") == ("tablet",)
    assert config.channels_for("access_request") == ("phone", "hook")      # untouched
    assert "not a url" not in text and "x y" not in text
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "Channel tablet added" in page
    card = channel_card(page, "tablet")
    assert "https://ntfy.sh/…" in card and "topic-9x8y7z" not in page          # the URL's path can hold a token
    assert 'value="new_device" checked' in card and 'value="daemon_problem" checked' in card
    assert 'value="access_request" checked' not in card
    assert any(action == "config" and detail.startswith(
        "notification channel tablet added (ntfy; events: new_device, daemon_problem): notify.channels.tablet.type: + ntfy")
        for _, action, detail in env.audit())


def test_adding_a_webhook_channel_keeps_its_secret_out_of_the_page_and_the_audit_trail(env, admin):
    secret = "webhook-secret-typed-in-the-form"
    response = post_add(admin, name="home-assistant", type="webhook",
                        **{"webhook-url": "http://192.168.1.10:8123/api/webhook/house-7q", "webhook-secret": secret,
                           "event": ["access_request"]})
    assert response.status_code == 303
    channel = current_notify(env).channel("home-assistant")
    assert channel.secret == secret and channel.url == "http://192.168.1.10:8123/api/webhook/house-7q"
    assert current_notify(env).channels_for("access_request") == ("phone", "hook", "home-assistant")
    assert_comments_kept(env.config_text())
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert 'id="channel-home-assistant"' in page and "http://192.168.1.10:8123/…" in page
    assert "A secret is set: leave empty to keep it." in channel_card(page, "home-assistant")
    for hidden in (secret, SECRET, "house-7q"):
        assert hidden not in page
    assert not any(secret in detail for _, _, detail in env.audit())


def test_adding_an_email_channel_keeps_its_password_out_of_the_page(env, admin):
    password = "smtp-password-typed-in-the-form"
    response = post_add(admin, name="dad", type="email", **{
        "email-host": "mail.example.net", "email-port": "", "email-security": "tls", "email-username": "dad",
        "email-password": password, "email-from": "filter@example.net",
        "email-to": "dad@example.net, mum@example.net", "event": ["weekly_summary"]})
    assert response.status_code == 303
    channel = current_notify(env).channel("dad")
    assert (channel.host, channel.port, channel.security, channel.username, channel.password) == \
        ("mail.example.net", 465, "tls", "dad", password)
    assert channel.sender == "filter@example.net" and channel.recipients == ("dad@example.net", "mum@example.net")
    assert current_notify(env).channels_for("weekly_summary") == ("mum", "dad")
    assert_comments_kept(env.config_text())
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    card = channel_card(page, "dad")
    assert "dad@example.net, mum@example.net via mail.example.net:465" in card
    assert 'value="mail.example.net"' in card and 'value="dad"' in card
    assert password not in page and SMTP_PASSWORD not in page
    assert not any(password in detail for _, _, detail in env.audit())


def test_an_invalid_url_shows_its_error_beside_the_field_writes_nothing_and_keeps_the_input_but_the_secret(env, admin):
    before = env.config_text()
    secret = "a-secret-not-to-show-again"
    response = post_add(admin, name="automation", type="webhook",
                        **{"webhook-url": "ftp://192.168.1.10/hook", "webhook-secret": secret,
                           "event": ["new_device"]})
    assert response.status_code == 200
    assert env.config_text() == before
    form = add_form(response.get_data(as_text=True))
    assert 'id="add-webhook-url-error"' in form and "must start with http:// or https://" in form
    assert 'id="add-webhook-url" name="webhook-url" type="text" value="ftp://192.168.1.10/hook"' in form
    assert 'aria-invalid="true"' in form
    assert 'name="name" type="text" value="automation"' in form
    assert 'value="webhook" checked' in form and 'value="new_device" checked' in form
    assert 'value="access_request" checked' not in form
    assert secret not in response.get_data(as_text=True)
    assert not any("automation" in detail for _, _, detail in env.audit())


def test_an_email_channel_with_a_bad_recipient_shows_the_error_beside_to(env, admin):
    before = env.config_text()
    response = post_add(admin, name="gran", type="email", **{
        "email-host": "smtp.example.com", "email-security": "starttls", "email-from": "filter@example.com",
        "email-to": "gran@example.com, not-an-address"})
    assert response.status_code == 200 and env.config_text() == before
    form = add_form(response.get_data(as_text=True))
    assert 'id="add-email-to-error"' in form and "&#34;not-an-address&#34; is not an e-mail address" in form
    assert 'value="gran@example.com, not-an-address"' in form


@pytest.mark.parametrize("name", ["phone", "PHONE"])
def test_a_name_clash_shows_an_error_beside_the_name_and_writes_nothing(env, admin, name):
    before = env.config_text()
    response = post_add(admin, name=name, type="ntfy", **{"ntfy-url": "https://ntfy.sh/other"})
    assert response.status_code == 200 and env.config_text() == before
    form = add_form(response.get_data(as_text=True))
    assert 'id="add-name-error"' in form and "exists already" in form
    assert current_notify(env).channel("phone").url.endswith(URL_TOKEN)


def test_removing_a_channel_takes_it_out_of_every_event(env, admin):
    token, version = page_tokens(admin)
    response = admin.post("/settings/notifications/remove", data={"csrf_token": token, "version": version,
                                                                  "channel": "hook"})
    assert response.status_code == 303
    config = current_notify(env)
    assert config.channel("hook") is None and [c.name for c in config.channels] == ["phone", "mum"]
    assert config.channels_for("access_request") == ("phone",)
    text = env.config_text()
    assert "hook" not in text and SECRET not in text
    assert_comments_kept(text)
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "Channel hook removed" in page and 'id="channel-hook"' not in page
    assert any(d.startswith("notification channel hook removed: notify.channels.hook: removed") for _, _, d in env.audit())
    # The last channel of an event: the event's list goes with it.
    token, version = page_tokens(admin)
    admin.post("/settings/notifications/remove", data={"csrf_token": token, "version": version, "channel": "mum"})
    config = current_notify(env)
    assert config.channels_for("weekly_summary") == () and "mum" not in env.config_text()


def test_changing_the_events_of_a_channel_keeps_its_settings_and_secret(env, admin):
    token, version = page_tokens(admin)
    response = admin.post("/settings/notifications/edit", data={
        "csrf_token": token, "version": version, "channel": "hook", "webhook-url": "", "webhook-secret": "",
        "event": ["new_device", "daemon_problem"]})
    assert response.status_code == 303
    config = current_notify(env)
    assert config.channels_for("access_request") == ("phone",)
    assert config.channels_for("new_device") == ("hook",) and config.channels_for("daemon_problem") == ("hook",)
    hook = config.channel("hook")
    assert hook.secret == SECRET and hook.url.endswith("/" + URL_TOKEN) and hook.timeout_s == 1
    assert_comments_kept(env.config_text())
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    card = channel_card(page, "hook")
    assert 'value="new_device" checked' in card and 'value="access_request" checked' not in card
    assert any(d.startswith("notification channel hook changed (events: new_device, daemon_problem): ")
               for _, _, d in env.audit())


def test_editing_an_email_channel_keeps_the_password_when_left_empty_and_replaces_it_when_given(env, admin):
    fields = {"channel": "mum", "email-host": "smtp.example.com", "email-port": "2525", "email-security": "starttls",
              "email-username": "mum", "email-password": "", "email-from": "filter@example.com",
              "email-to": "mum@example.com", "event": ["weekly_summary"]}
    page = admin.get("/settings/notifications").get_data(as_text=True)
    card = channel_card(page, "mum")
    assert 'value="smtp.invalid"' in card and 'value="2525"' in card and SMTP_PASSWORD not in page
    token, version = csrf_from(page), version_from(page)
    response = admin.post("/settings/notifications/edit", data={"csrf_token": token, "version": version, **fields})
    assert response.status_code == 303
    mum = current_notify(env).channel("mum")
    assert mum.host == "smtp.example.com" and mum.password == SMTP_PASSWORD
    new_password = "the-new-smtp-password"
    token, version = page_tokens(admin)
    response = admin.post("/settings/notifications/edit", data={"csrf_token": token, "version": version,
                                                                **fields, "email-password": new_password})
    assert response.status_code == 303
    assert current_notify(env).channel("mum").password == new_password
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert new_password not in page and "A password is set" in channel_card(page, "mum")
    details = [detail for _, _, detail in env.audit()]
    assert ("notification channel mum changed (events: weekly_summary; a new secret): "
            "notify.channels.mum.password: changed (secret not shown)") in details
    assert not any(new_password in detail or SMTP_PASSWORD in detail for detail in details)


def test_a_webhook_secret_is_kept_replaced_or_removed_as_the_parent_chooses(env, admin):
    base = {"channel": "hook", "webhook-url": "", "event": ["access_request"]}
    for extra, expected in (({"webhook-secret": ""}, SECRET), ({"webhook-secret": "a-newer-secret"}, "a-newer-secret"),
                            ({"webhook-secret": "", "webhook-remove-secret": "1"}, None)):
        token, version = page_tokens(admin)
        response = admin.post("/settings/notifications/edit", data={"csrf_token": token, "version": version,
                                                                    **base, **extra})
        assert response.status_code == 303, extra
        assert current_notify(env).channel("hook").secret == expected, extra
    page = admin.get("/settings/notifications").get_data(as_text=True)
    assert "None set." in channel_card(page, "hook") and "a-newer-secret" not in page
    assert not any("a-newer-secret" in detail for _, _, detail in env.audit())


def test_an_invalid_edit_shows_its_error_in_that_channels_form_and_writes_nothing(env, admin):
    before = env.config_text()
    token, version = page_tokens(admin)
    response = admin.post("/settings/notifications/edit", data={
        "csrf_token": token, "version": version, "channel": "phone", "ntfy-url": "https://ntfy.sh/a b",
        "ntfy-priority": "high", "event": ["access_request"]})
    assert response.status_code == 200 and env.config_text() == before
    page = response.get_data(as_text=True)
    card = channel_card(page, "phone")
    assert "must not contain spaces" in card and 'aria-invalid="true"' in card
    assert "<details open>" in card
    assert "must not contain spaces" not in add_form(page) and "must not contain spaces" not in channel_card(page, "hook")


def test_changes_without_a_csrf_token_are_refused_and_write_nothing(env, admin):
    before = env.config_text()
    _, version = page_tokens(admin)
    for path, data in (("/settings/notifications/add", {"name": "x", "type": "ntfy", "ntfy-url": "https://ntfy.sh/x"}),
                       ("/settings/notifications/edit", {"channel": "phone", "event": ["weekly_summary"]}),
                       ("/settings/notifications/remove", {"channel": "phone"})):
        response = admin.post(path, data={"version": version, **data})
        assert response.status_code == 400, path
        assert env.config_text() == before, path


def test_anonymous_changes_lead_to_the_login_and_write_nothing(env):
    before = env.config_text()
    anonymous = env.client()
    for path, data in (("/settings/notifications/add", {"name": "x", "type": "ntfy", "ntfy-url": "https://ntfy.sh/x"}),
                       ("/settings/notifications/edit", {"channel": "phone", "event": ["weekly_summary"]}),
                       ("/settings/notifications/remove", {"channel": "phone"})):
        response = anonymous.post(path, data=data)
        assert response.status_code == 303 and "/login" in response.headers["Location"], path
    assert env.config_text() == before


def test_an_edit_based_on_an_outdated_page_is_refused(env, admin):
    token, version = page_tokens(admin)
    env.config_path.write_text(env.config_text() + "# edited by hand meanwhile\n")
    before = env.config_text()
    for path, data, where in (
            ("/settings/notifications/add", {"name": "x", "type": "ntfy", "ntfy-url": "https://ntfy.sh/x"}, "add"),
            ("/settings/notifications/edit", {"channel": "phone", "event": ["weekly_summary"]}, "phone"),
            ("/settings/notifications/remove", {"channel": "hook"}, "hook")):
        response = admin.post(path, data={"csrf_token": token, "version": version, **data})
        assert response.status_code == 200, path
        page = response.get_data(as_text=True)
        part = add_form(page) if where == "add" else channel_card(page, where)
        assert "changed meanwhile" in part, path
        assert env.config_text() == before, path
    # The page shown again carries the new version: the change can be made now.
    response = admin.post("/settings/notifications/remove", data={"csrf_token": token, "version": version_from(page),
                                                                  "channel": "hook"})
    assert response.status_code == 303 and current_notify(env).channel("hook") is None


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_a_script_in_a_channel_name_or_url_is_refused_or_shown_escaped(env, admin, payload):
    before = env.config_text()
    response = post_add(admin, name=payload, type="ntfy", **{"ntfy-url": "https://ntfy.sh/x", "event": ["new_device"]})
    assert response.status_code == 200 and env.config_text() == before      # not a channel name
    page = response.get_data(as_text=True)
    assert 'id="add-name-error"' in page
    assert_no_raw_payload(page, "/settings/notifications/add")
    assert inline_code(page) == []
    # In a URL: refused (a space) or, where it is a valid URL, written and shown only escaped.
    response = post_add(admin, name="ok-name", type="ntfy", **{"ntfy-url": f"https://ntfy.sh/{payload}"})
    if response.status_code == 200:
        assert 'id="add-ntfy-url-error"' in add_form(response.get_data(as_text=True))
        assert env.config_text() == before
    else:
        assert response.status_code == 303 and current_notify(env).channel("ok-name").url.endswith(payload)
        response = admin.get(response.headers["Location"])
    page = response.get_data(as_text=True)
    assert_no_raw_payload(page, "/settings/notifications")
    assert inline_code(page) == []
    token, version = page_tokens(admin)
    response = admin.post("/settings/notifications/edit", data={
        "csrf_token": token, "version": version, "channel": "phone", "ntfy-url": f"https://ntfy.sh/a {payload}"})
    assert response.status_code == 200 and "must not contain spaces" in channel_card(response.get_data(as_text=True), "phone")
    assert_no_raw_payload(response.get_data(as_text=True), "/settings/notifications/edit")
    assert current_notify(env).channel("phone").url.endswith(URL_TOKEN)


def test_adding_the_first_channel_creates_the_notify_section(tmp_path):
    env = Env(tmp_path, CONFIG_TEXT.format(data_dir=tmp_path / "var"))
    admin = env.logged_in()
    page = admin.get("/settings/notifications").get_data(as_text=True)
    assert "No channel yet" in page
    response = post_add(admin, name="phone", type="ntfy", **{"ntfy-url": "https://ntfy.sh/first",
                                                             "event": ["access_request"]})
    assert response.status_code == 303
    assert current_notify(env).channels_for("access_request") == ("phone",)
    assert env.config_text().startswith(CONFIG_TEXT.format(data_dir=tmp_path / "var"))   # the rest byte for byte
