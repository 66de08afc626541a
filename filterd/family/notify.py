"""Notifications for parents: the persisted outbox and its sender (the `notify:` settings are
parsed in `rules/notify_settings.py`).

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
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from filterd.family.channels import Channel, Message, compose, deliver, describe_error
from filterd.rules.notify_settings import EVENTS, NotifyConfig
from filterd.store.state import transaction

log = logging.getLogger("filterd.notify")

FIRST_RETRY_S = 30.0
MAX_RETRY_S = 3600.0
MAX_ATTEMPTS = 12
GIVE_UP_AFTER_S = 86400.0
BATCH_PER_CHANNEL = 20
MAX_DUE_PER_ROUND = 500
KEEP_DONE_S = 30 * 86400.0           # sent and given-up rows kept this long (for the history)


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
