"""The query log: filters, paging, "why?" for each line, one-tap allow/block for the profile."""
from __future__ import annotations

import datetime
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for

from filterd.family import limits
from filterd.store import log_reader
from filterd.rules.explain import explain, weaker
from filterd.store import overrides as overrides_store
from filterd.lists.domains import normalise_domain

from . import actions
from .security import flash, safe_redirect_target

bp = Blueprint("log", __name__)

SINCE_CHOICES = {"1h": 3600, "24h": 86400, "night": None, "7d": 7 * 86400, "30d": 30 * 86400}
NIGHT_STARTS, NIGHT_ENDS = 20, 7        # "last night": 20:00 yesterday to 07:00 today, house time
# Why a query was decided as it was, in a parent's words → the rules (Decision.rule) it covers.
REASONS = {"schedule": ("Bedtime and other schedules", ("schedule",)),
           "pause": ("Paused", ("pause",)),
           "category": ("A blocked category", ("category",)),
           "service": ("A blocked app", ("service",)),
           "limit": ("A daily limit used up", ("limit",)),
           "parent": ("A parent's own rule", ("profile_block", "allow_list", "temporary_allow")),
           "safesearch": ("SafeSearch", ("safesearch",))}


def last_night(now: float, tz: ZoneInfo) -> tuple[float, float]:
    """The last night that has begun: 20:00 → 07:00 in the house's time zone."""
    moment = datetime.datetime.fromtimestamp(now, tz)
    start_day = moment.date() - datetime.timedelta(days=0 if moment.hour >= NIGHT_STARTS else 1)
    start = datetime.datetime.combine(start_day, datetime.time(NIGHT_STARTS), tzinfo=tz)
    end = datetime.datetime.combine(start_day + datetime.timedelta(days=1), datetime.time(NIGHT_ENDS), tzinfo=tz)
    return start.timestamp(), end.timestamp()


def query_filter(args, tz: ZoneInfo | None = None) -> tuple[log_reader.QueryFilter, dict]:
    """The log's filters from a query string (shared with the API)."""
    since_key = args.get("since", "24h")
    if since_key not in SINCE_CHOICES:
        since_key = "24h"
    until = None
    if since_key == "night":
        since, until = last_night(time.time(), tz or ZoneInfo("UTC"))
    else:
        since = time.time() - SINCE_CHOICES[since_key]
    reason = args.get("reason", "")
    reason = reason if reason in REASONS else ""
    action = args.get("decision") or None
    if action not in (None, "allow", "block", "blocked", "rewrite", "local", "nxdomain"):
        action = None
    chosen = {"device": args.get("device", ""), "decision": action or "", "category": args.get("category", ""),
              "q": args.get("q", "")[:100], "since": since_key, "reason": reason}
    return log_reader.QueryFilter(device=chosen["device"] or None, action=action, category=chosen["category"] or None,
                                  text=chosen["q"] or None, since=since, until=until,
                                  rules=REASONS[reason][1] if reason else None), chosen


@bp.route("/log")
def index():
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    db = app_state.db()
    filters, chosen = query_filter(request.args, ZoneInfo(config.timezone))
    before = request.args.get("before", type=int)
    floor = log_reader.text_scan_floor(db, filters, before)
    rows = log_reader.recent_queries(db, filters, limit=50, before_id=before, floor=floor)
    searched_to = None
    if len(rows) == 50:
        next_before = rows[-1].id
    elif floor is not None:     # this page read as far back as one page may: offer to go on
        next_before = floor
        searched_to = log_reader.time_of_row(db, floor)
    else:
        next_before = None
    return render_template("log.html", rows=rows, chosen=chosen, tz=ZoneInfo(config.timezone),
                           devices=[d.name for d in config.rules.devices],
                           categories=config.catalog.categories, profiles=config.rules.profiles,
                           device_profile={d.name: d.profile for d in config.rules.devices},
                           next_before=next_before, searched_to=searched_to, since_choices=SINCE_CHOICES,
                           reasons=REASONS)


def why_decided(config, name: str, device: str | None, qtype: int = 1, at: float | None = None):
    """(who, decision): the same explanation `filterd explain` prints, for the web UI. A device
    name that is no longer in the config is explained as an unnamed device."""
    app_state = current_app.extensions["filterd"]
    moment = datetime.datetime.fromtimestamp(at or time.time(), ZoneInfo(config.timezone))
    active = limits.overrides_in_force(app_state.db(), config, moment.timestamp())
    known = device if config.rules.device(device) else None
    return explain(app_state.policy(), name, qtype, moment, active, device=known)


@bp.route("/log/why")
def why():
    config = current_app.extensions["filterd"].config()
    name = normalise_domain(request.args.get("name", ""))
    if name is None:
        abort(400, description="That is not a domain name.")
    device = request.args.get("device") or None
    qtype = request.args.get("qtype", 1, type=int)
    app_state = current_app.extensions["filterd"]
    tz = ZoneInfo(config.timezone)
    # A log row's "why?" explains that row: what the filter said then (stored with the row), and
    # the decision re-made at the row's time with the overrides then in force.
    logged = then = None
    row_id = request.args.get("row", type=int)
    if row_id is not None:
        logged = log_reader.query_row(app_state.db(), row_id)
        if logged is not None and logged.name == name:
            moment = datetime.datetime.fromtimestamp(logged.ts, tz)
            active = overrides_store.in_force_at(app_state.db(), logged.ts)
            known = logged.device if config.rules.device(logged.device) else None
            then_who, then_decision = explain(app_state.policy(), name, logged.qtype, moment, active, device=known)
            then = {"decision": then_decision, "moment": moment,
                    "weaker": weaker(app_state.policy(), then_who, name, logged.qtype, moment, then_decision, active)}
        else:
            logged = None
    who, decision = why_decided(config, name, device, qtype)
    now = datetime.datetime.now(tz)
    also = weaker(app_state.policy(), who, name, qtype, now, decision,
                  limits.overrides_in_force(app_state.db(), config, now.timestamp()))
    return render_template("why.html", name=name, device=who.device or device, decision=decision,
                           tz=tz, categories=config.catalog.categories, weaker=also, logged=logged, then=then,
                           services=config.catalog.services, profile=who.profile)


@bp.route("/log/rule", methods=["POST"])
def rule():
    """One tap: allow or block a domain for a profile (written to the config)."""
    db = current_app.extensions["filterd"].db()
    name = normalise_domain(request.form.get("name", ""))
    key = "allow" if request.form.get("action") == "allow" else "block"
    profile = request.form.get("profile", "")
    if name is None:
        flash("That is not a domain name.", "error")
    else:
        try:
            actions.add_to_profile(db, profile, key, name)
            flash(f"{name} {'allowed' if key == 'allow' else 'blocked'} for profile {profile}. "
                  "The filter applies it within a second.", "ok")
        except actions.ActionError as exc:
            flash(str(exc), "error")
    return redirect(safe_redirect_target(request.form.get("back"), url_for("log.index")))


ALLOW_FOR = {"60": ("for 1 hour", 3600), "today": ("today", None), "always": ("until undone", None)}


def _allow_choices(now: float, timezone: str) -> dict[str, str]:
    """The dialog's "how long", each with the day and time it ends (asked at 02:38, "today"
    lasts 21 hours: the parent sees so)."""
    from filterd.family import access_requests

    tz = ZoneInfo(timezone)

    def at(ts: float) -> str:
        return datetime.datetime.fromtimestamp(ts, tz).strftime("%a %H:%M")
    return {"60": f"For 1 hour (until {at(now + 3600)})",
            "today": f"Today (until {at(access_requests.tonight(now, timezone))})",
            "always": "Until undone"}


@bp.route("/log/allow", methods=["GET", "POST"])
def allow():
    """Allow a site from a log row, asking first: for whom (this device, the whole profile), for
    how long (1 h, today, always) and whether bedtime and other schedules still apply. The answer
    page says what was done and offers its Undo. Opens the whole site (site_opening.plan)."""
    from filterd.family import access_requests, site_opening

    app_state = current_app.extensions["filterd"]
    config, db = app_state.config(), app_state.db()
    row = log_reader.query_row(db, request.values.get("row", type=int) or 0)
    if row is None or not row.name:
        abort(404, description="That log row is gone (the log keeps 30 days).")
    device = config.rules.device(row.device) if row.device else None
    if device is None:
        abort(400, description="Name this device first (Devices page): then it can be given a site.")
    plan = site_opening.plan(config, db, row.name, access_requests.suggested_unblock(row.name, row.rule),
                             device=device.name, around=row.ts)
    shown = config.catalog.services[plan.service].name if plan.service else plan.opens
    if request.method == "GET":
        return render_template("log_allow.html", row=row, device=device, plan=plan, shown=shown,
                               choices=_allow_choices(time.time(), config.timezone), tz=ZoneInfo(config.timezone))
    form = request.form
    who = device.profile if form.get("who") == "profile" else device.name
    choice = form.get("for", "60")
    if choice not in ALLOW_FOR:
        abort(400, description="Choose how long.")
    keep = form.get("keep_schedules") == "on"
    seconds = ALLOW_FOR[choice][1]
    if choice == "today":
        seconds = access_requests.tonight(time.time(), config.timezone) - time.time()
    chosen = access_requests.chosen_companions(plan, form.getlist("companion"))
    done: list[str] = []
    for what in [plan.opens, *chosen]:
        try:
            actions.allow_for(config, db, who, what, seconds, keep)
            done.append(what)
        except actions.NoChange:
            pass
        except actions.ActionError as exc:
            flash(str(exc), "error")
            return redirect(url_for("log.allow", row=row.id))
    until = (datetime.datetime.fromtimestamp(time.time() + seconds, ZoneInfo(config.timezone))
             .strftime("%a %H:%M") if seconds else None)
    return render_template("log_allowed.html", row=row, device=device, who=who, shown=shown, done=done,
                           scope="profile" if who != device.name else "device", until=until, keep=keep)


@bp.route("/log/allow/undo", methods=["POST"])
def undo_allow():
    """The Undo on the page that says what an allow from the log did: ends each name it opened."""
    app_state = current_app.extensions["filterd"]
    config, db = app_state.config(), app_state.db()
    device = config.rules.device(request.form.get("device", ""))
    if device is None:
        abort(404, description="There is no device with that name.")
    who = device.profile if request.form.get("scope") == "profile" else device.name
    ended = 0
    for what in request.form.getlist("what")[:50]:
        try:
            ended += actions.undo(config, db, who, "allow", what)
        except actions.ActionError:
            pass
    flash(f"Undone: {ended} allow{'s' if ended != 1 else ''} ended for {who}." if ended
          else "Nothing to undo: it had ended already.", "ok" if ended else "error")
    return redirect(url_for("log.index"))
