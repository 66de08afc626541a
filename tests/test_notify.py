"""`filterd/family/notify.py`: the persisted outbox — one row per subscribed channel, sent, retried
with back-off, given up — over real HTTP servers on 127.0.0.1 and a real state DB, and the web UI's
worker that delivers it. The helpers and stand-ins here (config writer, SMTP sink) serve the
notification tests of other modules too: the `notify:` section (test_notify_settings.py), the
channels (test_channels.py), the detectors (test_alerts.py).

Time is passed in (`now=`) wherever back-off, windows or weeks matter, so nothing waits on
the clock; where a thread or a process delivers, the test polls with a deadline.
"""
from __future__ import annotations

import email
import email.policy
import http.server
import json
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from conftest import wait_until
from standin import free_port, make_certificate

from filterd.family import channels, notify
from filterd.rules.config import load_config
from filterd.store import state

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


# ---------------------------------------------------------------- config and DB helpers


def write_config(folder: Path, notify_yaml: str) -> Path:
    path = folder / "filterd.yaml"
    path.write_text(BASE_CONFIG.format(data_dir=folder / "var") + notify_yaml)
    return path


def make_config(folder: Path, notify_yaml: str):
    return load_config(write_config(folder, notify_yaml))


def open_db(config):
    return state.connect(state.db_path(config.data_dir))


def rows(db, sql="SELECT channel, attempts, sent, given_up, last_error, next_try FROM notifications ORDER BY id"):
    return db.execute(sql).fetchall()


ACCESS_PAYLOAD = {"request_id": 7, "device": "kids-tablet", "domain": "roblox.com",
                  "reason": "games are blocked", "message": "homework is done!", "asks": 2}


# ---------------------------------------------------------------- links


def test_links_start_with_the_public_url_or_the_filters_own_name_and_port(tmp_path):
    assert notify.public_url(make_config(tmp_path, "")) == "http://filter.home:8080/"   # web.listen's port
    config = make_config(tmp_path, 'notify: {public_url: "https://filter.example.net/parents"}\n')
    assert notify.public_url(config) == "https://filter.example.net/parents/"


# ---------------------------------------------------------------- the outbox


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


# ---------------------------------------------------------------- the web UI's worker


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
