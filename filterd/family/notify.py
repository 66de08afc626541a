"""Notifications for parents: the `notify:` config, and the persisted outbox and its sender.

Nothing here runs on a hot path. The web UI (or a detector, `alerts.py`) calls `enqueue`,
which only inserts rows into the `notifications` table: a request never waits for a network.
The web UI's background worker calls `alerts.run_detectors` and `send_due` every few seconds;
each channel is sent to from its own thread with a short timeout (`channels.py` composes and
delivers), so a dead SMTP server or webhook holds up neither the other channels nor anything
else. Rows stay in the table until sent or given up on, so a restart of either process loses
no notification.

Secrets (the webhook's HMAC secret, the ntfy token, the SMTP password) live only in the
config: they are never logged, never stored in an error text and never shown by a page.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from filterd.family.channels import DEFAULT_TIMEOUT_S, NTFY_PRIORITIES, Channel, Message, compose, deliver, describe_error
from filterd.rules.checking import show
from filterd.store.state import transaction

log = logging.getLogger("filterd.notify")

EVENTS = ("access_request", "new_device", "repeated_attempts", "daemon_problem", "weekly_summary")
CHANNEL_TYPES = ("webhook", "ntfy", "email")
EMAIL_SECURITY = ("starttls", "tls", "none")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
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


# ---------------------------------------------------------------- config


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
        check.error(f"{path}.type", f"{show(kind)} must be one of {', '.join(CHANNEL_TYPES)}")
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
            check.error(f"{path}.priority", f"{show(priority)} must be 1-5 or one of "
                        "min, low, default, high, urgent")
            priority = "default"
        return Channel(name, kind, url=url, token=_optional_text(settings, "token", path, check),
                       priority=priority, title=_optional_text(settings, "title", path, check), **common)
    host = settings.get("host")
    if not isinstance(host, str) or not host.strip() or any(c.isspace() or c in "/@" for c in host.strip()):
        check.error(f"{path}.host", f"{show(host)} must be the SMTP server's name or address")
        host = ""
    security = settings.get("security", "starttls")
    if security not in EMAIL_SECURITY:
        check.error(f"{path}.security", f"{show(security)} must be one of {', '.join(EMAIL_SECURITY)}")
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
        check.error(f"{path}.from", f"{show(sender)} is not an e-mail address")
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
        check.error(f"{path}.day", f"{show(data.get('day'))} is not a day (write e.g. sunday or sun)")
        day = "sun"
    text = data.get("time", "18:00")
    if isinstance(text, int) and not isinstance(text, bool):
        text = f"{text // 60:02d}:{text % 60:02d}"      # YAML 1.1 reads 18:00 as 1080
    if not isinstance(text, str) or not _TIME.fullmatch(text.strip()):
        check.error(f"{path}.time", f'{show(text)} is not a time (write HH:MM, e.g. "18:00")')
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
        return f"{show(url)} must be an http:// or https:// URL"
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
        return f"{show(url)} must not contain spaces or control characters"
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
        from concurrent.futures import ThreadPoolExecutor, as_completed   # the web UI sends; the daemon never

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
            message = compose(item.event, item.payload, public_url(config), ZoneInfo(config.timezone))
            deliver(channel, message, item.id, item.created)
            results.append(None)
        except Exception as exc:   # any failure is the channel's: record it, retry later
            results.append(describe_error(exc, channel))
            break
    return results


def _record(db, channel: Channel, items: list[Outgoing], results: list[str | None], now: float) -> int:
    """Write what one channel's round did: sent rows, a failed row's back-off, the channel's state."""
    sent = 0
    with transaction(db):
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
