"""The page a child sees when a blocked name leads here: what, why, when it opens, and "ask".

Any Host that is not one of the filter's admin names gets this page, at any path and method.
The reason comes from policy.decide for the device at the client's address (identified the
same way the daemon does). It says nothing that helps a bypass: no list names, no settings.

The "ask for access" form posts back to the same blocked name. It carries a token bound to the
client's address, the site and the hour (HMAC with a key this process made), so another site
cannot make a child's browser file requests; the page then redirects to itself (GET) and shows
the outcome: sent, approved until…, or declined with the parent's word.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, redirect, render_template, request

from filterd.family import access_requests, limits, site_opening
from filterd.rules import policy
from filterd.dns.clients import read_neighbours
from filterd.rules.explain import explain, weaker, who_is
from filterd.lists.domains import normalise_domain
from filterd.rules import suffixes

from .security import host_of, safe_redirect_target

bp = Blueprint("blockpage", __name__)
log = logging.getLogger("filterd.webui.blockpage")

CHILD_REASONS = {
    "category": "This site is in a group of sites your family has blocked: {what}.",
    "service": "{what} is switched off on this device.",
    "schedule": "It's {what} right now, so this is switched off.",
    "pause": "The internet is paused on this device for now.",
    "limit": "You've used your {what} for today. It's back {back}.",
    "profile_block": "Your parents have blocked this site.",
    "safesearch": "This search engine can't be set to safe mode, so it's blocked.",
    "bypass": "This is switched off on this network.",
    "csam": "This site is blocked.",
}

_TOKEN_KEY = secrets.token_bytes(32)   # per process: a restart only asks a child to reload


def child_reason(config, decision: policy.Decision) -> str:
    what = ""
    if decision.category in config.catalog.categories and decision.rule == "category":
        what = config.catalog.categories[decision.category].name.lower()
    elif decision.service in config.catalog.services:
        what = config.catalog.services[decision.service].name
    if decision.rule == "schedule":
        what = decision.schedule or "quiet time"
    back = ""
    if decision.rule == "limit":
        what, back = _limit_words(config, decision)
    return CHILD_REASONS.get(decision.rule, "This site is blocked on this network.").format(what=what, back=back)


def _limit_words(config, decision: policy.Decision) -> tuple[str, str]:
    """("hour of YouTube", "tomorrow") for a spent limit: the time in words and when it returns."""
    minutes = decision.limit_minutes or 0
    amount = ("hour" if minutes == 60 else f"{minutes // 60} hours" if minutes and minutes % 60 == 0
              else "minute" if minutes == 1 else f"{minutes} minutes" if minutes else "time")
    name = decision.limit or ""
    service = config.catalog.services.get(name)
    label = service.name if service else name.replace("_", " ")
    back = "tomorrow"
    if decision.until is not None:
        now = datetime.datetime.now(decision.until.tzinfo)
        if decision.until.date() == now.date():
            back = f"at {decision.until:%H:%M}"
        elif decision.until.hour or decision.until.minute:
            back = f"tomorrow at {decision.until:%H:%M}"
    return f"{amount} of {label}", back


def ask_token(client: str, domain: str, hour: int) -> str:
    message = f"{client}|{domain}|{hour}".encode()
    return hmac.new(_TOKEN_KEY, message, hashlib.sha256).hexdigest()[:32]


def _token_valid(token: str, client: str, domain: str, now: float) -> bool:
    hour = int(now // 3600)
    sent = token.encode("utf-8", "surrogatepass")    # bytes: a str with non-ASCII characters would raise
    return any(hmac.compare_digest(sent, ask_token(client, domain, h).encode()) for h in (hour, hour - 1))


def decide_for(app_state, ip: str, name: str, now: float):
    """(identity, decision) for the device at `ip` asking for `name`: what the daemon decided for
    it (the same policy and overrides), for this page and for the HTTPS block page's certificates."""
    config = app_state.config()
    neighbours = read_neighbours()
    if not name:
        return who_is(config.rules, ip=ip, neighbours=neighbours), None
    try:
        active = limits.overrides_in_force(app_state.db(), config, now)
    except Exception:    # a state DB that cannot be read must not hide the block page
        active = ()
    moment = datetime.datetime.fromtimestamp(now, ZoneInfo(config.timezone))
    return explain(app_state.policy(), name, 1, moment, active, ip=ip, neighbours=neighbours)


def after_that(app_state, identity, name: str, decision, now: float) -> str | None:
    """For a block a child can wait out (bedtime, a pause, a spent limit), whether the site opens
    then: "After bedtime, this site stays blocked: …" tells them waiting or more time will not
    help. The same `weaker` as `filterd explain` and the log's "why?"."""
    if decision is None or decision.rule not in ("schedule", "pause", "limit"):
        return None
    config = app_state.config()
    try:
        active = limits.overrides_in_force(app_state.db(), config, now)
    except Exception:    # as in decide_for: the page must show without the state DB
        active = ()
    moment = datetime.datetime.fromtimestamp(now, ZoneInfo(config.timezone))
    for _, other in weaker(app_state.policy(), identity, name, 1, moment, decision, active):
        if other.blocked:
            when = {"schedule": f"After {decision.schedule or 'this quiet time'}", "pause": "After the pause",
                    "limit": "Even with more time"}[decision.rule]
            reason = child_reason(config, other)
            return f"{when}, this site stays blocked: {reason[:1].lower()}{reason[1:]}"
    return None


@bp.route("/__blocked__", endpoint="page")
def page():
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    name = normalise_domain(host_of(request.headers.get("Host", ""))) or ""
    ip = request.remote_addr or ""
    now = time.time()
    tz = ZoneInfo(config.timezone)
    db = app_state.db()
    identity, decision = decide_for(app_state, ip, name, now)
    protected = decision is not None and decision.rule == "csam"
    device = identity.device or ""
    can_ask = bool(name) and decision is not None and decision.blocked and not protected

    latest = access_requests.latest(db, device, ip, name) if name and not protected else None
    missing = _still_missing(app_state, db, device, ip, name, latest, now) \
        if name and decision is not None and not decision.blocked else []

    notice, asked = None, False
    if request.method == "POST" and can_ask:
        notice, asked = _ask(config, db, device, ip, name, decision, now, identity.mac), True
    elif request.method == "POST" and missing and request.form.get("also"):
        # One more request, for what the opened site still misses: filed for the most refused
        # name, the others named in its message (the parent's approval offers them as companions).
        first = missing[0]
        _, first_decision = decide_for(app_state, ip, first.name, now)
        notice = _ask(config, db, device, ip, first.name, first_decision, now, identity.mac,
                      token_domain=name, message=f"Needed by {name}: {', '.join(m.name for m in missing)}")
        asked = True
    if asked and notice is None:
        # Post/redirect/get: a reload shows the outcome instead of asking again.
        return redirect(own_path(), 303)

    status = _status(latest, now, tz)
    return render_template(
        "blockpage.html", name=None if protected else name, decision=decision, protected=protected,
        reason=child_reason(config, decision) if decision else "This page is not available.",
        until=decision.until.astimezone(tz).strftime("%H:%M")
        if decision and decision.until and decision.rule != "limit" else None,     # a limit's reason says when
        can_ask=can_ask and (status is None or status["kind"] not in ("pending", "cooldown")),
        more_time=decision is not None and decision.rule in ("schedule", "pause", "limit"),
        after_that=after_that(app_state, identity, name, decision, now) if decision and decision.blocked else None,
        status=status, notice=notice, token=ask_token(ip, name, int(now // 3600)), missing=missing,
        missing_status=_status(access_requests.latest(db, device, ip, missing[0].name), now, tz) if missing else None,
    ), 403 if decision and decision.blocked else 200


@dataclass(frozen=True)
class Missing:
    name: str
    reason: str


def _still_missing(app_state, db, device: str, ip: str, name: str, latest, now: float) -> list[Missing]:
    """On the reload of a site a parent opened: the names this device was refused around it that
    are still blocked (its CDN, its API), so the child can ask for them in one tap."""
    site = suffixes.registrable(name)
    since = (latest.created - site_opening.WINDOW_BEFORE_S) if latest else now - site_opening.STILL_REFUSED_S
    try:
        names = site_opening.still_refused(db, site, device, ip, since, now)
    except Exception:    # the log cannot be read: the page still says the site is open
        log.exception("could not read what %s still misses", name)
        return []
    out = []
    for other in names:
        _, decision = decide_for(app_state, ip, other, now)
        if decision is not None and decision.blocked and decision.rule != "csam":
            out.append(Missing(other, child_reason(app_state.config(), decision)))
    return out


def own_path() -> str:
    """This page's own path for the redirect after asking, normalised so it can only name this
    host: no control characters, spaces or backslashes (a browser drops a tab, so `/%09/evil.example`
    would be `//evil.example`, another site), one leading slash, percent-encoded; the query kept."""
    path = "".join(c for c in request.path if c > " " and c not in "\\\x7f")
    target = quote("/" + path.lstrip("/"), safe="/-._~!$&'()*+,;=:@")
    if request.query_string:
        target += "?" + quote(request.query_string.decode("latin-1"), safe="/-._~!$&'()*+,;=:@?%")
    return safe_redirect_target(target, "/")


def _ask(config, db, device: str, client: str, domain: str, decision, now: float,
         mac: str | None = None, token_domain: str | None = None, message: str | None = None) -> str | None:
    """File the child's request for `domain`; returns a message to show instead when it cannot be
    filed. `token_domain`: the page's own name when it asks for another (what an open site misses)."""
    page_domain = token_domain or domain
    if not _token_valid(request.form.get("token", ""), client, page_domain, now):
        return "This page was open for a long time: please try again."
    origin = request.headers.get("Origin")   # "null" from privacy-minded browsers: the token suffices
    if origin and origin != "null" and host_of(origin.split("://", 1)[-1].split("/", 1)[0]) != page_domain:
        return "Please ask from this page."
    try:
        filed, new = access_requests.submit(
            db, device=device, domain=domain, decision=decision, reason=child_reason(config, decision),
            message=message if message is not None else request.form.get("message", ""), client=client,
            now=now, mac=mac)
    except access_requests.RequestRefused as refused:
        if refused.retry_at:
            at = datetime.datetime.fromtimestamp(refused.retry_at, ZoneInfo(config.timezone))
            return f"{refused} You can ask again at {at:%H:%M}."
        return str(refused)
    if new:
        _notify(config, db, filed, now)
    return None


def _notify(config, db, filed, now: float) -> None:
    try:
        access_requests.notify_new(db, config.notify, filed, now)
    except Exception:   # the child's request is recorded; the dashboard shows it regardless
        log.exception("could not queue the notification for request %d", filed.id)


def _status(latest, now: float, tz) -> dict | None:
    """What became of the child's last request for this site, in words for the child."""
    if latest is None:
        return None
    def at(ts):
        return datetime.datetime.fromtimestamp(ts, tz).strftime("%H:%M")
    if latest.status == "pending":
        return {"kind": "pending", "text": f"You asked at {at(latest.created)}. A parent will answer soon."}
    if latest.status == "approved":
        if latest.until is None:
            return {"kind": "approved", "text": "A parent said yes."}
        if latest.until > now:
            return {"kind": "approved", "text": f"A parent said yes until {at(latest.until)}."}
        return None   # an approval that ran out: the child may ask again
    if latest.status == "declined":
        answer = f": “{latest.answer}”." if latest.answer else "."
        cooldown_end = (latest.decided or 0) + access_requests.DECLINE_COOLDOWN_S
        if cooldown_end > now:
            return {"kind": "cooldown", "text": f"A parent said no{answer} You can ask again at {at(cooldown_end)}."}
        return {"kind": "declined", "text": f"A parent said no{answer}"}
    return None
