"""Parents' temporary changes — pause, resume, temporary allow, bonus time — kept in the state DB.

One service layer for the CLI, the web UI and the API, so they cannot drift apart. The daemon
reads the active overrides within a second (it watches the DB's data_version); expired ones
simply stop matching, nothing needs to clean them up for the rules to be right.
"""
from __future__ import annotations

import datetime
import difflib
import re
import sqlite3

from filterd.lists.domains import normalise_domain
from filterd.rules import suffixes
from filterd.rules.policy import Override
from filterd.rules.schedule import window_end
from filterd.store.state import audit

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?(?:(\d+)s)?")


class OverrideError(ValueError):
    """A request a parent made that cannot be carried out; the message says why."""


class NoChange(OverrideError):
    """The request would change nothing (undo of nothing in force, allow of what is allowed):
    nothing is written, not even to the audit trail; the message says what is the case."""


def parse_duration(text: str) -> float:
    """'30m', '1h', '1h30m', '2d', '45s', or a bare number of minutes → seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"[0-9]+", text):
        total = int(text) * 60
    else:
        match = _DURATION.fullmatch(text)
        if not text or not match or not any(match.groups()):
            raise OverrideError(f'"{text}" is not a duration (write e.g. 30m, 1h, 1h30m, 2d)')
        days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if not 0 < total <= 366 * 86400:
        raise OverrideError(f'"{text}" must be between 1 second and a year')
    return float(total)


def subject_of(config, name: str) -> tuple[str, str]:
    """A device or profile by name → ("device" | "profile", its configured name)."""
    device = config.rules.device(name)
    if device is not None:
        return "device", device.name
    for profile in config.rules.profiles:
        if profile.lower() == name.lower():
            return "profile", profile
    devices = ", ".join(d.name for d in config.rules.devices) or "none"
    raise OverrideError(f'no device or profile named "{name}" (devices: {devices}; '
                        f'profiles: {", ".join(config.rules.profiles)})')


def _insert(conn: sqlite3.Connection, kind: str, subject: tuple[str, str], value: str | None,
            seconds: float | None, now: float, source: str) -> int:
    until = now + seconds if seconds else None
    cursor = conn.execute(
        "INSERT INTO overrides (kind, subject_kind, subject, value, created, until, source) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", (kind, subject[0], subject[1], value, now, until, source))
    detail = f"{subject[0]} {subject[1]}" + (f" {value}" if value else "") + \
        (f" for {_human(seconds)}" if seconds else " until resumed" if kind == "pause" else "")
    audit(conn, source, kind, detail, now)
    return cursor.lastrowid


def pause(conn, config, name: str, seconds: float | None, now: float, source: str = "cli") -> int:
    """Block everything but the profile's allow list for a device or profile."""
    return _insert(conn, "pause", subject_of(config, name), None, seconds, now, source)


def resume(conn, config, name: str, now: float, source: str = "cli") -> int:
    """End the pauses of a device or profile now; returns how many were ended.

    A device paused through its profile stays paused: the error says to resume the profile.
    """
    subject = subject_of(config, name)
    if subject[0] == "device":
        profile = config.rules.profile_of(subject[1])
        if not conn.execute("SELECT 1 FROM overrides WHERE kind = 'pause' AND subject_kind = 'device'"
                            " AND subject = ? AND ended IS NULL AND (until IS NULL OR until > ?)",
                            (subject[1], now)).fetchone() and \
                conn.execute("SELECT 1 FROM overrides WHERE kind = 'pause' AND subject_kind = 'profile'"
                             " AND subject = ? AND ended IS NULL AND (until IS NULL OR until > ?)",
                             (profile, now)).fetchone():
            raise OverrideError(f"{subject[1]} is paused through its profile {profile}: resume {profile}")
    cursor = conn.execute(
        "UPDATE overrides SET ended = ? WHERE kind = 'pause' AND subject_kind = ? AND subject = ? "
        "AND ended IS NULL AND (until IS NULL OR until > ?)", (now, subject[0], subject[1], now))
    if cursor.rowcount:     # resuming what was not paused changes nothing: not audited
        audit(conn, source, "resume", f"{subject[0]} {subject[1]}", now)
    return cursor.rowcount


def allow(conn, config, name: str, what: str, seconds: float | None, now: float, source: str = "cli",
          keep_schedules: bool = False) -> int:
    """Let a domain or a service through for a while ("30 more minutes of YouTube").
    `keep_schedules`: bedtime, homework time and pauses still apply to it (kind "allow_day")."""
    value = what.strip().lower()
    if value not in config.catalog.services:
        domain = normalise_domain(value)
        if domain is None or "." not in domain:
            # A single word is a mistyped service far more often than a top-level domain.
            close = difflib.get_close_matches(value, list(config.catalog.services), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (services: youtube, tiktok, roblox…)"
            raise OverrideError(f'"{what}" is neither a known service{hint} nor a domain name')
        if suffixes.is_public_suffix(domain):
            raise OverrideError(suffixes.problem(domain))
        value = domain
    subject = subject_of(config, name)
    until = now + seconds if seconds else None
    kind = "allow_day" if keep_schedules else "allow"
    longest = conn.execute(
        "SELECT max(coalesce(until, 1e18)) FROM overrides WHERE kind = ? AND subject_kind = ? AND subject = ?"
        " AND value = ? AND ended IS NULL AND (until IS NULL OR until > ?)",
        (kind, subject[0], subject[1], value, now)).fetchone()[0]
    if longest is not None and longest >= (until if until is not None else 1e18):
        raise NoChange(f"{value} is already allowed for {subject[1]} "
                       + ("until revoked" if longest >= 1e18 else f"for {_human(longest - now)} more"))
    return _insert(conn, kind, subject, value, seconds, now, source)


def _value_of(config, what: str) -> str:
    value = what.strip().lower()
    return value if value in config.catalog.services else (normalise_domain(value) or value)


def end(conn, config, name: str, kind: str, now: float, source: str = "cli", what: str | None = None) -> int:
    """Undo: end now the overrides of `kind` (allow of `what`, bonus, pause) that a device or
    profile has in force; returns how many were ended. Ending nothing raises NoChange and
    writes nothing. A device paused through its profile is ended through the profile."""
    if kind == "allow_day":
        kind = "allow"
    if kind not in ("allow", "bonus", "pause"):
        raise OverrideError(f"{kind} cannot be undone (allow, bonus or pause)")
    subject = subject_of(config, name)
    value = _value_of(config, what or "") if kind == "allow" else None
    kinds = ("allow", "allow_day") if kind == "allow" else (kind, kind)     # an allow, with or without schedules
    cursor = conn.execute(
        "UPDATE overrides SET ended = ? WHERE kind IN (?, ?) AND subject_kind = ? AND subject = ? AND value IS ?"
        " AND ended IS NULL AND (until IS NULL OR until > ?)", (now, *kinds, subject[0], subject[1], value, now))
    if not cursor.rowcount:
        if kind == "allow":
            raise NoChange(f"{value} was not allowed for {subject[1]}: nothing changed")
        through = ""
        if subject[0] == "device":
            profile = config.rules.profile_of(subject[1])
            if conn.execute("SELECT 1 FROM overrides WHERE kind = ? AND subject_kind = 'profile' AND subject = ?"
                            " AND ended IS NULL AND (until IS NULL OR until > ?)", (kind, profile, now)).fetchone():
                through = f" (it has one through its profile {profile}: undo it for {profile})"
        words = {"bonus": "had no bonus time", "pause": "was not paused"}[kind]
        raise NoChange(f"{subject[1]} {words}: nothing changed{through}")
    action = {"allow": "revoke", "bonus": "end bonus", "pause": "resume"}[kind]
    audit(conn, source, action, f"{subject[0]} {subject[1]}" + (f" {value}" if value else ""), now)
    return cursor.rowcount


def revoke(conn, config, name: str, what: str, now: float, source: str = "cli") -> int:
    """End the temporary allows of a domain or service for a device or profile (0: none was
    in force, and nothing is written)."""
    try:
        return end(conn, config, name, "allow", now, source, what)
    except NoChange:
        return 0


def bonus(conn, config, name: str, seconds: float | None, now: float, source: str = "cli") -> int:
    """Lift schedules for a while; with no duration, until the running window would end."""
    subject = subject_of(config, name)
    if seconds is None:
        profile_name = config.rules.profile_of(subject[1]) if subject[0] == "device" else subject[1]
        profile = config.rules.profiles[profile_name]
        from zoneinfo import ZoneInfo
        moment = datetime.datetime.fromtimestamp(now, ZoneInfo(config.timezone))
        ends = [end for end in (window_end(s, moment) for s in profile.schedules) if end is not None]
        if not ends:
            raise OverrideError(f"no schedule of {subject[0]} {subject[1]} is running now")
        seconds = max(ends).timestamp() - now
    return _insert(conn, "bonus", subject, None, seconds, now, source)


def active(conn: sqlite3.Connection, now: float) -> tuple[Override, ...]:
    """The overrides in force at `now`, oldest first."""
    rows = conn.execute(
        "SELECT kind, subject_kind, subject, until, value FROM overrides "
        "WHERE ended IS NULL AND (until IS NULL OR until > ?) ORDER BY id", (now,)).fetchall()
    return tuple(Override(kind, subject_kind, subject, until, value)
                 for kind, subject_kind, subject, until, value in rows)


def in_force_at(conn: sqlite3.Connection, moment: float) -> tuple[Override, ...]:
    """The overrides that were in force at an earlier `moment` (made before it, not yet expired
    nor ended then): to explain a logged decision as it was taken."""
    rows = conn.execute(
        "SELECT kind, subject_kind, subject, until, value FROM overrides WHERE created <= ? "
        "AND (until IS NULL OR until > ?) AND (ended IS NULL OR ended > ?) ORDER BY id",
        (moment, moment, moment)).fetchall()
    return tuple(Override(kind, subject_kind, subject, until, value)
                 for kind, subject_kind, subject, until, value in rows)


def _human(seconds: float) -> str:
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "")
