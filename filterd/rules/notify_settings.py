"""The `notify:` section: the channels parents are told through and which events go where.

It sits with the rules so that reading a config imports no sockets or TLS: the daemon reads
these settings and never sends; `family/channels.py` delivers, `family/notify.py` keeps the
outbox. Secrets (webhook secret, ntfy token, SMTP password) are kept out of repr() and are never
echoed back in an error.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from filterd.rules.checking import show
from filterd.rules.model import DAY_NAMES, DAYS

EVENTS = ("access_request", "new_device", "repeated_attempts", "daemon_problem", "weekly_summary", "limit_spent")
CHANNEL_TYPES = ("webhook", "ntfy", "email")
EMAIL_SECURITY = ("starttls", "tls", "none")
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
_EMAIL = re.compile(r"[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+")
_TIME = re.compile(r"([01]?\d|2[0-3]):[0-5]\d")


NTFY_PRIORITIES = {"min": 1, "low": 2, "default": 3, "high": 4, "urgent": 5, "max": 5}
DEFAULT_TIMEOUT_S = 5.0


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
        check.error(f"{path}.type", f"{show(kind)} must be one of {', '.join(CHANNEL_TYPES)}")
        return None
    check.mapping(settings, path, _CHANNEL_KEYS[kind])
    common: dict[str, Any] = {
        "timeout_s": check.number(settings, "timeout", path, DEFAULT_TIMEOUT_S, 0.5, 30),
        "ca_file": _optional_text(settings, "ca_file", path, check),
    }
    if common["ca_file"] is not None:
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
