"""Notifications for parents: channels (webhook, ntfy, e-mail), the persisted outbox, the
sender, and the detectors that turn the state DB into events.

Nothing here runs on a hot path. The web UI (or a detector) calls `enqueue`, which only
inserts rows into the `notifications` table: a request never waits for a network. The web
UI's background worker calls `run_detectors` and `send_due` every few seconds; each channel
is sent to from its own thread with a short timeout, so a dead SMTP server or webhook holds
up neither the other channels nor anything else. Rows stay in the table until sent or given
up on, so a restart of either process loses no notification.

Secrets (the webhook's HMAC secret, the ntfy token, the SMTP password) live only in the
config: they are never logged, never stored in an error text and never shown by a page.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import logging
import re
import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

log = logging.getLogger("filterd.notify")

EVENTS = ("access_request", "new_device", "repeated_attempts", "daemon_problem", "weekly_summary")
CHANNEL_TYPES = ("webhook", "ntfy", "email")
EMAIL_SECURITY = ("starttls", "tls", "none")
NTFY_PRIORITIES = {"min": 1, "low": 2, "default": 3, "high": 4, "urgent": 5, "max": 5}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SIGNATURE_HEADER = "X-Filterd-Signature"
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
_EMAIL = re.compile(r"[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+")
_TIME = re.compile(r"([01]?\d|2[0-3]):[0-5]\d")

# The outbox: a failed message waits 30 s, then twice as long each time, at most an hour;
# after MAX_ATTEMPTS tries or a day it is given up (the dashboard shows the channel failing).
FIRST_RETRY_S = 30.0
MAX_RETRY_S = 3600.0
MAX_ATTEMPTS = 12
GIVE_UP_AFTER_S = 86400.0
BATCH_PER_CHANNEL = 20
MAX_DUE_PER_ROUND = 500
KEEP_DONE_S = 30 * 86400.0           # sent and given-up rows kept this long (for the history)
DEFAULT_TIMEOUT_S = 5.0
MAX_RESPONSE_BYTES = 64 * 1024

# Detectors
DEVICE_LAG_S = 120.0                 # the query log commits a second or more after a device's first query
DAEMON_STALE_S = 30.0                # as the dashboard: no status row newer than this and the daemon is down…
DAEMON_DOWN_S = 120.0                # …but only announced once it has been down this long
LIST_STALE_S = 8 * 86400.0           # as the dashboard: a downloaded list this old means its updates fail
WEEKLY_LATE_S = 86400.0              # a weekly summary not sent within a day of its time is skipped


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class Channel:
    """One place to send notifications to. Secrets are kept out of repr() (and so out of logs)."""

    name: str
    type: str                              # webhook | ntfy | email
    url: str | None = None                 # webhook, ntfy: the URL to POST to (http/https)
    secret: str | None = field(default=None, repr=False)     # webhook: HMAC-SHA256 key
    token: str | None = field(default=None, repr=False)      # ntfy: access token (Bearer)
    priority: str = "default"              # ntfy: min | low | default | high | urgent
    title: str | None = None               # ntfy: put before each notification's title
    host: str | None = None                # email: SMTP server
    port: int = 0
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str | None = None              # email: From
    recipients: tuple[str, ...] = ()       # email: To
    ca_file: str | None = None             # a PEM bundle to verify the server with (else the system's)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def target(self) -> str:
        """Where it goes, for a page: scheme and host only (a URL's path can hold a token)."""
        if self.type == "email":
            return f"{', '.join(self.recipients)} via {self.host}:{self.port}"
        parts = urlsplit(self.url or "")
        return f"{parts.scheme}://{parts.netloc}/…"

    def secrets(self) -> list[str]:
        return [s for s in (self.secret, self.token, self.password) if s]


@dataclass(frozen=True)
class RepeatedAttempts:
    """Alert when a device is blocked `count` times in `categories` within `window_s` (once a window)."""

    categories: tuple[str, ...] = ("adult",)
    count: int = 5
    window_s: int = 600


@dataclass(frozen=True)
class WeeklySummary:
    """When the weekly summary goes out (house time zone), and for which profiles."""

    weekday: int = 6                       # 0 = Monday … 6 = Sunday
    minute: int = 18 * 60                  # minutes after local midnight
    profiles: tuple[str, ...] | None = None   # None: every profile with a named device


@dataclass(frozen=True)
class NotifyConfig:
    channels: tuple[Channel, ...] = ()
    events: dict | None = None             # event → tuple of channel names
    public_url: str | None = None          # None: http://<first web.hostnames>/
    repeated_attempts: RepeatedAttempts = field(default_factory=RepeatedAttempts)
    weekly_summary: WeeklySummary = field(default_factory=WeeklySummary)

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    def channels_for(self, event: str) -> tuple[str, ...]:
        return tuple((self.events or {}).get(event, ()))


def parse_notify_config(data, check, categories=None, profiles=None) -> NotifyConfig:
    """The `notify:` section; every problem is reported with its YAML path.

    With `categories` (the catalog's) and `profiles` (the config's), the category ids of
    repeated_attempts and the profiles of weekly_summary are checked to exist too.
    """
    if data is None:
        return NotifyConfig()
    data = check.mapping(data, "notify", {"channels", "events", "public_url", "repeated_attempts",
                                          "weekly_summary"})
    channels = []
    raw_channels = data.get("channels")
    if raw_channels is not None and not isinstance(raw_channels, dict):
        check.error("notify.channels", "must be a mapping of channel names to their settings")
        raw_channels = {}
    for name, settings in (raw_channels or {}).items():
        path = f"notify.channels.{name}"
        if not isinstance(name, str) or not _CHANNEL_NAME.fullmatch(name):
            check.error(path, "a channel name is 1-40 letters, digits, '-', '_' or '.'")
            continue
        channel = _parse_channel(name, settings, path, check)
        if channel is not None:
            channels.append(channel)
    names = {c.name for c in channels} | set(raw_channels or {})
    events: dict[str, tuple[str, ...]] = {}
    raw_events = check.mapping(data.get("events"), "notify.events", set(EVENTS))
    for event in EVENTS:
        if event not in raw_events:
            continue
        chosen = []
        for item_path, text in check.string_list(raw_events, event, "notify.events", []):
            if text not in names:
                check.error(item_path, f'"{text}" is not a channel in notify.channels'
                            + (f" (there: {', '.join(sorted(map(str, names)))})" if names else ""))
            else:
                chosen.append(text)
        events[event] = tuple(dict.fromkeys(chosen))
    public_url = data.get("public_url")
    if public_url is not None:
        problem = _url_problem(public_url)
        if problem:
            check.error("notify.public_url", problem)
            public_url = None
        else:
            public_url = public_url.rstrip("/") + "/"
    return NotifyConfig(channels=tuple(channels), events=events, public_url=public_url,
                        repeated_attempts=_parse_repeated(data.get("repeated_attempts"), check, categories),
                        weekly_summary=_parse_weekly(data.get("weekly_summary"), check, profiles))


_CHANNEL_KEYS = {
    "webhook": {"type", "url", "secret", "timeout", "ca_file"},
    "ntfy": {"type", "url", "token", "priority", "title", "timeout", "ca_file"},
    "email": {"type", "host", "port", "security", "username", "password", "from", "to", "timeout", "ca_file"},
}


def _parse_channel(name: str, settings, path: str, check) -> Channel | None:
    if not isinstance(settings, dict):
        check.error(path, "must be a mapping with a type (webhook, ntfy or email) and its settings")
        return None
    kind = settings.get("type")
    if kind not in CHANNEL_TYPES:
        check.error(f"{path}.type", f"{_show(kind)} must be one of {', '.join(CHANNEL_TYPES)}")
        return None
    check.mapping(settings, path, _CHANNEL_KEYS[kind])
    common: dict[str, Any] = {
        "timeout_s": check.number(settings, "timeout", path, DEFAULT_TIMEOUT_S, 0.5, 30),
        "ca_file": _optional_text(settings, "ca_file", path, check),
    }
    if common["ca_file"] is not None:
        import os
        if not os.path.isfile(common["ca_file"]):
            check.error(f"{path}.ca_file", f'"{common["ca_file"]}" is not a readable file')
    if kind in ("webhook", "ntfy"):
        url = settings.get("url")
        problem = _url_problem(url)
        if problem:
            check.error(f"{path}.url", problem)
        if kind == "webhook":
            return Channel(name, kind, url=url, secret=_optional_text(settings, "secret", path, check), **common)
        priority = settings.get("priority", "default")
        if isinstance(priority, int) and not isinstance(priority, bool) and 1 <= priority <= 5:
            priority = next(k for k, v in NTFY_PRIORITIES.items() if v == priority)
        if priority not in NTFY_PRIORITIES:
            check.error(f"{path}.priority", f"{_show(priority)} must be 1-5 or one of "
                        "min, low, default, high, urgent")
            priority = "default"
        return Channel(name, kind, url=url, token=_optional_text(settings, "token", path, check),
                       priority=priority, title=_optional_text(settings, "title", path, check), **common)
    host = settings.get("host")
    if not isinstance(host, str) or not host.strip() or any(c.isspace() or c in "/@" for c in host.strip()):
        check.error(f"{path}.host", f"{_show(host)} must be the SMTP server's name or address")
        host = ""
    security = settings.get("security", "starttls")
    if security not in EMAIL_SECURITY:
        check.error(f"{path}.security", f"{_show(security)} must be one of {', '.join(EMAIL_SECURITY)}")
        security = "starttls"
    port = check.integer(settings, "port", path, {"starttls": 587, "tls": 465, "none": 25}[security], 1, 65535)
    username = _optional_text(settings, "username", path, check)
    password = _optional_text(settings, "password", path, check)
    if (username is None) != (password is None):
        check.error(f"{path}.{'password' if username else 'username'}",
                    "username and password go together (leave both out for no login)")
    if password is not None and security == "none":
        check.error(f"{path}.security", '"none" would send the password in clear: use starttls or tls')
    sender = settings.get("from")
    if not isinstance(sender, str) or not _EMAIL.fullmatch(sender.strip()):
        check.error(f"{path}.from", f"{_show(sender)} is not an e-mail address")
        sender = ""
    recipients = []
    for item_path, text in check.string_list(settings, "to", path, []):
        if _EMAIL.fullmatch(text.strip()):
            recipients.append(text.strip())
        else:
            check.error(item_path, f'"{text}" is not an e-mail address')
    if not recipients and "to" not in settings:
        check.error(f"{path}.to", "needs at least one address to send to")
    return Channel(name, kind, host=host.strip(), port=port, security=security, username=username,
                   password=password, sender=sender.strip(), recipients=tuple(recipients), **common)


def _parse_repeated(data, check, known_categories=None) -> RepeatedAttempts:
    path = "notify.repeated_attempts"
    data = check.mapping(data, path, {"categories", "count", "window_minutes"})
    categories = []
    for item_path, text in check.string_list(data, "categories", path, ["adult"]):
        if not re.fullmatch(r"[a-z0-9_]+", text) or (known_categories is not None and text not in known_categories):
            check.error(item_path, f'"{text}" is not a category id (e.g. adult, gambling; see config/categories.yaml)')
        else:
            categories.append(text)
    return RepeatedAttempts(categories=tuple(dict.fromkeys(categories)),
                            count=check.integer(data, "count", path, 5, 1, 10_000),
                            window_s=60 * check.integer(data, "window_minutes", path, 10, 1, 1440))


def _parse_weekly(data, check, known_profiles=None) -> WeeklySummary:
    path = "notify.weekly_summary"
    data = check.mapping(data, path, {"day", "time", "profiles"})
    day = str(data.get("day", "sun")).strip().lower()
    day = {full: short for short, full in zip(DAYS, DAY_NAMES)}.get(day, day)
    if day not in DAYS:
        check.error(f"{path}.day", f"{_show(data.get('day'))} is not a day (write e.g. sunday or sun)")
        day = "sun"
    text = data.get("time", "18:00")
    if isinstance(text, int) and not isinstance(text, bool):
        text = f"{text // 60:02d}:{text % 60:02d}"      # YAML 1.1 reads 18:00 as 1080
    if not isinstance(text, str) or not _TIME.fullmatch(text.strip()):
        check.error(f"{path}.time", f'{_show(text)} is not a time (write HH:MM, e.g. "18:00")')
        text = "18:00"
    hours, minutes = text.strip().split(":")
    profiles = None
    if "profiles" in data:
        chosen = []
        for item_path, text in check.string_list(data, "profiles", path, []):
            if known_profiles is not None and text not in known_profiles:
                check.error(item_path, f'"{text}" is not a profile in profiles:')
            else:
                chosen.append(text)
        profiles = tuple(dict.fromkeys(chosen))
    return WeeklySummary(weekday=DAYS.index(day), minute=int(hours) * 60 + int(minutes), profiles=profiles)


def _url_problem(url) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return f"{_show(url)} must be an http:// or https:// URL"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        return f'"{url}" must start with http:// or https://'
    try:
        parts.port
    except ValueError:
        return f'"{url}" has an invalid port'
    if not parts.hostname:
        return f'"{url}" has no host'
    if parts.username is not None or parts.password is not None:
        return (f"{parts.scheme}://{parts.hostname}/…: no user or password in the URL (pages and logs would "
                "show it); use token (ntfy) or secret (webhook)")
    if any(ord(c) < 0x21 for c in url.strip()):
        return f"{_show(url)} must not contain spaces or control characters"
    return None


def _optional_text(data: dict, key: str, path: str, check) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        check.error(f"{path}.{key}", "must be a text" if key not in ("secret", "token", "password")
                    else "must be a non-empty text")   # never echo a secret back
        return None
    return value


def _show(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def public_url(config) -> str:
    """The web UI's address for links: `notify.public_url`, else http://<first hostname>/."""
    notify = config.notify or NotifyConfig()
    if notify.public_url:
        return notify.public_url
    web = config.rules.web
    host = web.hostnames[0] if web.hostnames else (web.address or web.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}/" if web.port == 80 else f"http://{host}:{web.port}/"


# ---------------------------------------------------------------- the outbox


def enqueue(db, notify_config: NotifyConfig | None, event: str, payload: dict, now: float | None = None) -> int:
    """Queue `event` for every channel subscribed to it; returns how many rows were queued.

    Only an INSERT: the caller (a web request, a detector) never waits for a network.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}")
    channels = notify_config.channels_for(event) if notify_config else ()
    if not channels:
        return 0
    now = time.time() if now is None else now
    body = json.dumps(payload, sort_keys=True, default=str)
    db.executemany("INSERT INTO notifications (event, channel, payload, created, next_try) VALUES (?, ?, ?, ?, ?)",
                   [(event, name, body, now, now) for name in channels])
    return len(channels)


def retry_delay_s(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed try: 30, 60, 120 … at most an hour."""
    return min(FIRST_RETRY_S * 2 ** max(attempts - 1, 0), MAX_RETRY_S)


@dataclass(frozen=True)
class Outgoing:
    id: int
    event: str
    channel: str
    payload: dict
    created: float
    attempts: int


def send_due(db, config, now: float | None = None) -> int:
    """Send every queued notification whose time has come; returns how many were sent.

    Channels are sent to in parallel, one thread each, rows of one channel in order. When a
    channel fails, its other due rows wait with the failed one (the channel rests), so a dead
    server costs one timeout per round, not one per queued message.
    """
    now = time.time() if now is None else now
    notify = config.notify or NotifyConfig()
    rows = db.execute(
        "SELECT id, event, channel, payload, created, attempts FROM notifications"
        " WHERE sent IS NULL AND given_up IS NULL AND next_try <= ? ORDER BY id LIMIT ?",
        (now, MAX_DUE_PER_ROUND)).fetchall()
    by_channel: dict[str, list[Outgoing]] = {}
    for row_id, event, channel, payload, created, attempts in rows:
        try:
            data = json.loads(payload)
        except ValueError:
            data = {}
        by_channel.setdefault(channel, []).append(Outgoing(row_id, event, channel, data, created, attempts))
    sent = 0
    work = {}
    for name, items in by_channel.items():
        channel = notify.channel(name)
        if channel is None:
            db.executemany("UPDATE notifications SET given_up = ?, last_error = ? WHERE id = ?",
                           [(now, f"channel {name} is no longer in the config", o.id) for o in items])
            continue
        work[name] = (channel, items[:BATCH_PER_CHANNEL])
    if work:
        with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="notify-send") as pool:
            futures = {pool.submit(_send_channel, channel, items, config): name
                       for name, (channel, items) in work.items()}
            for future in as_completed(futures):
                name = futures[future]
                channel, items = work[name]
                results = future.result()
                sent += _record(db, channel, items, results, now)
    for key, in db.execute("SELECT key FROM notify_marks WHERE key >= 'channel-failing:'"
                           " AND key < 'channel-failing;'").fetchall():
        if notify.channel(key.split(":", 1)[1]) is None:    # removed from the config: no longer "failing"
            db.execute("DELETE FROM notify_marks WHERE key = ?", (key,))
    _prune(db, now)
    return sent


def _send_channel(channel: Channel, items: list[Outgoing], config) -> list[str | None]:
    """Send items in order until one fails; the error texts (None = sent), one per tried item."""
    results: list[str | None] = []
    for item in items:
        try:
            message = compose(item.event, item.payload, config)
            deliver(channel, message, item.id, item.created)
            results.append(None)
        except Exception as exc:   # any failure is the channel's: record it, retry later
            results.append(describe_error(exc, channel))
            break
    return results


def _record(db, channel: Channel, items: list[Outgoing], results: list[str | None], now: float) -> int:
    """Write what one channel's round did: sent rows, a failed row's back-off, the channel's state."""
    sent = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for item, error in zip(items, results):
            if error is None:
                sent += 1
                db.execute("UPDATE notifications SET sent = ?, attempts = attempts + 1, last_error = NULL"
                           " WHERE id = ?", (now, item.id))
                continue
            attempts = item.attempts + 1
            if attempts >= MAX_ATTEMPTS or now - item.created >= GIVE_UP_AFTER_S:
                db.execute("UPDATE notifications SET attempts = ?, given_up = ?, last_error = ? WHERE id = ?",
                           (attempts, now, error, item.id))
                log.warning("notification %d to %s given up after %d tries: %s", item.id, channel.name,
                            attempts, error)
            else:
                next_try = now + retry_delay_s(attempts)
                db.execute("UPDATE notifications SET attempts = ?, next_try = ?, last_error = ? WHERE id = ?",
                           (attempts, next_try, error, item.id))
                # The channel rests: its other due rows wait as long as the failed one.
                db.execute("UPDATE notifications SET next_try = ? WHERE channel = ? AND sent IS NULL"
                           " AND given_up IS NULL AND next_try < ? AND id != ?",
                           (next_try, channel.name, next_try, item.id))
                log.info("notification %d to %s failed (try %d), next in %.0f s: %s", item.id, channel.name,
                         attempts, next_try - now, error)
            db.execute("INSERT OR IGNORE INTO notify_marks (key, ts) VALUES (?, ?)",
                       (f"channel-failing:{channel.name}", now))
        if results and results[-1] is None:
            db.execute("DELETE FROM notify_marks WHERE key = ?", (f"channel-failing:{channel.name}",))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return sent


def _prune(db, now: float) -> None:
    db.execute("DELETE FROM notifications WHERE (sent IS NOT NULL AND sent < ?) OR (given_up IS NOT NULL"
                " AND given_up < ?)", (now - KEEP_DONE_S, now - KEEP_DONE_S))


@dataclass(frozen=True)
class ChannelProblem:
    name: str
    last_error: str | None
    since: float
    queued: int


def channel_problems(db, now: float | None = None) -> list[ChannelProblem]:
    """Channels whose latest attempt failed: since when, the last error, messages still queued."""
    problems = []
    for key, since in db.execute("SELECT key, ts FROM notify_marks WHERE key >= 'channel-failing:'"
                                 " AND key < 'channel-failing;' ORDER BY key").fetchall():
        name = key.split(":", 1)[1]
        error = db.execute("SELECT last_error FROM notifications WHERE channel = ? AND last_error IS NOT NULL"
                           " ORDER BY coalesce(given_up, next_try) DESC, id DESC LIMIT 1", (name,)).fetchone()
        queued = db.execute("SELECT count(*) FROM notifications WHERE channel = ? AND sent IS NULL"
                            " AND given_up IS NULL", (name,)).fetchone()[0]
        problems.append(ChannelProblem(name, error[0] if error else None, since, queued))
    return problems


def channel_activity(db, name: str) -> dict:
    """For the settings page: last sent, messages queued, messages given up in the last week."""
    last_sent = db.execute("SELECT max(sent) FROM notifications WHERE channel = ?", (name,)).fetchone()[0]
    queued = db.execute("SELECT count(*) FROM notifications WHERE channel = ? AND sent IS NULL"
                        " AND given_up IS NULL", (name,)).fetchone()[0]
    given_up = db.execute("SELECT count(*) FROM notifications WHERE channel = ? AND given_up >= ?",
                          (name, time.time() - 7 * 86400)).fetchone()[0]
    return {"last_sent": last_sent, "queued": queued, "given_up": given_up}


def send_test(config, channel_name: str) -> str | None:
    """Send a test notification to one channel now, outside the outbox; the error text or None."""
    notify = config.notify or NotifyConfig()
    channel = notify.channel(channel_name)
    if channel is None:
        return f"there is no channel {channel_name} in notify.channels"
    message = Message(event="test", title="Test notification from filterd",
                      text="If you can read this, filterd can reach you here.", link=public_url(config),
                      data={"test": True})
    try:
        deliver(channel, message, 0, time.time())
    except Exception as exc:
        return describe_error(exc, channel)
    return None


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


def compose(event: str, payload: dict, config) -> Message:
    """Title, text and link of one event, in words a parent reads on a lock screen."""
    base = public_url(config)
    tz = ZoneInfo(config.timezone)
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
    if event == "weekly_summary":
        from . import summary
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
    elif isinstance(exc, smtplib.SMTPAuthenticationError):
        text = f"{where} refused the login (check username and password)"
    elif isinstance(exc, smtplib.SMTPNotSupportedError):
        text = f"{where} does not offer STARTTLS: set security to tls or none"
    elif isinstance(exc, smtplib.SMTPResponseException):
        text = f"{where} answered {exc.smtp_code}: {exc.smtp_error.decode(errors='replace') if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = f"{where} refused the recipients {', '.join(exc.recipients)}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"network error with {where}: {exc.strerror}"
    else:
        text = f"{type(exc).__name__} with {where}: {exc}"
    text = " ".join(text.split())[:300]
    for secret in channel.secrets():
        text = text.replace(secret, "•••")
    return text


# ---------------------------------------------------------------- detectors (read the state DB, enqueue events)


def run_detectors(db, config, now: float | None = None, running_since: float | None = None) -> int:
    """One round of every detector whose event has a channel; returns the events queued.

    `running_since` is when the caller started watching: a daemon found down right after a
    boot is only announced once it stayed down (the daemon may simply be starting too).
    """
    now = time.time() if now is None else now
    notify = config.notify or NotifyConfig()
    queued = 0
    for event, detector in (("new_device", detect_new_devices), ("repeated_attempts", detect_repeated_attempts),
                            ("daemon_problem", detect_daemon_problems), ("weekly_summary", detect_weekly_summary)):
        if not notify.channels_for(event):
            continue
        try:
            if event == "daemon_problem":
                queued += detector(db, config, now, running_since if running_since is not None else now - DAEMON_DOWN_S)
            else:
                queued += detector(db, config, now)
        except Exception:
            log.exception("notification detector %s failed; trying again next round", event)
    return queued


def _mark(db, key: str) -> float | None:
    row = db.execute("SELECT ts FROM notify_marks WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _set_mark(db, key: str, ts: float) -> None:
    db.execute("INSERT INTO notify_marks (key, ts) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET ts = excluded.ts",
               (key, ts))


def is_private_mac(mac: str | None) -> bool:
    """Randomised ("private") addresses set the locally administered bit: 2nd hex digit 2, 6, A, E."""
    return bool(mac) and len(mac) >= 2 and mac[1].lower() in "26ae"


def detect_new_devices(db, config, now: float) -> int:
    """Announce each unnamed client once, when it first appears in `clients_seen`.

    The first round ever only sets the starting point (no flood of the house's existing
    devices). A MAC already seen under another address is no new device.
    """
    watermark = _mark(db, "new-device:watermark")
    if watermark is None:
        _set_mark(db, "new-device:watermark", now)
        return 0
    rows = db.execute("SELECT client, mac, hostname, first_seen FROM clients_seen WHERE device IS NULL"
                      " AND first_seen > ? ORDER BY first_seen", (watermark - DEVICE_LAG_S,)).fetchall()
    queued = 0
    for client, mac, hostname, first_seen in rows:
        key = f"new-device:mac:{mac.lower()}" if mac else f"new-device:ip:{client}"
        if _mark(db, key) is not None:
            continue
        if mac and db.execute("SELECT 1 FROM clients_seen WHERE mac = ? AND client != ? AND first_seen < ?",
                              (mac, client, first_seen - DEVICE_LAG_S)).fetchone():
            _set_mark(db, key, now)
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            queued += enqueue(db, config.notify, "new_device",
                              {"client": client, "mac": mac, "hostname": hostname, "first_seen": first_seen,
                               "private_mac": is_private_mac(mac)}, now)
            _set_mark(db, key, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    if now - watermark >= 60:      # the look-back (DEVICE_LAG_S) covers the rest: one write a minute
        _set_mark(db, "new-device:watermark", now)
    return queued


def detect_repeated_attempts(db, config, now: float) -> int:
    """Per device: `count` blocked queries in the chosen categories within the window → one
    alert, and none again for that device until the window has passed."""
    rule = config.notify.repeated_attempts
    if not rule.categories:
        return 0
    from .summary import first_id_since

    marks = ",".join("?" * len(rule.categories))
    since = now - rule.window_s
    # Rows are appended in time order: the window is an id range, walked in the category index.
    low = first_id_since(db, since)
    rows = db.execute(
        "SELECT coalesce(device, client) AS who, count(*) FROM queries WHERE id >= ? AND ts >= ? AND ts <= ?"
        " AND action IN ('block', 'nxdomain')"
        f" AND category IN ({marks}) GROUP BY who HAVING count(*) >= ?",  # nosec B608 - placeholders only
        (low, since, now, *rule.categories, rule.count)).fetchall()
    queued = 0
    for who, count in rows:
        key = f"repeated:{who}"
        last = _mark(db, key)
        if last is not None and now - last < rule.window_s:
            continue
        names = db.execute(
            "SELECT name, count(*) AS n FROM queries WHERE id >= ? AND ts >= ? AND ts <= ?"
            " AND coalesce(device, client) = ? AND action IN ('block', 'nxdomain') AND name IS NOT NULL"
            f" AND category IN ({marks}) GROUP BY name ORDER BY n DESC, name LIMIT 3",  # nosec B608
            (low, since, now, who, *rule.categories)).fetchall()
        db.execute("BEGIN IMMEDIATE")
        try:
            queued += enqueue(db, config.notify, "repeated_attempts",
                              {"device": who, "count": count, "window_minutes": rule.window_s // 60,
                               "categories": list(rule.categories), "names": [list(n) for n in names]}, now)
            _set_mark(db, key, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return queued


def daemon_problems(db, config, now: float, running_since: float) -> dict[str, tuple[str, str]]:
    """The problems right now: key → (summary, detail)."""
    from . import lists

    problems: dict[str, tuple[str, str]] = {}
    rows = db.execute("SELECT updated, last_error, upstreams, upstreams_failing FROM daemon_status").fetchall()
    fresh = [r for r in rows if now - r[0] < DAEMON_STALE_S]
    if any(r[2] and r[3] >= r[2] for r in fresh):
        names = ", ".join(spec.url for spec in config.dns.upstreams)
        problems["upstreams-down"] = ("no upstream resolver answers",
                                      f"Every upstream resolver keeps failing ({names}): devices cannot resolve "
                                      "new names. Check the Pi's internet connection, or the upstreams in Settings.")
    seen = _mark(db, "daemon:alive")
    if fresh and (seen is None or now - seen > 60):
        _set_mark(db, "daemon:alive", now)      # the daemon deletes its row when it stops cleanly
    last_alive = max([r[0] for r in rows] + ([seen] if seen else []), default=None)
    if (not fresh and last_alive is not None and now - last_alive >= DAEMON_DOWN_S
            and now - running_since >= DAEMON_DOWN_S):
        when = datetime.fromtimestamp(last_alive, ZoneInfo(config.timezone)).strftime("%a %d %b %H:%M")
        problems["daemon-down"] = ("the filter is not running",
                                   f"The DNS daemon has not reported since {when}. Devices may not be "
                                   "filtered (or not resolve names at all). Restart it: systemctl restart filterd")
    for error in sorted({r[1] for r in fresh if r[1]}):
        digest = hashlib.sha256(error.encode()).hexdigest()[:16]
        problems[f"config:{digest}"] = ("a change to the rules was refused",
                                        f"The daemon refused the new config and keeps the previous rules: {error}")
    # The last `filterd lists update` (CLI, timer or web UI) leaves its outcome in a status file.
    read_update_status = getattr(lists, "read_update_status", None)
    update = read_update_status(config) if read_update_status else None
    if update and update.get("finished"):
        if update.get("error"):
            problems["lists-update"] = ("the block list update failed", f"The list update failed: {update['error']}")
        for item in update.get("lists") or []:
            if isinstance(item, dict) and item.get("state") == "error":
                problems[f"list-failed:{item.get('id')}"] = (
                    f"list {item.get('id')} did not update",
                    f"{item.get('message') or item.get('id')}. The last good copy keeps filtering.")
    for source in config.rules.lists:
        if not source.url:
            continue
        age = lists.file_age_s(lists.lists_dir(config) / f"{source.id}.txt")
        if age is None or age > LIST_STALE_S:
            detail = ("has never been downloaded: it blocks nothing yet" if age is None
                      else f"has not been updated for {age / 86400:.0f} days")
            problems[f"list:{source.id}"] = (f"list {source.id} is not updating",
                                             f"Block list {source.id} ({source.category}) {detail}. "
                                             "Run `filterd lists update` to see the error.")
    return problems


def detect_daemon_problems(db, config, now: float, running_since: float) -> int:
    """Announce each problem once when it appears; a problem that went away and came back is
    announced again."""
    problems = daemon_problems(db, config, now, running_since)
    known = {key[len("problem:"):] for key, in db.execute(
        "SELECT key FROM notify_marks WHERE key >= 'problem:' AND key < 'problem;'")}
    queued = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for key, (summary_text, detail) in problems.items():
            if key in known:
                continue
            queued += enqueue(db, config.notify, "daemon_problem",
                              {"problem": key, "summary": summary_text, "detail": detail}, now)
            _set_mark(db, f"problem:{key}", now)
        for key in known - set(problems):
            db.execute("DELETE FROM notify_marks WHERE key = ?", (f"problem:{key}",))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return queued


def last_weekly_moment(config, now: float) -> datetime:
    """The latest scheduled weekly-summary time at or before `now`, in the house's time zone."""
    rule = (config.notify or NotifyConfig()).weekly_summary
    tz = ZoneInfo(config.timezone)
    local = datetime.fromtimestamp(now, tz)
    day = local.date() - timedelta(days=(local.weekday() - rule.weekday) % 7)
    moment = datetime(day.year, day.month, day.day, rule.minute // 60, rule.minute % 60, tzinfo=tz)
    if moment.timestamp() > now:
        moment -= timedelta(days=7)
    return moment


def summary_profiles(config) -> list[str]:
    """Profiles that get a weekly summary: the chosen ones, else every profile with a named device."""
    chosen = (config.notify or NotifyConfig()).weekly_summary.profiles
    if chosen is not None:
        return [p for p in chosen if p in config.rules.profiles]
    with_devices = {d.profile for d in config.rules.devices}
    return [p for p in config.rules.profiles if p in with_devices]


def detect_weekly_summary(db, config, now: float) -> int:
    """Once a week at the chosen local time: one summary per profile (skipped if a day late)."""
    from . import summary

    moment = last_weekly_moment(config, now)
    if now - moment.timestamp() > WEEKLY_LATE_S:
        return 0
    queued = 0
    for profile in summary_profiles(config):
        key = f"weekly:{profile}:{moment.date().isoformat()}"
        if _mark(db, key) is not None:
            continue
        data = summary.weekly_summary(db, config, profile, moment.timestamp())
        db.execute("BEGIN IMMEDIATE")
        try:
            queued += enqueue(db, config.notify, "weekly_summary", data, now)
            _set_mark(db, key, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return queued
