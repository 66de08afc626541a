"""The detectors: read the state DB and queue the events parents asked to hear about.

Each detector turns what the daemon and the query log left in the state DB into events for
`notify.enqueue`: a new device, repeated blocked attempts, a problem with the filter, the
weekly summary. They run in the web UI's notification worker, one round every few seconds;
what they already announced is remembered in `notify_marks`, so each event is queued once
and a restart announces nothing twice.
"""
from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from filterd.rules.devices import is_private_mac
from filterd.family.notify import enqueue
from filterd.rules.notify_settings import NotifyConfig
from filterd.store import status
from filterd.store.state import transaction

# Detector failures are logged as part of the notifications, under the name they always had.
log = logging.getLogger("filterd.notify")

DEVICE_LAG_S = 120.0                 # the query log commits a second or more after a device's first query
DAEMON_DOWN_S = 120.0                # no live status row (store/status.py) this long: the daemon is down
LIST_STALE_S = 8 * 86400.0           # as the dashboard: a downloaded list this old means its updates fail
WEEKLY_LATE_S = 86400.0              # a weekly summary not sent within a day of its time is skipped


def run_detectors(db, config, now: float | None = None, running_since: float | None = None) -> int:
    """One round of every detector whose event has a channel; returns the events queued.

    `running_since` is when the caller started watching: a daemon found down right after a
    boot is only announced once it stayed down (the daemon may simply be starting too).
    """
    now = time.time() if now is None else now
    notify = config.notify or NotifyConfig()
    queued = 0
    for event, detector in (("new_device", detect_new_devices), ("repeated_attempts", detect_repeated_attempts),
                            ("daemon_problem", detect_daemon_problems), ("weekly_summary", detect_weekly_summary),
                            ("limit_spent", detect_spent_limits)):
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
        with transaction(db):
            queued += enqueue(db, config.notify, "new_device",
                              {"client": client, "mac": mac, "hostname": hostname, "first_seen": first_seen,
                               "private_mac": is_private_mac(mac)}, now)
            _set_mark(db, key, now)
    if now - watermark >= 60:      # the look-back (DEVICE_LAG_S) covers the rest: one write a minute
        _set_mark(db, "new-device:watermark", now)
    return queued


def detect_spent_limits(db, config, now: float) -> int:
    """Each daily limit with `notify: true` that runs out: one message, once a day per device
    (or profile) and limit."""
    from filterd.family import limits

    wanted = {(profile.name, limit.name) for profile in config.rules.profiles.values()
              for limit in profile.limits if limit.notify}
    if not wanted:
        return 0
    queued = 0
    for spent in limits.spent_overrides(db, config, now):
        profile = spent.subject if spent.subject_kind == "profile" else config.rules.profile_of(spent.subject)
        if (profile, spent.value) not in wanted:
            continue
        key = f"limit:{spent.subject_kind}:{spent.subject}:{spent.value}:{int(spent.until or 0)}"
        if _mark(db, key) is not None:
            continue
        with transaction(db):
            queued += enqueue(db, config.notify, "limit_spent",
                              {"subject_kind": spent.subject_kind, "subject": spent.subject, "limit": spent.value,
                               "minutes": spent.minutes, "resets_at": spent.until}, now)
            _set_mark(db, key, now)
    return queued


def detect_repeated_attempts(db, config, now: float) -> int:
    """Per device: `count` blocked queries in the chosen categories within the window → one
    alert, and none again for that device until the window has passed."""
    rule = config.notify.repeated_attempts
    if not rule.categories:
        return 0
    from filterd.family.summary import first_id_since

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
        with transaction(db):
            queued += enqueue(db, config.notify, "repeated_attempts",
                              {"device": who, "count": count, "window_minutes": rule.window_s // 60,
                               "categories": list(rule.categories), "names": [list(n) for n in names]}, now)
            _set_mark(db, key, now)
    return queued


def daemon_problems(db, config, now: float, running_since: float) -> dict[str, tuple[str, str]]:
    """The problems right now: key → (summary, detail)."""
    from filterd.lists import sources

    problems: dict[str, tuple[str, str]] = {}
    rows = status.read_all(db)
    fresh = status.alive(rows, now)
    if any(r.upstreams_down for r in fresh):
        names = ", ".join(spec.url for spec in config.dns.upstreams)
        problems["upstreams-down"] = ("no upstream resolver answers",
                                      f"Every upstream resolver keeps failing ({names}): devices cannot resolve "
                                      "new names. Check the Pi's internet connection, or the upstreams in Settings.")
    seen = _mark(db, "daemon:alive")
    if fresh and (seen is None or now - seen > 60):
        _set_mark(db, "daemon:alive", now)      # the daemon deletes its row when it stops cleanly
    last_alive = max([r.updated for r in rows] + ([seen] if seen else []), default=None)
    if (not fresh and last_alive is not None and now - last_alive >= DAEMON_DOWN_S
            and now - running_since >= DAEMON_DOWN_S):
        when = datetime.fromtimestamp(last_alive, ZoneInfo(config.timezone)).strftime("%a %d %b %H:%M")
        problems["daemon-down"] = ("the filter is not running",
                                   f"The DNS daemon has not reported since {when}. Devices may not be "
                                   "filtered (or not resolve names at all). Restart it: systemctl restart filterd")
    for error in sorted({r.last_error for r in fresh if r.last_error}):
        digest = hashlib.sha256(error.encode()).hexdigest()[:16]
        problems[f"config:{digest}"] = ("a change to the rules was refused",
                                        f"The daemon refused the new config and keeps the previous rules: {error}")
    # The last `filterd lists update` (CLI, timer or web UI) leaves its outcome in a status file.
    read_update_status = getattr(sources, "read_update_status", None)
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
        age = sources.file_age_s(sources.lists_dir(config) / f"{source.id}.txt")
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
    with transaction(db):
        for key, (summary_text, detail) in problems.items():
            if key in known:
                continue
            queued += enqueue(db, config.notify, "daemon_problem",
                              {"problem": key, "summary": summary_text, "detail": detail}, now)
            _set_mark(db, f"problem:{key}", now)
        for key in known - set(problems):
            db.execute("DELETE FROM notify_marks WHERE key = ?", (f"problem:{key}",))
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
    from filterd.family import summary

    moment = last_weekly_moment(config, now)
    if now - moment.timestamp() > WEEKLY_LATE_S:
        return 0
    queued = 0
    for profile in summary_profiles(config):
        key = f"weekly:{profile}:{moment.date().isoformat()}"
        if _mark(db, key) is not None:
            continue
        data = summary.weekly_summary(db, config, profile, moment.timestamp())
        with transaction(db):
            queued += enqueue(db, config.notify, "weekly_summary", data, now)
            _set_mark(db, key, now)
    return queued
