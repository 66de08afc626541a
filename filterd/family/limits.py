"""Daily limits, counted from DNS: "one hour of YouTube a day", per device or per profile.

Counting. Every allowed query that a device's limits count (`policy.limits_counting`) marks the
minute of the limit's day it falls in. Apps keep asking while they are used (the daemon answers
names in a limited scope with short TTLs), so queries less than `gap` apart (5 minutes unless
`limits_gap` says otherwise) are one session, and every minute between them counts too.

Storage. Each worker keeps its marks in memory and merges them into `limit_usage` every few
seconds: a bitmap of the day's minutes, OR-ed together, so two workers (or a restart) never
count a minute twice and none is forgotten. The query log may be off: this does not use it.

Spending. When the minutes used reach the day's allowance (plus what parents added for the day,
`limit_extensions`), `spent_overrides` hands the daemon a "spent" override until the next reset,
and `policy.decide` blocks the limit's names for that device (or profile).
"""
from __future__ import annotations

import datetime
import sqlite3
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from filterd.rules.limits import MAX_DAY_MINUTES, allowance, day_key, minute_index, next_reset, subject_for
from filterd.rules.model import Limit
from filterd.rules.policy import Override
from filterd.store import overrides
from filterd.store.state import audit, transaction

BITMAP_BYTES = (MAX_DAY_MINUTES + 7) // 8
DEFAULT_GAP_S = 300
KEEP_DAYS = 60                 # usage rows older than this are removed (the charts show a week)

Key = tuple[str, str, str, str]       # (day, subject_kind, subject, limit name)


class LimitError(ValueError):
    """A limit or device that does not exist, or an extension that makes no sense."""


def _set_bits(bitmap: bytearray, first: int, last: int) -> None:
    for minute in range(first, last + 1):
        bitmap[minute >> 3] |= 1 << (minute & 7)


def _count(bitmap: bytes) -> int:
    return sum(bin(byte).count("1") for byte in bitmap)


class UsageCounter:
    """One worker's minutes, in memory until the next `flush`."""

    def __init__(self, gap_s: float = DEFAULT_GAP_S):
        self.gap_minutes = max(1, int(gap_s // 60))
        self.pending: dict[Key, bytearray] = {}
        self.last: dict[Key, int] = {}         # the last minute marked (here or, after a flush, by any worker)

    def record(self, key: Key, minute: int) -> None:
        bitmap = self.pending.get(key)
        if bitmap is None:
            bitmap = self.pending[key] = bytearray(BITMAP_BYTES)
        last = self.last.get(key)
        if last is not None and 0 <= minute - last <= self.gap_minutes:
            _set_bits(bitmap, last, minute)     # one session: the minutes between count too
        else:
            _set_bits(bitmap, minute, minute)
        if last is None or minute > last:
            self.last[key] = minute

    def count(self, limits: list[tuple[Limit, tuple[str, str]]], now: datetime.datetime) -> None:
        """Mark `now` for each (limit, subject) an allowed query counts toward."""
        for limit, (kind, subject) in limits:
            self.record((day_key(limit, now), kind, subject, limit.name), minute_index(limit, now))

    def flush(self, db: sqlite3.Connection, now: float | None = None) -> None:
        """Merge the marks into the state DB (one transaction) and learn the other workers' last minutes."""
        if not self.pending:
            return
        now = time.time() if now is None else now
        pending, self.pending = self.pending, {}
        try:
            with transaction(db):
                for key, bitmap in pending.items():
                    row = db.execute("SELECT minutes, last_minute FROM limit_usage WHERE day = ? AND subject_kind = ?"
                                     " AND subject = ? AND name = ?", key).fetchone()
                    merged = bytearray(row[0]) if row else bytearray(BITMAP_BYTES)
                    merged.extend(bytes(max(0, BITMAP_BYTES - len(merged))))
                    for i, byte in enumerate(bitmap):
                        merged[i] |= byte
                    last = max(self.last.get(key, 0), row[1] if row else 0)
                    self.last[key] = last
                    db.execute("INSERT INTO limit_usage (day, subject_kind, subject, name, minutes, used, last_minute,"
                               " updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, subject_kind, subject, name)"
                               " DO UPDATE SET minutes = excluded.minutes, used = excluded.used,"
                               " last_minute = excluded.last_minute, updated = excluded.updated",
                               (*key, bytes(merged), _count(merged), last, now))
        except sqlite3.Error:
            # Keep the marks for the next try (a locked or full DB must not lose minutes).
            for key, bitmap in pending.items():
                mine = self.pending.setdefault(key, bytearray(BITMAP_BYTES))
                for i, byte in enumerate(bitmap):
                    mine[i] |= byte
            raise
        # Days that are over are done with (a limit's day may start at 04:00: keep yesterday's).
        cutoff = datetime.date.fromtimestamp(now - 2 * 86400).isoformat()
        for key in [k for k in self.last if k[0] < cutoff]:
            del self.last[key]


# ---------------------------------------------------------------- what is used and what is left


@dataclass(frozen=True)
class LimitUsage:
    name: str
    per: str                          # device | profile
    used_minutes: int
    allowed_minutes: int | None       # None: the limit does not apply today
    extra_minutes: int                # added by a parent for today
    resets_at: datetime.datetime

    @property
    def remaining_minutes(self) -> int | None:
        if self.allowed_minutes is None:
            return None
        return max(0, self.allowed_minutes + self.extra_minutes - self.used_minutes)

    @property
    def spent(self) -> bool:
        return self.remaining_minutes == 0

    def as_dict(self) -> dict:
        return {"name": self.name, "per": self.per, "used_minutes": self.used_minutes,
                "allowed_minutes": None if self.allowed_minutes is None else self.allowed_minutes + self.extra_minutes,
                "remaining_minutes": self.remaining_minutes, "resets_at": self.resets_at.isoformat()}


def _used(db, day: str, subject: tuple[str, str], name: str) -> int:
    row = db.execute("SELECT used FROM limit_usage WHERE day = ? AND subject_kind = ? AND subject = ? AND name = ?",
                     (day, *subject, name)).fetchone()
    return row[0] if row else 0


def _extra(db, day: str, subject: tuple[str, str], name: str) -> int:
    row = db.execute("SELECT COALESCE(SUM(minutes), 0) FROM limit_extensions WHERE day = ? AND subject_kind = ?"
                     " AND subject = ? AND name = ?", (day, *subject, name)).fetchone()
    return row[0]


def _device(config, name: str):
    device = config.rules.device(name)
    if device is None:
        known = ", ".join(d.name for d in config.rules.devices) or "none"
        raise LimitError(f'no device named "{name}" (devices: {known})')
    return device


def usage(db, config, device_name: str, now: float | None = None) -> list[LimitUsage]:
    """Each limit of the device's profile: minutes used today, allowed, and when it resets."""
    device = _device(config, device_name)
    profile = config.rules.profiles[device.profile]
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, ZoneInfo(config.timezone))
    out = []
    for limit in profile.limits:
        subject = subject_for(limit, device.name, profile.name)
        day = day_key(limit, moment)
        out.append(LimitUsage(limit.name, limit.per, _used(db, day, subject, limit.name), allowance(limit, moment),
                              _extra(db, day, subject, limit.name), next_reset(limit, moment)))
    return out


def extend(db, config, device_name: str, limit_name: str, minutes: int, now: float | None = None,
           source: str = "cli", in_transaction: bool = False) -> LimitUsage:
    """Add minutes to today's allowance (for the device, or its profile with `per: profile`).
    `in_transaction`: the caller's transaction holds it (an approval and its answer together)."""
    if not 1 <= minutes <= 24 * 60:
        raise LimitError(f"{minutes} minutes: add from 1 minute to 24 hours")
    device = _device(config, device_name)
    profile = config.rules.profiles[device.profile]
    limit = next((l for l in profile.limits if l.name == limit_name.lower()), None)
    if limit is None:
        names = ", ".join(l.name for l in profile.limits) or "none"
        raise LimitError(f'{device.name} (profile {profile.name}) has no limit "{limit_name}" (limits: {names})')
    now = time.time() if now is None else now
    moment = datetime.datetime.fromtimestamp(now, ZoneInfo(config.timezone))
    subject = subject_for(limit, device.name, profile.name)
    if not in_transaction:
        with transaction(db):
            return extend(db, config, device_name, limit_name, minutes, now, source, in_transaction=True)
    db.execute("INSERT INTO limit_extensions (day, subject_kind, subject, name, minutes, created, source)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)", (day_key(limit, moment), *subject, limit.name, minutes, now, source))
    audit(db, source, "limit extended", f"{limit.name} +{minutes} min for {subject[0]} {subject[1]}", now)
    return next(u for u in usage(db, config, device.name, now) if u.name == limit.name)


def spent_overrides(db, config, now: float | None = None) -> tuple[Override, ...]:
    """A "spent" override for every (device or profile, limit) whose day's minutes are used up."""
    now = time.time() if now is None else now
    moment = datetime.datetime.fromtimestamp(now, ZoneInfo(config.timezone))
    out = []
    for profile in config.rules.profiles.values():
        for limit in profile.limits:
            allowed = allowance(limit, moment)
            if allowed is None:
                continue
            day = day_key(limit, moment)
            resets = next_reset(limit, moment).timestamp()
            if limit.per == "profile":
                subjects = [("profile", profile.name)]
            else:
                subjects = [("device", d.name) for d in config.rules.devices if d.profile == profile.name]
            for subject in subjects:
                total = allowed + _extra(db, day, subject, limit.name)
                if _used(db, day, subject, limit.name) >= total:
                    out.append(Override("spent", subject[0], subject[1], resets, limit.name, total))
    return tuple(out)


def daily_history(db, config, device_name: str, days: int = 7, now: float | None = None) -> dict[str, list]:
    """Minutes used per limit for each of the last `days` days (oldest first): for the charts."""
    device = _device(config, device_name)
    profile = config.rules.profiles[device.profile]
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, ZoneInfo(config.timezone))
    out = {}
    for limit in profile.limits:
        subject = subject_for(limit, device.name, profile.name)
        series = []
        for back in range(days - 1, -1, -1):
            day = day_key(limit, moment - datetime.timedelta(days=back))
            series.append((day, _used(db, day, subject, limit.name)))
        out[limit.name] = series
    return out


def week_of_profile(db, config, profile_name: str, days: list[str]) -> list[dict]:
    """Each limit of a profile over `days` (YYYY-MM-DD): minutes used per day (its devices added
    up for a per-device limit) and the day's allowance per device — for the weekly summary."""
    profile = config.rules.profiles.get(profile_name)
    if profile is None:
        return []
    devices = [d.name for d in config.rules.devices if d.profile == profile_name]
    out = []
    for limit in profile.limits:
        subjects = [("profile", profile_name)] if limit.per == "profile" else [("device", d) for d in devices]
        series = []
        for day in days:
            used = sum(_used(db, day, subject, limit.name) for subject in subjects)
            weekday = datetime.date.fromisoformat(day).weekday()
            series.append({"date": day, "used": used, "allowed": limit.minutes[weekday]})
        out.append({"name": limit.name, "per": limit.per, "days": series})
    return out


def prune(db, now: float | None = None) -> None:
    """Forget usage and extensions older than KEEP_DAYS."""
    cutoff = datetime.date.fromtimestamp((time.time() if now is None else now) - KEEP_DAYS * 86400).isoformat()
    with transaction(db):
        db.execute("DELETE FROM limit_usage WHERE day < ?", (cutoff,))
        db.execute("DELETE FROM limit_extensions WHERE day < ?", (cutoff,))


def overrides_in_force(db, config, now: float | None = None) -> tuple[Override, ...]:
    """The parents' overrides (pause, allow, bonus) and the spent limits, for `policy.decide`:
    what the daemon applies, and what `filterd explain`, "why?" and the block page explain."""
    now = time.time() if now is None else now
    return overrides.active(db, now) + spent_overrides(db, config, now)
