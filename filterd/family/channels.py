"""What a notification says, and how it reaches a parent over each kind of channel.

`notify.py` keeps the outbox (what is queued, when to retry); this module is the part that
talks to the outside: it turns an event into a `Message` and delivers it by webhook (signed
with HMAC), ntfy or e-mail. Each delivery is one try with a short timeout; a failure is raised
and described in one line without secrets, and the outbox decides what happens next.

Secrets (the webhook's HMAC secret, the ntfy token, the SMTP password) are never logged,
never stored in an error text and never shown by a page.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import sys
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

from filterd.rules.notify_settings import NTFY_PRIORITIES, Channel

# http.client, smtplib and email are imported where a message is sent.

SIGNATURE_HEADER = "X-Filterd-Signature"
MAX_RESPONSE_BYTES = 64 * 1024


# ---------------------------------------------------------------- what a notification says


@dataclass(frozen=True)
class Message:
    event: str
    title: str
    text: str
    link: str
    data: dict
    html: str | None = None
    tags: str = ""


def compose(event: str, payload: dict, base: str, tz: ZoneInfo) -> Message:
    """Title, text and link of one event, in words a parent reads on a lock screen.

    `base` is the web UI's address the links start with (`notify.public_url`), `tz` the house's.
    """
    if event == "access_request" and payload.get("summary"):   # the rate limit's summary (access_requests)
        more = int(payload.get("more") or 0)
        title = f"{more} more request{'s' if more != 1 else ''} for access"
        lines = [f"{title} since the last notification; the latest: {payload.get('device')} asks to open "
                 f"{payload.get('domain')}.", "Open the requests page to answer them (you will be asked to log in)."]
        return Message(event, title, "\n".join(lines), f"{base}requests", payload, tags="raising_hand")
    if event == "access_request":
        request_id = int(payload.get("request_id") or 0)
        asks = int(payload.get("asks") or 1)
        message = str(payload.get("message") or "")
        lines = [f"{payload.get('device')} asks to open {payload.get('domain')}.",
                 f"Blocked because: {payload.get('reason')}."]
        if message:
            lines.append(f'Message: "{message}"')
        if asks > 1:
            lines.append(f"Asked {asks} times.")
        lines.append("Open the requests page to answer (you will be asked to log in).")
        return Message(event, f"{payload.get('device')} asks for {payload.get('domain')}", "\n".join(lines),
                       f"{base}requests#request-{request_id}", payload, tags="raising_hand")
    if event == "new_device":
        name = payload.get("hostname") or payload.get("client")
        lines = [f"A device not seen before asked for names: {payload.get('client')}"
                 + (f" ({payload.get('hostname')})" if payload.get("hostname") else "")
                 + (f", MAC {payload.get('mac')}" if payload.get("mac") else "") + "."]
        if payload.get("private_mac"):
            lines.append("Its MAC address is a private (random) one: it is probably a phone, tablet or laptop "
                         "with \"private Wi-Fi address\" on, possibly one you know under a new address.")
        lines.append("It gets the default profile until you name it.")
        return Message(event, f"New device on the network: {name}", "\n".join(lines), f"{base}devices",
                       payload, tags="new")
    if event == "repeated_attempts":
        names = ", ".join(f"{n} ({c})" for n, c in payload.get("names") or [])
        categories = ", ".join(payload.get("categories") or [])
        lines = [f"{payload.get('device')} was blocked {payload.get('count')} times in "
                 f"{payload.get('window_minutes')} minutes ({categories})."]
        if names:
            lines.append(f"Most tried: {names}.")
        link = f"{base}log?" + urlencode({"device": payload.get("device") or "", "decision": "blocked",
                                          "since": "1h"})
        return Message(event, f"{payload.get('device')}: {payload.get('count')} blocked attempts ({categories})",
                       "\n".join(lines), link, payload, tags="warning")
    if event == "daemon_problem":
        return Message(event, f"filterd: {payload.get('summary')}", str(payload.get("detail") or ""), base,
                       payload, tags="rotating_light")
    if event == "limit_spent":
        who = payload.get("subject")
        if payload.get("subject_kind") == "profile":
            who = f"profile {who}"
        resets = payload.get("resets_at")
        back = f" It opens again at {datetime.fromtimestamp(float(resets), tz):%H:%M}." if resets else ""
        lines = [f"{who} has used today's {payload.get('minutes')} minutes of {payload.get('limit')}.{back}",
                 "You can add time for today on the device's page."]
        link = f"{base}devices/{quote(str(payload.get('subject') or ''), safe='')}#limits" \
            if payload.get("subject_kind") == "device" else f"{base}devices"
        return Message(event, f"{who}: {payload.get('limit')} limit used up", "\n".join(lines), link, payload,
                       tags="hourglass")
    if event == "weekly_summary":
        from filterd.family import summary
        link = f"{base}summary/{quote(str(payload.get('profile') or ''), safe='')}"
        return Message(event, f"Weekly summary for {payload.get('profile')}", summary.render_text(payload, tz),
                       link, payload, html=summary.render_html(payload, link, tz), tags="bar_chart")
    return Message(event, f"filterd: {event}", json.dumps(payload, sort_keys=True), base, payload)


# ---------------------------------------------------------------- sending, per channel type


class DeliveryError(Exception):
    """A channel refused or could not be reached; the text is one line, without secrets."""


def deliver(channel: Channel, message: Message, delivery_id: int, created: float) -> None:
    """Send one message over one channel now; raise on any failure."""
    if channel.type == "webhook":
        _send_webhook(channel, message, delivery_id, created)
    elif channel.type == "ntfy":
        _send_ntfy(channel, message)
    elif channel.type == "email":
        _send_email(channel, message)
    else:
        raise DeliveryError(f"unknown channel type {channel.type}")


def webhook_body(message: Message, delivery_id: int, created: float) -> bytes:
    """The webhook's JSON (documented in docs/notifications.md)."""
    return json.dumps({"id": delivery_id, "event": message.event, "created": created, "title": message.title,
                       "text": message.text, "link": message.link, "data": message.data},
                      sort_keys=True, default=str).encode()


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: sha256=<hex HMAC-SHA256 of the exact body, keyed by the secret>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _send_webhook(channel: Channel, message: Message, delivery_id: int, created: float) -> None:
    body = webhook_body(message, delivery_id, created)
    headers = {"Content-Type": "application/json", "X-Filterd-Event": message.event,
               "X-Filterd-Delivery": str(delivery_id)}
    if channel.secret:
        headers[SIGNATURE_HEADER] = sign(channel.secret, body)
    _post(channel, body, headers)


def _send_ntfy(channel: Channel, message: Message) -> None:
    title = f"{channel.title}: {message.title}" if channel.title else message.title
    body = message.text if message.event != "weekly_summary" else message.text[:3000]
    headers = {"Title": _header_value(title), "Priority": str(NTFY_PRIORITIES[channel.priority]),
               "Click": message.link, "Content-Type": "text/plain; charset=utf-8"}
    if message.tags:
        headers["Tags"] = message.tags
    if channel.token:
        headers["Authorization"] = f"Bearer {channel.token}"
    _post(channel, body.encode(), headers)


def _header_value(text: str) -> str:
    """One header line: no control characters (a device's hostname is the child's to choose);
    non-ASCII as an RFC 2047 encoded word, which ntfy decodes."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())[:250]
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def _post(channel: Channel, body: bytes, headers: dict[str, str]) -> None:
    import http.client

    parts = urlsplit(channel.url or "")
    host, port = parts.hostname, parts.port
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"User-Agent": "filterd (home DNS filter; notifications)", **headers}
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=channel.ca_file)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=channel.timeout_s,
                                                                       context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=channel.timeout_s)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        if not 200 <= response.status < 300:
            raise DeliveryError(f"HTTP {response.status} {response.reason} from {parts.hostname}")
    finally:
        conn.close()


def _send_email(channel: Channel, message: Message) -> None:
    import smtplib
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    mail = EmailMessage()
    mail["Subject"] = " ".join("".join(c if c.isprintable() else " " for c in message.title).split())[:200]
    mail["From"] = channel.sender
    mail["To"] = ", ".join(channel.recipients)
    mail["Date"] = formatdate(localtime=True)
    mail["Message-ID"] = make_msgid(domain=channel.sender.rsplit("@", 1)[-1])
    mail.set_content(f"{message.text}\n\n{message.link}\n")
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    context = ssl.create_default_context(cafile=channel.ca_file)
    if channel.security == "tls":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(channel.host, channel.port, timeout=channel.timeout_s, context=context)
    else:
        smtp = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s)
    try:
        smtp.ehlo()
        if channel.security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if channel.username:
            smtp.login(channel.username, channel.password or "")
        smtp.send_message(mail)
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def describe_error(exc: BaseException, channel: Channel) -> str:
    """One line for the dashboard and the log, with every secret of the channel blanked out."""
    where = channel.host if channel.type == "email" else urlsplit(channel.url or "").hostname
    smtplib = sys.modules.get("smtplib")     # not imported: the error cannot be an SMTP one
    if isinstance(exc, DeliveryError):
        text = str(exc)
    elif isinstance(exc, (socket.timeout, TimeoutError)):
        text = f"no answer from {where} within {channel.timeout_s:g} s"
    elif isinstance(exc, ConnectionRefusedError):
        text = f"{where} refused the connection (nothing listening on port " \
               f"{channel.port if channel.type == 'email' else urlsplit(channel.url or '').port or ''})"
    elif isinstance(exc, socket.gaierror):
        text = f"cannot find the server {where} (DNS: {exc.strerror})"
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS with {where} failed: {getattr(exc, 'reason', None) or exc}"
    elif smtplib and isinstance(exc, smtplib.SMTPAuthenticationError):
        text = f"{where} refused the login (check username and password)"
    elif smtplib and isinstance(exc, smtplib.SMTPNotSupportedError):
        text = f"{where} does not offer STARTTLS: set security to tls or none"
    elif smtplib and isinstance(exc, smtplib.SMTPResponseException):
        text = f"{where} answered {exc.smtp_code}: {exc.smtp_error.decode(errors='replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
    elif smtplib and isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = f"{where} refused the recipients {', '.join(exc.recipients)}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"network error with {where}: {exc.strerror}"
    else:
        text = f"{type(exc).__name__} with {where}: {exc}"
    text = " ".join(text.split())[:300]
    for secret in channel.secrets():
        text = text.replace(secret, "•••")
    return text
