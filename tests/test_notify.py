"""Notifications: the `notify:` config, the persisted outbox and its sender (real HTTP and SMTP
servers on 127.0.0.1), and the detectors that read a real state DB.

Time is passed in (`now=`) wherever back-off, windows or weeks matter, so nothing waits on
the clock; where a thread or a process delivers, the test polls with a deadline.
"""
from __future__ import annotations

import email
import email.header
import email.policy
import hashlib
import hmac
import http.server
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from conftest import Receiver, wait_until
from standin import free_port, make_certificate

from filterd.family import alerts, channels, notify
from filterd.rules import notify_settings
from filterd.store import state
from filterd.store import status as daemon_status
from filterd.rules.config import ConfigError, load_config, parse_config, read_yaml

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hmac-secret-of-the-house"
SMTP_PASSWORD = "smtp-password-never-shown"
NTFY_TOKEN = "tk_ntfy_token_never_shown"

BASE_CONFIG = """\
timezone: Europe/Paris
data_dir: {data_dir}
dns:
  listen: ["127.0.0.1:5353"]
  upstreams: ["udp://127.0.0.1:1"]
web:
  listen: "127.0.0.1:8080"
  address: 192.168.1.2
  hostnames: [filter.home]
profiles:
  kids: {{preset: child}}
  adults: {{preset: adult}}
devices:
  - {{name: kids-tablet, ip: 192.168.1.23, profile: kids}}
  - {{name: emma-phone, ip: 192.168.1.25, profile: kids}}
  - {{name: dad-phone, ip: 192.168.1.24, profile: adults}}
default_profile: adults
"""


# ---------------------------------------------------------------- stand-in receivers


class SmtpSink:
    """aiosmtpd on 127.0.0.1: STARTTLS required before AUTH, one user; records the messages."""

    def __init__(self, folder: Path, user: str = "parent", password: str = SMTP_PASSWORD):
        self.ca, cert, key = make_certificate(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                sink.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == user.encode() and auth_data.password == password.encode()
            if ok:
                sink.logins.append(user)
            return AuthResult(success=ok, handled=False)   # on failure aiosmtpd answers 535

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=True, auth_required=True, auth_require_tls=True,
                                     authenticator=authenticator)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp(tmp_path):
    sink = SmtpSink(tmp_path / "tls")
    yield sink
    sink.stop()


class Silent:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- config and DB helpers


def write_config(folder: Path, notify_yaml: str) -> Path:
    path = folder / "filterd.yaml"
    path.write_text(BASE_CONFIG.format(data_dir=folder / "var") + notify_yaml)
    return path


def make_config(folder: Path, notify_yaml: str):
    return load_config(write_config(folder, notify_yaml))


def open_db(config):
    return state.connect(state.db_path(config.data_dir))


def problems_of(notify_yaml: str, folder: Path) -> list[str]:
    text = BASE_CONFIG.format(data_dir=folder / "var") + notify_yaml
    data, lines = read_yaml(text)
    with pytest.raises(ConfigError) as caught:
        parse_config(data, lines)
    return caught.value.problems


def rows(db, sql="SELECT channel, attempts, sent, given_up, last_error, next_try FROM notifications ORDER BY id"):
    return db.execute(sql).fetchall()


ACCESS_PAYLOAD = {"request_id": 7, "device": "kids-tablet", "domain": "roblox.com",
                  "reason": "games are blocked", "message": "homework is done!", "asks": 2}


# ---------------------------------------------------------------- config


def test_config_errors_name_their_yaml_path(tmp_path):
    problems = problems_of("""
notify:
  public_url: "ftp://filter.home/"
  channels:
    phone: {type: ntfy, url: "ntfy.sh/our-topic", priority: 9}
    hook: {type: webhook, url: "https://user:pass@example.com/hook"}
    mum: {type: email, host: smtp.example.com, from: not-an-address, to: [mum@example.com, oops],
          username: mum}
    pigeon: {type: carrier}
  events:
    access_request: [phone, nobody]
    weekly: [mum]
  repeated_attempts: {count: 0, window_minutes: 2000}
  weekly_summary: {day: someday, time: "18:75"}
""", tmp_path)
    text = "\n".join(problems)
    for expected in ("notify.public_url:", "notify.channels.phone.url:", "notify.channels.phone.priority:",
                     "notify.channels.hook.url:", "notify.channels.mum.from:", "notify.channels.mum.to[1]:",
                     "notify.channels.mum.password:", "notify.channels.pigeon.type:",
                     "notify.events.access_request[1]:", "notify.events.weekly:",
                     "notify.repeated_attempts.count:", "notify.repeated_attempts.window_minutes:",
                     "notify.weekly_summary.day:", "notify.weekly_summary.time:"):
        assert expected in text, expected
    assert all("(line " in p for p in problems if not p.startswith("notify.channels.mum.password"))
    url_problem = next(p for p in problems if p.startswith("notify.channels.hook.url"))
    assert ":pass@" not in url_problem and "https://example.com" in url_problem   # the credentials are not echoed


def test_config_error_never_echoes_a_secret(tmp_path):
    problems = problems_of("""
notify:
  channels:
    hook: {type: webhook, url: "https://example.com/hook", secret: ["s3cr3t-in-a-list"]}
""", tmp_path)
    assert problems == [p for p in problems if "s3cr3t" not in p]
    assert any(p.startswith("notify.channels.hook.secret:") for p in problems)


def test_plain_smtp_with_a_password_is_refused(tmp_path):
    problems = problems_of("""
notify:
  channels:
    mum: {type: email, host: smtp.example.com, security: none, from: a@example.com, to: [b@example.com],
          username: a, password: pw}
""", tmp_path)
    assert any(p.startswith("notify.channels.mum.security:") for p in problems)


def test_valid_config_is_typed_with_defaults(tmp_path):
    config = make_config(tmp_path, f"""
notify:
  channels:
    phone: {{type: ntfy, url: "https://ntfy.sh/our-topic", priority: high, title: Home}}
    hook: {{type: webhook, url: "https://example.com/hook", secret: {SECRET}}}
    mum: {{type: email, host: smtp.example.com, from: filter@example.com, to: mum@example.com,
          username: mum, password: {SMTP_PASSWORD}}}
  events:
    access_request: [phone, hook]
    weekly_summary: [mum]
  repeated_attempts: {{categories: [adult, gambling], count: 3, window_minutes: 5}}
  weekly_summary: {{day: saturday, time: 09:30}}
""")
    notify_config = config.notify
    assert [c.name for c in notify_config.channels] == ["phone", "hook", "mum"]
    assert notify_config.channels_for("access_request") == ("phone", "hook")
    assert notify_config.channels_for("new_device") == ()
    mum = notify_config.channel("mum")
    assert (mum.port, mum.security, mum.recipients) == (587, "starttls", ("mum@example.com",))
    assert notify_config.repeated_attempts == notify_settings.RepeatedAttempts(("adult", "gambling"), 3, 300)
    assert (notify_config.weekly_summary.weekday, notify_config.weekly_summary.minute) == (5, 9 * 60 + 30)
    assert notify.public_url(config) == "http://filter.home:8080/"   # web.listen is on port 8080
    for channel in notify_config.channels:       # secrets stay out of repr (and so out of logs)
        assert SECRET not in repr(channel) and SMTP_PASSWORD not in repr(channel)
    assert make_config(tmp_path, "").notify.channels == ()


# ---------------------------------------------------------------- the outbox and the channels


def test_enqueue_inserts_one_row_per_subscribed_channel(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels:
    a: {type: webhook, url: "http://127.0.0.1:1/"}
    b: {type: ntfy, url: "http://127.0.0.1:1/topic"}
  events: {access_request: [a, b], new_device: [b]}
""")
    db = open_db(config)
    assert notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD, now=1000.0) == 2
    assert notify.enqueue(db, config.notify, "repeated_attempts", {"device": "x"}, now=1000.0) == 0
    assert db.execute("SELECT event, channel, created, next_try, attempts FROM notifications ORDER BY id").fetchall() \
        == [("access_request", "a", 1000.0, 1000.0, 0), ("access_request", "b", 1000.0, 1000.0, 0)]
    assert json.loads(db.execute("SELECT payload FROM notifications").fetchone()[0]) == ACCESS_PAYLOAD
    with pytest.raises(ValueError):
        notify.enqueue(db, config.notify, "no_such_event", {})


def test_webhook_receives_json_with_a_valid_hmac_and_the_request_link(tmp_path, receiver):
    config = make_config(tmp_path, f"""
notify:
  public_url: "https://filter.home"
  channels:
    hook: {{type: webhook, url: "{receiver.url('/filterd?x=1')}", secret: {SECRET}}}
  events: {{access_request: [hook]}}
""")
    db = open_db(config)
    notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD)
    assert notify.send_due(db, config) == 1
    [(path, headers, body)] = receiver.received
    assert path == "/filterd?x=1"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Filterd-Signature"], expected)
    data = json.loads(body)
    assert data["event"] == "access_request" and headers["X-Filterd-Event"] == "access_request"
    assert data["link"] == "https://filter.home/requests#request-7"
    assert data["data"] == ACCESS_PAYLOAD
    assert "homework is done!" in data["text"]
    assert SECRET not in body.decode()
    assert rows(db, "SELECT attempts, sent IS NOT NULL, last_error FROM notifications") == [(1, 1, None)]
    assert notify.send_due(db, config) == 0            # sent once, not again
    assert len(receiver.received) == 1


def test_ntfy_post_has_title_priority_and_click_through_link(tmp_path, receiver):
    config = make_config(tmp_path, f"""
notify:
  channels:
    phone: {{type: ntfy, url: "{receiver.url('/kids-topic')}", priority: urgent, title: Home, token: {NTFY_TOKEN}}}
  events: {{access_request: [phone]}}
""")
    db = open_db(config)
    notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD)
    assert notify.send_due(db, config) == 1
    [(path, headers, body)] = receiver.received
    assert path == "/kids-topic"
    assert headers["Title"] == "Home: kids-tablet asks for roblox.com"
    assert headers["Priority"] == "5"
    assert headers["Click"] == "http://filter.home:8080/requests#request-7"
    assert headers["Authorization"] == f"Bearer {NTFY_TOKEN}"
    assert "homework is done!" in body.decode()


def test_ntfy_title_with_control_characters_and_accents_stays_one_header(tmp_path, receiver):
    config = make_config(tmp_path, f"""
notify:
  channels:
    phone: {{type: ntfy, url: "{receiver.url('/t')}"}}
  events: {{new_device: [phone]}}
""")
    db = open_db(config)
    notify.enqueue(db, config.notify, "new_device", {"client": "192.168.1.77", "mac": None,
                                                     "hostname": "Zoé\r\nX-Evil: 1", "private_mac": False})
    assert notify.send_due(db, config) == 1
    [(_, headers, _)] = receiver.received
    assert "X-Evil" not in headers
    assert headers["Title"].startswith("=?UTF-8?B?")
    assert "Zoé" in str(email.header.make_header(email.header.decode_header(headers["Title"])))


def test_email_arrives_over_starttls_with_login(tmp_path, smtp):
    config = make_config(tmp_path, f"""
notify:
  channels:
    mum: {{type: email, host: 127.0.0.1, port: {smtp.port}, security: starttls, username: parent,
          password: {SMTP_PASSWORD}, from: filter@example.com, to: [mum@example.com, dad@example.com],
          ca_file: "{smtp.ca}"}}
  events: {{access_request: [mum]}}
""")
    db = open_db(config)
    notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD)
    assert notify.send_due(db, config) == 1
    assert smtp.logins == ["parent"]
    [message] = smtp.messages
    assert smtp.envelopes == [("filter@example.com", ["mum@example.com", "dad@example.com"])]
    assert message["Subject"] == "kids-tablet asks for roblox.com"
    text = message.get_body(("plain",)).get_content()
    assert "http://filter.home:8080/requests#request-7" in text and "homework is done!" in text


def test_email_login_refused_is_recorded_without_the_password(tmp_path, smtp):
    config = make_config(tmp_path, f"""
notify:
  channels:
    mum: {{type: email, host: 127.0.0.1, port: {smtp.port}, username: parent, password: wrong-{SMTP_PASSWORD},
          from: filter@example.com, to: [mum@example.com], ca_file: "{smtp.ca}"}}
  events: {{access_request: [mum]}}
""")
    db = open_db(config)
    notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD)
    assert notify.send_due(db, config) == 0
    [(error,)] = rows(db, "SELECT last_error FROM notifications")
    assert "refused the login" in error and SMTP_PASSWORD not in error
    assert notify.send_test(config, "mum") == error


def test_email_without_the_ca_fails_verification(tmp_path, smtp):
    config = make_config(tmp_path, f"""
notify:
  channels:
    mum: {{type: email, host: 127.0.0.1, port: {smtp.port}, username: parent, password: {SMTP_PASSWORD},
          from: filter@example.com, to: [mum@example.com]}}
  events: {{access_request: [mum]}}
""")
    error = notify.send_test(config, "mum")
    assert error is not None and "TLS" in error
    assert smtp.messages == []


def test_failing_channel_backs_off_is_shown_and_others_still_deliver(tmp_path, receiver, closed_port):
    config = make_config(tmp_path, f"""
notify:
  channels:
    good: {{type: webhook, url: "{receiver.url()}"}}
    dead: {{type: webhook, url: "http://127.0.0.1:{closed_port}/hook", timeout: 1}}
  events: {{access_request: [dead, good], new_device: [dead]}}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD, now=t0)
    notify.enqueue(db, config.notify, "new_device", {"client": "192.168.1.9"}, now=t0)
    assert notify.send_due(db, config, now=t0) == 1
    assert len(receiver.received) == 1
    dead = rows(db, "SELECT attempts, next_try, last_error FROM notifications WHERE channel = 'dead' ORDER BY id")
    assert dead[0][0] == 1 and dead[0][1] == t0 + notify.FIRST_RETRY_S
    assert "refused the connection" in dead[0][2]
    assert dead[1][0] == 0 and dead[1][1] == t0 + notify.FIRST_RETRY_S   # the channel rests as a whole
    [problem] = notify.channel_problems(db, t0)
    assert (problem.name, problem.since, problem.queued) == ("dead", t0, 2)
    assert "refused the connection" in problem.last_error

    assert notify.send_due(db, config, now=t0 + 10) == 0       # resting: not tried again yet
    assert rows(db, "SELECT max(attempts) FROM notifications WHERE channel = 'dead'") == [(1,)]
    notify.send_due(db, config, now=t0 + notify.FIRST_RETRY_S)
    [(attempts, next_try)] = rows(db, "SELECT attempts, next_try FROM notifications WHERE id = 1")
    assert (attempts, next_try) == (2, t0 + notify.FIRST_RETRY_S + 2 * notify.FIRST_RETRY_S)   # doubled

    # The receiver comes up on the dead port: the queue drains and the problem clears.
    revived = http.server.ThreadingHTTPServer(("127.0.0.1", closed_port), receiver.server.RequestHandlerClass)
    threading.Thread(target=revived.serve_forever, daemon=True).start()
    try:
        assert notify.send_due(db, config, now=t0 + 1000) == 2
    finally:
        revived.shutdown()
        revived.server_close()
    assert notify.channel_problems(db, t0 + 1000) == []
    assert len(receiver.received) == 3


def test_notification_is_given_up_after_a_day(tmp_path, closed_port):
    config = make_config(tmp_path, f"""
notify:
  channels:
    dead: {{type: webhook, url: "http://127.0.0.1:{closed_port}/hook"}}
  events: {{access_request: [dead]}}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD, now=t0)
    notify.send_due(db, config, now=t0 + notify.GIVE_UP_AFTER_S)
    [(attempts, given_up, error)] = rows(db, "SELECT attempts, given_up, last_error FROM notifications")
    assert attempts == 1 and given_up == t0 + notify.GIVE_UP_AFTER_S and error
    assert notify.send_due(db, config, now=t0 + 2 * notify.GIVE_UP_AFTER_S) == 0
    assert rows(db, "SELECT attempts FROM notifications") == [(1,)]
    assert notify.channel_problems(db)[0].queued == 0


def test_silent_server_times_out_and_does_not_hold_other_channels(tmp_path, receiver):
    silent = Silent()
    try:
        config = make_config(tmp_path, f"""
notify:
  channels:
    silent: {{type: webhook, url: "http://127.0.0.1:{silent.port}/hook", timeout: 1}}
    good: {{type: ntfy, url: "{receiver.url('/topic')}"}}
  events: {{daemon_problem: [silent, good]}}
""")
        db = open_db(config)
        notify.enqueue(db, config.notify, "daemon_problem", {"summary": "test", "detail": "d"})
        assert notify.send_due(db, config) == 1
        assert len(receiver.received) == 1
        [(error,)] = rows(db, "SELECT last_error FROM notifications WHERE channel = 'silent'")
        assert error == "no answer from 127.0.0.1 within 1 s"
    finally:
        silent.close()


def test_http_error_status_is_a_failure(tmp_path):
    server = Receiver(status=503)
    try:
        config = make_config(tmp_path, f"""
notify:
  channels: {{hook: {{type: webhook, url: "{server.url()}"}}}}
  events: {{access_request: [hook]}}
""")
        assert notify.send_test(config, "hook") == "HTTP 503 Service Unavailable from 127.0.0.1"
        assert len(server.received) == 1
    finally:
        server.stop()


def test_channel_removed_from_config_gives_its_rows_up_and_is_no_longer_failing(tmp_path, closed_port):
    config = make_config(tmp_path, f"""
notify:
  channels: {{hook: {{type: webhook, url: "http://127.0.0.1:{closed_port}/"}}}}
  events: {{access_request: [hook]}}
""")
    db = open_db(config)
    notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD, now=1000.0)
    notify.send_due(db, config, now=1000.0)
    assert [p.name for p in notify.channel_problems(db)] == ["hook"]
    config = make_config(tmp_path, "")
    assert notify.send_due(db, config, now=2000.0) == 0
    [(given_up, error)] = rows(db, "SELECT given_up, last_error FROM notifications")
    assert given_up == 2000.0 and "no longer in the config" in error
    assert notify.channel_problems(db) == []


def test_categories_and_profiles_are_checked_when_known(tmp_path):
    from filterd.rules.config import Checker

    data, lines = read_yaml("""
notify:
  repeated_attempts: {categories: [adult, casinos]}
  weekly_summary: {profiles: [kids, grandma]}
""")
    check = Checker(lines)
    parsed = notify_settings.parse_notify_config(data["notify"], check, categories={"adult": 1, "gambling": 2},
                                        profiles={"kids": 1})
    assert [p.split(" (line")[0] for p in check.problems] == [
        'notify.repeated_attempts.categories[1]: "casinos" is not a category id (e.g. adult, gambling; '
        'see config/categories.yaml)',
        'notify.weekly_summary.profiles[1]: "grandma" is not a profile in profiles:']
    assert parsed.repeated_attempts.categories == ("adult",) and parsed.weekly_summary.profiles == ("kids",)


def test_queued_notification_survives_a_restart(tmp_path, receiver):
    """Queued by one process and connection, delivered by a new process."""
    path = write_config(tmp_path, f"""
notify:
  channels: {{hook: {{type: webhook, url: "{receiver.url()}", secret: {SECRET}}}}}
  events: {{access_request: [hook]}}
""")
    config = load_config(path)
    db = open_db(config)
    notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD)
    db.close()
    assert receiver.received == []
    code = ("import sys; from filterd.family import notify; from filterd.store import state; from filterd.rules.config import load_config;"
            "c = load_config(sys.argv[1]); db = state.connect(state.db_path(c.data_dir));"
            "print(notify.send_due(db, c))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    [(_, headers, body)] = receiver.received
    assert json.loads(body)["data"]["request_id"] == 7
    assert headers["X-Filterd-Signature"] == channels.sign(SECRET, body)


def test_send_test_reports_success_or_the_error(tmp_path, receiver, closed_port):
    config = make_config(tmp_path, f"""
notify:
  channels:
    good: {{type: ntfy, url: "{receiver.url('/t')}"}}
    dead: {{type: webhook, url: "http://127.0.0.1:{closed_port}/"}}
""")
    assert notify.send_test(config, "good") is None
    assert receiver.received[0][1]["Title"] == "Test notification from filterd"
    assert "refused the connection" in notify.send_test(config, "dead")
    assert "no channel" in notify.send_test(config, "nope")
    assert rows(open_db(config)) == []        # a test goes around the outbox


# ---------------------------------------------------------------- detectors


def insert_block(db, ts: float, device: str | None = "kids-tablet", name: str = "pornhub.com",
                 category: str = "adult", client: str = "192.168.1.23", action: str = "block") -> None:
    db.execute("INSERT INTO queries (ts, device, client, name, qtype, action, rule, reason, category, rcode,"
               " latency_ms, profile) VALUES (?, ?, ?, ?, 1, ?, 'category', 'test', ?, 0, 1.0, 'kids')",
               (ts, device, client, name, action, category))


def events_of(db, event: str) -> list[dict]:
    return [json.loads(p) for p, in db.execute("SELECT payload FROM notifications WHERE event = ? ORDER BY id",
                                                (event,))]


def test_repeated_attempts_alert_fires_once_per_window(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {repeated_attempts: [hook]}
  repeated_attempts: {categories: [adult], count: 5, window_minutes: 10}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    for i in range(4):
        insert_block(db, t0 + i)
    insert_block(db, t0 + 5, category="gambling", name="poker.com")        # another category: not counted
    insert_block(db, t0 + 6, action="allow", category="adult")             # allowed: not counted
    insert_block(db, t0 + 7, device="dad-phone", client="192.168.1.24")    # another device
    assert alerts.run_detectors(db, config, now=t0 + 10) == 0
    insert_block(db, t0 + 11, name="xvideos.com")
    assert alerts.run_detectors(db, config, now=t0 + 12) == 1
    [alert] = events_of(db, "repeated_attempts")
    assert alert["device"] == "kids-tablet" and alert["count"] == 5 and alert["window_minutes"] == 10
    assert alert["names"][0] == ["pornhub.com", 4]
    for i in range(10):                                                    # more in the same window: quiet
        insert_block(db, t0 + 20 + i)
    assert alerts.run_detectors(db, config, now=t0 + 40) == 0
    assert alerts.run_detectors(db, config, now=t0 + 12 + 599) == 0
    for i in range(5):                                                     # the next window: once more
        insert_block(db, t0 + 700 + i)
    assert alerts.run_detectors(db, config, now=t0 + 12 + 700) == 1
    assert alerts.run_detectors(db, config, now=t0 + 12 + 710) == 0
    assert len(events_of(db, "repeated_attempts")) == 2


def test_repeated_attempts_of_an_unnamed_client_use_its_address(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {repeated_attempts: [hook]}
  repeated_attempts: {categories: [gambling], count: 2, window_minutes: 1}
""")
    db = open_db(config)
    for i in range(2):
        insert_block(db, 1000.0 + i, device=None, client="192.168.1.99", category="gambling", name="bet.com")
    assert alerts.run_detectors(db, config, now=1010.0) == 1
    assert events_of(db, "repeated_attempts")[0]["device"] == "192.168.1.99"


def add_client(db, client: str, mac: str | None, first_seen: float, device: str | None = None,
               hostname: str | None = None) -> None:
    db.execute("INSERT INTO clients_seen (client, mac, device, hostname, first_seen, last_seen, queries)"
               " VALUES (?, ?, ?, ?, ?, ?, 1)", (client, mac, device, hostname, first_seen, first_seen))


def test_new_device_is_announced_once_with_the_private_mac_hint(tmp_path, receiver):
    config = make_config(tmp_path, f"""
notify:
  channels: {{phone: {{type: ntfy, url: "{receiver.url('/t')}"}}}}
  events: {{new_device: [phone]}}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    add_client(db, "192.168.1.40", "00:11:22:33:44:55", t0 - 86400)     # an old device
    assert alerts.run_detectors(db, config, now=t0) == 0                # first round: the starting point
    add_client(db, "192.168.1.41", "3a:bb:cc:dd:ee:01", t0 + 3)          # 2nd hex digit A: private
    add_client(db, "192.168.1.42", "00:1b:63:00:00:02", t0 + 4)          # a vendor (global) address
    add_client(db, "192.168.1.23", "00:1b:63:00:00:03", t0 + 4, device="kids-tablet")   # named already
    assert alerts.run_detectors(db, config, now=t0 + 5) == 2
    assert alerts.run_detectors(db, config, now=t0 + 10) == 0           # once
    announced = {e["client"]: e for e in events_of(db, "new_device")}
    assert set(announced) == {"192.168.1.41", "192.168.1.42"}
    assert announced["192.168.1.41"]["private_mac"] is True
    assert announced["192.168.1.42"]["private_mac"] is False
    # A row committed late (its first query before the last round) is still announced.
    add_client(db, "192.168.1.43", None, t0 + 4.5)
    assert alerts.run_detectors(db, config, now=t0 + 15) == 1
    # The same MAC under a new address is no new device.
    add_client(db, "192.168.1.44", "00:11:22:33:44:55", t0 + 14)
    assert alerts.run_detectors(db, config, now=t0 + 20) == 0
    assert notify.send_due(db, config, now=t0 + 20) == 3
    bodies = {body.decode() for _, _, body in receiver.received}
    hinted = [b for b in bodies if "192.168.1.41" in b]
    assert hinted and "private (random)" in hinted[0]
    assert not any("private (random)" in b for b in bodies if "192.168.1.42" in b)


def test_daemon_problems_are_announced_once_and_again_when_they_return(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {daemon_problem: [hook]}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    status = ("INSERT OR REPLACE INTO daemon_status (pid, worker, started, updated, last_error)"
              " VALUES (4242, 0, ?, ?, ?)")
    db.execute(status, (t0 - 100, t0, None))
    assert alerts.run_detectors(db, config, now=t0, running_since=t0 - 1000) == 0
    error = "profiles.kids.schedules[0].start: \"25:00\" is not a time (line 12)"
    db.execute(status, (t0 - 100, t0 + 5, error))
    assert alerts.run_detectors(db, config, now=t0 + 6, running_since=t0 - 1000) == 1
    assert alerts.run_detectors(db, config, now=t0 + 11, running_since=t0 - 1000) == 0
    [problem] = events_of(db, "daemon_problem")
    assert problem["summary"] == "a change to the rules was refused" and error in problem["detail"]
    db.execute(status, (t0 - 100, t0 + 15, None))                        # fixed…
    assert alerts.run_detectors(db, config, now=t0 + 16, running_since=t0 - 1000) == 0
    db.execute(status, (t0 - 100, t0 + 20, error))                       # …and broken again
    assert alerts.run_detectors(db, config, now=t0 + 21, running_since=t0 - 1000) == 1

    # The daemon stops reporting: announced once it has been quiet for DAEMON_DOWN_S.
    later = t0 + 20 + daemon_status.STALE_S + 1
    assert alerts.run_detectors(db, config, now=later, running_since=t0 - 1000) == 0
    down_at = t0 + 20 + alerts.DAEMON_DOWN_S
    assert alerts.run_detectors(db, config, now=down_at, running_since=t0 - 1000) == 1
    assert events_of(db, "daemon_problem")[-1]["summary"] == "the filter is not running"
    assert alerts.run_detectors(db, config, now=down_at + 5, running_since=t0 - 1000) == 0
    # …but not right after the web UI itself started (the daemon may be starting too).
    db.execute("DELETE FROM notify_marks WHERE key = 'problem:daemon-down'")
    assert alerts.run_detectors(db, config, now=down_at + 10, running_since=down_at) == 0


def test_every_upstream_failing_is_a_daemon_problem_until_one_answers_again(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {daemon_problem: [hook]}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    status = ("INSERT OR REPLACE INTO daemon_status (pid, worker, started, updated, upstreams, upstreams_failing)"
              " VALUES (4242, 0, ?, ?, 2, ?)")
    db.execute(status, (t0 - 100, t0, 1))                   # one of two failing: DNS still works
    assert alerts.run_detectors(db, config, now=t0, running_since=t0 - 1000) == 0
    db.execute(status, (t0 - 100, t0 + 5, 2))
    assert alerts.run_detectors(db, config, now=t0 + 6, running_since=t0 - 1000) == 1
    assert alerts.run_detectors(db, config, now=t0 + 11, running_since=t0 - 1000) == 0
    assert events_of(db, "daemon_problem")[-1]["summary"] == "no upstream resolver answers"


def test_list_that_never_updates_is_a_daemon_problem(tmp_path):
    path = write_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {daemon_problem: [hook]}
lists:
  - {id: remote-adult, url: "https://lists.example.com/adult.txt", category: adult}
""")
    config = load_config(path)
    db = open_db(config)
    assert alerts.run_detectors(db, config, now=time.time()) == 1
    [problem] = events_of(db, "daemon_problem")
    assert problem["problem"] == "list:remote-adult" and "never been downloaded" in problem["detail"]


def test_detectors_without_a_channel_do_nothing(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {access_request: [hook]}
""")
    db = open_db(config)
    for i in range(10):
        insert_block(db, 1000.0 + i)
    add_client(db, "192.168.1.41", "3a:bb:cc:dd:ee:01", 1000.0)
    assert alerts.run_detectors(db, config, now=1010.0) == 0
    assert db.execute("SELECT count(*) FROM notify_marks").fetchone()[0] == 0


def test_worker_thread_delivers_within_a_round(tmp_path, receiver):
    """The web UI's worker (webui.notifications) delivers what a request queued."""
    from webui import create_app
    from webui.notifications import start_worker

    path = write_config(tmp_path, f"""
notify:
  channels: {{hook: {{type: webhook, url: "{receiver.url()}"}}}}
  events: {{access_request: [hook]}}
""")
    app = create_app(path, testing=True)
    config = load_config(path)
    worker = start_worker(app, config, interval_s=0.05)
    try:
        assert start_worker(app, config) is worker                    # one worker per app
        db = open_db(config)
        notify.enqueue(db, config.notify, "access_request", ACCESS_PAYLOAD)
        wait_until(lambda: receiver.received, timeout=10, message="the worker to deliver")
        # The config is re-read each round: a channel added later is used.
        path.write_text(path.read_text().replace("access_request: [hook]", "access_request: [hook, second]")
                        .replace("channels: {hook:", f"channels: {{second: {{type: ntfy, url: \"{receiver.url('/n')}\"}}, hook:"))
        wait_until(lambda: "second" in [c.name for c in app.extensions["filterd"].config().notify.channels],
                   timeout=10, message="the new config")
        notify.enqueue(db, app.extensions["filterd"].config().notify, "access_request", ACCESS_PAYLOAD)
        wait_until(lambda: any(p == "/n" for p, _, _ in receiver.received), timeout=10,
                   message="the new channel to receive")
    finally:
        worker.stop()
