"""`filterd/family/channels.py`: what a notification says and how it reaches a parent — a webhook
signed with HMAC (`X-Filterd-Signature`), ntfy, e-mail over STARTTLS — against real HTTP and SMTP
servers on 127.0.0.1; a failure is one line that names the server and never a secret."""
from __future__ import annotations

import email.header
import hashlib
import hmac
import json
import smtplib
import socket
import ssl
from zoneinfo import ZoneInfo

import pytest
from conftest import Receiver
from test_notify import ACCESS_PAYLOAD, NTFY_TOKEN, SECRET, SMTP_PASSWORD, make_config, open_db, rows
from test_notify import smtp  # noqa: F401  (a fixture: the SMTP sink)

from filterd.family import channels, notify
from filterd.family.channels import DeliveryError, Message, compose, deliver, describe_error
from filterd.rules.notify_settings import Channel

BASE = "https://filter.home/"
PARIS = ZoneInfo("Europe/Paris")


# ---------------------------------------------------------------- what a notification says


def test_an_access_request_says_who_asks_for_what_why_and_links_to_its_request():
    message = compose("access_request", ACCESS_PAYLOAD, BASE, PARIS)
    assert message.title == "kids-tablet asks for roblox.com"
    assert message.link == "https://filter.home/requests#request-7"
    assert "Blocked because: games are blocked." in message.text
    assert 'Message: "homework is done!"' in message.text and "Asked 2 times." in message.text
    once = compose("access_request", {**ACCESS_PAYLOAD, "asks": 1, "message": ""}, BASE, PARIS)
    assert "Asked" not in once.text and "Message:" not in once.text


def test_a_new_device_message_names_its_address_host_name_and_mac():
    payload = {"client": "192.168.1.41", "mac": "00:1b:63:00:00:02", "hostname": "noah-switch",
               "private_mac": False}
    message = compose("new_device", payload, BASE, PARIS)
    assert message.title == "New device on the network: noah-switch"
    assert "192.168.1.41 (noah-switch), MAC 00:1b:63:00:00:02." in message.text
    assert "private (random)" not in message.text and message.link == "https://filter.home/devices"
    unnamed = compose("new_device", {"client": "192.168.1.42", "mac": None, "hostname": None}, BASE, PARIS)
    assert unnamed.title == "New device on the network: 192.168.1.42"


def test_repeated_attempts_link_to_the_devices_blocked_queries_of_the_last_hour():
    payload = {"device": "kids tablet", "count": 5, "window_minutes": 10, "categories": ["adult"],
               "names": [["pornhub.com", 4], ["xvideos.com", 1]]}
    message = compose("repeated_attempts", payload, BASE, PARIS)
    assert message.title == "kids tablet: 5 blocked attempts (adult)"
    assert "Most tried: pornhub.com (4), xvideos.com (1)." in message.text
    assert message.link == "https://filter.home/log?device=kids+tablet&decision=blocked&since=1h"


def test_a_daemon_problem_is_its_summary_and_detail():
    message = compose("daemon_problem", {"summary": "the filter is not running", "detail": "Restart it."},
                      BASE, PARIS)
    assert (message.title, message.text, message.link) == ("filterd: the filter is not running", "Restart it.",
                                                           BASE)


def test_an_event_without_words_of_its_own_still_says_something():
    message = compose("limit_reached", {"device": "kids-tablet"}, BASE, PARIS)
    assert message.title == "filterd: limit_reached" and json.loads(message.text) == {"device": "kids-tablet"}


# ---------------------------------------------------------------- the webhook's signature


def test_the_signature_is_the_hmac_sha256_of_the_exact_body():
    body = b'{"event": "access_request"}'
    expected = "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert channels.sign("k3y", body) == expected
    assert channels.sign("k3y", body + b" ") != expected
    assert channels.sign("other", body) != expected


def test_a_webhook_without_a_secret_is_sent_unsigned(receiver):
    channel = Channel("hook", "webhook", url=receiver.url())
    deliver(channel, compose("daemon_problem", {"summary": "s", "detail": "d"}, BASE, PARIS), 42, 1000.0)
    [(_, headers, body)] = receiver.received
    assert channels.SIGNATURE_HEADER not in headers
    assert headers["X-Filterd-Delivery"] == "42"
    assert json.loads(body)["id"] == 42 and json.loads(body)["created"] == 1000.0


class Silent:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


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


def test_email_arrives_over_starttls_with_login(tmp_path, smtp):  # noqa: F811
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


def test_email_login_refused_is_recorded_without_the_password(tmp_path, smtp):  # noqa: F811
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


def test_email_without_the_ca_fails_verification(tmp_path, smtp):  # noqa: F811
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


# ---------------------------------------------------------------- errors in one line, without secrets


def test_a_refused_connection_names_the_server_and_port(closed_port):
    channel = Channel("hook", "webhook", url=f"http://127.0.0.1:{closed_port}/x", secret=SECRET)
    with pytest.raises(ConnectionRefusedError) as caught:
        deliver(channel, Message("e", "t", "x", BASE, {}), 1, 0.0)
    assert describe_error(caught.value, channel) == \
        f"127.0.0.1 refused the connection (nothing listening on port {closed_port})"


def test_an_unknown_channel_type_is_a_delivery_error():
    with pytest.raises(DeliveryError, match="unknown channel type pigeon"):
        deliver(Channel("p", "pigeon"), Message("e", "t", "x", BASE, {}), 1, 0.0)


@pytest.mark.parametrize("error", [
    DeliveryError(f"HTTP 401 from example.com for token {NTFY_TOKEN}"),
    OSError(5, f"I/O error near {SECRET}"),
    ValueError(f"odd value {SMTP_PASSWORD}"),
    smtplib.SMTPResponseException(550, f"no, {SMTP_PASSWORD}"),
])
def test_every_secret_of_the_channel_is_blanked_out_of_an_error(error):
    channel = Channel("c", "webhook", url="https://example.com/h", secret=SECRET, token=NTFY_TOKEN,
                      password=SMTP_PASSWORD)
    text = describe_error(error, channel)
    assert SECRET not in text and NTFY_TOKEN not in text and SMTP_PASSWORD not in text
    assert "•••" in text and "\n" not in text


def test_an_error_is_one_line_of_at_most_300_characters():
    channel = Channel("c", "webhook", url="https://example.com/h")
    text = describe_error(DeliveryError("line one\nline two " + "x" * 1000), channel)
    assert text.startswith("line one line two ") and len(text) == 300


@pytest.mark.parametrize("error, words", [
    (TimeoutError(), "no answer from smtp.example.com within 2 s"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS with smtp.example.com failed"),
    (smtplib.SMTPAuthenticationError(535, b"bad"), "smtp.example.com refused the login"),
    (smtplib.SMTPNotSupportedError("STARTTLS"), "does not offer STARTTLS"),
    (smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"no")}), "refused the recipients x@example.com"),
    (smtplib.SMTPResponseException(421, b"busy"), "smtp.example.com answered 421: busy"),
])
def test_email_errors_are_described_in_words_a_parent_can_act_on(error, words):
    channel = Channel("mum", "email", host="smtp.example.com", port=587, timeout_s=2.0)
    assert words in describe_error(error, channel)
