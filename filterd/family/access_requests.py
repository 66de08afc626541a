"""Children's requests for access, asked from the block page and answered by a parent.

A request remembers what the child saw (the reason, in the child's words) and what approving it
would let through (`unblocks`): a service for a blocked service, the listed domain for a
category or block-list match (so its sub-domains open too), "schedules" for a schedule — more
time lifts the schedule like bonus time — and the site itself otherwise. Approving creates the
same overrides as `filterd allow` / `filterd bonus`, so the daemon applies it within a second.

Limits a child cannot talk past: asking again for the same site merges into the pending
request; at most MAX_PER_HOUR new requests per device (an unnamed device is known by its MAC
where the ARP table has it, else by its address, so a new IP address does not reset it); at most
MAX_PENDING_UNNAMED requests from unnamed devices wait at once, house-wide, so a flood from
made-up devices cannot bury the real ones; after a decline the same device waits
DECLINE_COOLDOWN_S before asking for that site again. The block page tells them which applies.
Parents are told of new requests at most NOTIFY_BURST times per NOTIFY_WINDOW_S; the rest are
summed up in one later notification ("12 more requests").
"""
from __future__ import annotations

import datetime
import re
import sqlite3
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from filterd.family import limits, site_opening
from filterd.store import overrides
from filterd.rules import schedule, suffixes
from filterd.rules.policy import Decision
from filterd.store.state import audit, transaction

MAX_PER_HOUR = 10
MAX_PENDING_UNNAMED = 30
NOTIFY_BURST = 3
NOTIFY_WINDOW_S = 600
DECLINE_COOLDOWN_S = 3600
MESSAGE_MAX = 300
ANSWER_MAX = 300
SCHEDULES = "schedules"          # `unblocks` of a schedule's request: approval lifts schedules
LIMIT_PREFIX = "limit:"          # `unblocks` of a spent limit's request ("limit:youtube"): approval adds minutes

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class RequestRefused(Exception):
    """The child may not ask now; the message says why, in words for a child."""

    def __init__(self, message: str, retry_at: float | None = None):
        super().__init__(message)
        self.retry_at = retry_at


class RequestError(ValueError):
    """A parent's answer that cannot be applied (already answered, unknown request…)."""


@dataclass(frozen=True)
class AccessRequest:
    id: int
    device: str                  # configured device name; "" for a device not named yet
    domain: str
    reason: str                  # what the child was told
    rule: str | None
    unblocks: str
    message: str
    client: str | None
    created: float
    updated: float
    asks: int
    status: str                  # pending | approved | declined
    decided: float | None
    decided_by: str | None
    until: float | None          # end of an approval; None: always (or not approved)
    answer: str
    mac: str | None = None       # an unnamed device's MAC, when the ARP table knew it

    @property
    def more_time(self) -> bool:
        return self.unblocks == SCHEDULES or self.limit is not None

    @property
    def limit(self) -> str | None:
        """The daily limit a "more time" request is for (approval adds minutes to today's)."""
        return self.unblocks[len(LIMIT_PREFIX):] if self.unblocks.startswith(LIMIT_PREFIX) else None


_COLUMNS = ("id, device, domain, reason, rule, unblocks, message, client, created, updated, asks, status, "
            "decided, decided_by, until, answer, mac")


def _row(row) -> AccessRequest:
    return AccessRequest(*row)


def _select(conn: sqlite3.Connection, where: str, args: tuple) -> list[AccessRequest]:
    """Requests matching `where` (SQL text from this module only; values always bound)."""
    sql = f"SELECT {_COLUMNS} FROM access_requests WHERE {where}"   # nosec B608: constant text, bound values
    return [_row(r) for r in conn.execute(sql, args)]


def clean_text(text: str | None, limit: int) -> str:
    """One line of what a person typed: no control or direction-changing characters."""
    return " ".join(_CONTROL.sub(" ", text or "").split())[:limit]


def unblocks_for(decision: Decision, domain: str) -> str:
    """What approving a request for `domain`, blocked by `decision`, should let through."""
    if decision.rule == "schedule":
        return SCHEDULES
    if decision.rule == "limit" and decision.limit:
        return LIMIT_PREFIX + decision.limit
    if decision.service:
        return decision.service
    matched = decision.matched or ""
    if decision.rule in ("category", "profile_block") and matched and "*" not in matched \
            and (domain == matched or domain.endswith("." + matched)) and not suffixes.is_public_suffix(matched):
        return matched   # a list's entry, never a public suffix such as github.io (it opens every site under it)
    return domain[4:] if domain.startswith("www.") and domain.count(".") >= 2 else domain


def suggested_unblock(domain: str, rule: str | None) -> str:
    """What a parent's allow of a logged name starts from: the name without its `www.`."""
    return domain[4:] if domain.startswith("www.") and domain.count(".") >= 2 else domain


def submit(conn: sqlite3.Connection, *, device: str, domain: str, decision: Decision, reason: str,
           message: str, client: str | None, now: float, mac: str | None = None) -> tuple[AccessRequest, bool]:
    """Record a child's request; returns (request, is_new). Raises RequestRefused."""
    message = clean_text(message, MESSAGE_MAX)
    # A named device is one asker whatever its address; an unnamed one is known by its MAC where
    # known (a new address does not make a new asker), else by its address.
    if device:
        who, subject = "device = ?", device
    elif mac:
        who, subject = "device = '' AND mac = ?", mac
    else:
        who, subject = "device = '' AND client = ?", client or ""
    with transaction(conn):
        declined = [r.decided for r in _select(
            conn, f"{who} AND domain = ? AND status = 'declined' AND decided > ? ORDER BY decided DESC LIMIT 1",
            (subject, domain, now - DECLINE_COOLDOWN_S))]
        if declined:
            raise RequestRefused("A parent said no to this site a moment ago.",
                                 retry_at=declined[0] + DECLINE_COOLDOWN_S)
        pending = _select(conn, f"{who} AND domain = ? AND status = 'pending' ORDER BY id DESC LIMIT 1",
                          (subject, domain))
        if pending:
            conn.execute("UPDATE access_requests SET asks = asks + 1, updated = ?, "
                         "message = CASE WHEN ? <> '' THEN ? ELSE message END, reason = ? WHERE id = ?",
                         (now, message, message, reason, pending[0].id))
            return get(conn, pending[0].id), False
        recent = sorted(r.created for r in _select(conn, f"{who} AND created > ?", (subject, now - 3600)))
        if len(recent) >= MAX_PER_HOUR:
            raise RequestRefused("You have asked for a lot of sites this hour.", retry_at=recent[0] + 3600)
        if not device:
            waiting = conn.execute("SELECT count(*) FROM access_requests WHERE device = '' AND status = 'pending'"
                                   ).fetchone()[0]
            if waiting >= MAX_PENDING_UNNAMED:
                raise RequestRefused("Many requests are waiting for a parent's answer already: "
                                     "ask a parent in person, or try again later.")
        cursor = conn.execute(
            "INSERT INTO access_requests (device, domain, reason, rule, unblocks, message, client, created, updated,"
            " mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device, domain, reason, decision.rule, unblocks_for(decision, domain), message, client, now, now,
             None if device else mac))
    return get(conn, cursor.lastrowid), True


def get(conn: sqlite3.Connection, request_id: int) -> AccessRequest | None:
    found = _select(conn, "id = ?", (request_id,))
    return found[0] if found else None


def latest(conn: sqlite3.Connection, device: str, client: str | None, domain: str) -> AccessRequest | None:
    """The newest request of this device (or unnamed client) for this site, for the block page."""
    if device:
        found = _select(conn, "device = ? AND domain = ? ORDER BY id DESC LIMIT 1", (device, domain))
    else:
        found = _select(conn, "device = '' AND client = ? AND domain = ? ORDER BY id DESC LIMIT 1",
                        (client or "", domain))
    return found[0] if found else None


def pending(conn: sqlite3.Connection, limit: int = 100, offset: int = 0) -> list[AccessRequest]:
    """Pending requests, named devices' first (a flood from unnamed ones cannot push them off
    the first page), newest first within each."""
    return _select(conn, "status = 'pending' ORDER BY device = '', updated DESC, id DESC LIMIT ? OFFSET ?",
                   (limit, offset))


def pending_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM access_requests WHERE status = 'pending'").fetchone()[0]


def answered(conn: sqlite3.Connection, since: float, limit: int = 50) -> list[AccessRequest]:
    return _select(conn, "status <> 'pending' AND decided >= ? ORDER BY decided DESC LIMIT ?", (since, limit))


def tonight(now: float, timezone: str) -> float:
    """The next local midnight: "until tonight" lasts the rest of the day."""
    local = datetime.datetime.fromtimestamp(now, ZoneInfo(timezone))
    midnight = (local + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.timestamp()


MORNING = datetime.time(7, 0)       # the wake-up time when the child has no bedtime


def approval_ends(config, request: AccessRequest, now: float) -> dict[str, float]:
    """The moments an approval "until bedtime" and "until tomorrow morning" stand for, for the
    child who asked. Bedtime: the next start of a schedule of their profile that blocks
    everything (none: no "until bedtime"; its day is shown, a Friday's may be Sunday's).
    Morning: the next time that bedtime ends (07:00 without one), so asked at 02:38 it is 07:00
    the same day, not 21 hours away."""
    name = subject_name(config, request)
    device = config.rules.device(name)
    profile = config.rules.profiles.get(device.profile if device else name)
    moment = datetime.datetime.fromtimestamp(now, ZoneInfo(config.timezone))
    out: dict[str, float] = {}
    bedtimes = [s for s in (profile.schedules if profile else ()) if s.block_all]
    starts = [(start, s) for s in bedtimes if (start := schedule.next_start(s, moment)) is not None]
    wake = MORNING
    if starts:
        start, bedtime = min(starts, key=lambda pair: pair[0].timestamp())
        out["bedtime"] = start.timestamp()
        wake = datetime.time((bedtime.end // 60) % 24, bedtime.end % 60)
    day = moment.date() + datetime.timedelta(days=0 if moment.time() < wake else 1)
    out["morning"] = datetime.datetime.combine(day, wake, tzinfo=moment.tzinfo).timestamp()
    return out


def subject_name(config, request: AccessRequest) -> str:
    """Whom an approval applies to: the device, or for a device not named yet the profile every
    unnamed device gets (the parent is told so)."""
    if request.device and config.rules.device(request.device) is not None:
        return request.device
    return config.rules.default_profile


def opening(conn: sqlite3.Connection, config, request: AccessRequest) -> site_opening.Opening:
    """What approving `request` opens: the service, or the site and its companions (offered)."""
    return site_opening.plan(config, conn, request.domain, request.unblocks, device=request.device,
                             client=request.client, around=request.created)


def chosen_companions(plan: site_opening.Opening, chosen: list[str] | None) -> list[str]:
    """The companions a parent ticked, among those offered (None: the pre-ticked ones)."""
    if chosen is None:
        return plan.ticked()
    offered = {c.domain for c in plan.companions}
    return [domain for domain in dict.fromkeys(d.strip().lower() for d in chosen) if domain in offered]


def approve(conn: sqlite3.Connection, config, request_id: int, until: float | None, now: float,
            actor: str, companions: list[str] | None = None) -> AccessRequest:
    """Approve for a while (`until` an epoch second): the whole site opens (site_opening.plan),
    with the `companions` the parent ticked (None: those offered ticked). A permanent approval
    ("always") changes the profile in the config file: the web UI does that edit, then calls
    `mark_approved`."""
    request = require_pending(conn, request_id)
    if until is None:
        raise RequestError("a permanent approval is a change to the profile: use mark_approved after it")
    if until <= now:
        raise RequestError("the approval must end in the future")
    seconds = until - now
    name = subject_name(config, request)
    try:
        with transaction(conn):   # the allow and the answer together, or neither
            if request.limit is not None:
                limits.extend(conn, config, request.device, request.limit, max(1, round(seconds / 60)), now,
                              actor, in_transaction=True)
            elif request.more_time:
                overrides.bonus(conn, config, name, seconds, now, actor)
            else:
                plan = opening(conn, config, request)
                for what in [plan.opens, *chosen_companions(plan, companions)]:
                    try:
                        overrides.allow(conn, config, name, what, seconds, now, actor)
                    except overrides.NoChange:
                        pass        # open already, as long or longer
            return mark_approved(conn, request_id, until, now, actor)
    except (overrides.OverrideError, limits.LimitError) as exc:
        raise RequestError(str(exc)) from None


def mark_approved(conn: sqlite3.Connection, request_id: int, until: float | None, now: float,
                  actor: str) -> AccessRequest:
    request = require_pending(conn, request_id)
    conn.execute("UPDATE access_requests SET status = 'approved', decided = ?, decided_by = ?, until = ? "
                 "WHERE id = ?", (now, actor, until, request_id))
    when = "always" if until is None else f"until {datetime.datetime.fromtimestamp(until):%Y-%m-%d %H:%M}"
    audit(conn, actor, "approve", f"request {request_id}: {request.device or request.client} "
          f"{request.unblocks} {when}", now)
    return get(conn, request_id)


def end_early(conn: sqlite3.Connection, request_id: int, now: float, always: bool = False) -> None:
    """A parent undid the approval: it ended now (its allows were ended by the caller); an
    "always" approval undone ends now too."""
    conn.execute("UPDATE access_requests SET until = ?, updated = ? WHERE id = ? AND status = 'approved'"
                 " AND (until > ? OR (? AND until IS NULL))", (now, now, request_id, now, always))


def decline(conn: sqlite3.Connection, request_id: int, answer: str, now: float, actor: str) -> AccessRequest:
    request = require_pending(conn, request_id)
    answer = clean_text(answer, ANSWER_MAX)
    conn.execute("UPDATE access_requests SET status = 'declined', decided = ?, decided_by = ?, answer = ? "
                 "WHERE id = ?", (now, actor, answer, request_id))
    audit(conn, actor, "decline", f"request {request_id}: {request.device or request.client} {request.domain}", now)
    return get(conn, request_id)


def require_pending(conn: sqlite3.Connection, request_id: int) -> AccessRequest:
    request = get(conn, request_id)
    if request is None:
        raise RequestError(f"there is no request {request_id}")
    if request.status != "pending":
        raise RequestError(f"request {request_id} was already {request.status}")
    return request


def notify_new(conn: sqlite3.Connection, notify_config, filed: AccessRequest, now: float) -> str:
    """Queue the parents' notification of a new request, at most NOTIFY_BURST per NOTIFY_WINDOW_S.

    Past that, the requests are summed up in one notification queued for the window's end
    ("12 more requests"), its count raised by each request held back; the dashboard and
    /requests show them all meanwhile. Returns "told", "summed" or "quiet" (no channel)."""
    from filterd.family import notify

    payload = {"request_id": filed.id, "device": filed.device or f"unnamed device {filed.client}",
               "domain": filed.domain, "reason": filed.reason, "message": filed.message, "asks": filed.asks}
    with transaction(conn):
        conn.execute("DELETE FROM notify_marks WHERE key >= 'request-told:' AND key < 'request-told;' AND ts <= ?",
                     (now - NOTIFY_WINDOW_S,))
        told = [row[0] for row in conn.execute(
            "SELECT ts FROM notify_marks WHERE key >= 'request-told:' AND key < 'request-told;' AND ts > ?"
            " ORDER BY ts", (now - NOTIFY_WINDOW_S,))]
        if len(told) < NOTIFY_BURST:
            if not notify.enqueue(conn, notify_config, "access_request", payload, now):
                return "quiet"
            conn.execute("INSERT OR REPLACE INTO notify_marks (key, ts) VALUES (?, ?)", (f"request-told:{filed.id}", now))
            return "told"
        waiting = conn.execute("SELECT id, payload FROM notifications WHERE event = 'access_request'"
                               " AND sent IS NULL AND given_up IS NULL AND next_try > ?"
                               " AND payload LIKE '%\"summary\": true%'", (now,)).fetchall()
        if waiting:
            import json
            for row_id, body in waiting:
                summary = json.loads(body)
                summary.update(payload, summary=True, more=int(summary.get("more", 0)) + 1)
                conn.execute("UPDATE notifications SET payload = ? WHERE id = ?",
                             (json.dumps(summary, sort_keys=True, default=str), row_id))
            return "summed"
        at = max(told[0] + NOTIFY_WINDOW_S, now + 1)
        if not notify.enqueue(conn, notify_config, "access_request", {**payload, "summary": True, "more": 1}, at):
            return "quiet"
        # The summary counts as one of the next window's notifications.
        conn.execute("INSERT OR REPLACE INTO notify_marks (key, ts) VALUES (?, ?)", (f"request-told:s{filed.id}", at))
        return "summed"
