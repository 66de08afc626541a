"""Children's access requests: the parents' /requests page, and the answer shared with the API.

Approve for 15 minutes, an hour, until midnight (temporary overrides, applied by the daemon
within a second), or always (the site goes into the profile's allow list, or a blocked service
is unblocked for the profile, through the same validated config edit as the profile page). A
decline may carry a word back, which the child sees on the block page.
"""
from __future__ import annotations

import datetime
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from filterd.family import access_requests
from filterd.family.access_requests import AccessRequest

from . import actions
from .security import flash

bp = Blueprint("requests", __name__)

APPROVE_CHOICES = {"15": 15 * 60, "60": 3600, "tonight": None, "always": None}
ANSWERED_SHOWN_S = 7 * 86400
PAGE_SIZE = 20          # pending requests per page (and on the home page, with a link to the rest)


def _state():
    app_state = current_app.extensions["filterd"]
    return app_state.config(), app_state.db()


def describe(config, item: AccessRequest, db=None) -> dict:
    """What the parent needs to answer: who, what, why, and what approving lets through (with
    `db`, for a pending request: the whole site, its companions offered as checkboxes)."""
    device = item.device or f"unnamed device ({item.client})"
    if item.limit is not None:
        unblocks = f"more time for today's {item.limit} limit"
    elif item.more_time:
        unblocks = "more time: lifts the schedule"
    elif item.unblocks in config.catalog.services:
        unblocks = f"the service {config.catalog.services[item.unblocks].name}"
    else:
        unblocks = item.unblocks
    plan = None
    if db is not None and item.status == "pending" and not item.more_time:
        plan = access_requests.opening(db, config, item)
        if plan.service:
            service = config.catalog.services[plan.service]
            unblocks = f"the service {service.name} ({', '.join(service.domains[:4])}" + \
                ("…)" if len(service.domains) > 4 else ")")
        else:
            unblocks = plan.opens
    applies_to = access_requests.subject_name(config, item)
    if applies_to == item.device:
        applies_to, also = None, []
    else:   # the default profile answers for an unnamed device: its named devices get it too
        also = [d.name for d in config.rules.devices if d.profile == applies_to]
    ends = access_requests.approval_ends(config, item, time.time()) if item.status == "pending" else {}
    return {"request": item, "device": device, "unblocks": unblocks, "applies_to": applies_to,
            "also_named": also, "always_allowed": not item.more_time,
            "companions": list(plan.companions) if plan else [], "ends": ends,
            "morning_words": _morning_words(ends.get("morning"), config.timezone)}


def _morning_words(until: float | None, timezone: str) -> str:
    """"Until tomorrow morning", or "Until this morning" when asked in the small hours."""
    if until is None:
        return ""
    tz = ZoneInfo(timezone)
    same_day = datetime.datetime.fromtimestamp(until, tz).date() == datetime.datetime.now(tz).date()
    return "Until this morning" if same_day else "Until tomorrow morning"


def answer(config, db, request_id: int, choice: str | None, answer_text: str = "",
           companions: list[str] | None = None) -> AccessRequest:
    """Approve (`choice`: minutes as text, "bedtime", "morning", "tonight" or "always") or, with
    choice None, decline.
    `companions`: the names the parent ticked among those offered (None: the pre-ticked ones)."""
    now = time.time()
    actor = g.get("actor", "web UI")
    try:
        if choice is None:
            return access_requests.decline(db, request_id, answer_text, now, actor)
        if choice == "always":
            item = access_requests.require_pending(db, request_id)
            if item.more_time:
                raise actions.ActionError("More time can only be given for a while.", "for")
            _always(config, db, item, companions)
            return access_requests.mark_approved(db, request_id, None, now, actor)
        if choice == "tonight":
            until = access_requests.tonight(now, config.timezone)
        elif choice in ("bedtime", "morning"):
            ends = access_requests.approval_ends(config, access_requests.require_pending(db, request_id), now)
            if choice not in ends:
                raise actions.ActionError("This child has no bedtime: choose how long.", "for")
            until = ends[choice]
        else:
            try:
                minutes = float(choice)
            except ValueError:
                raise actions.ActionError("Choose how long: 15, 60, tonight or always.", "for") from None
            if not 1 <= minutes <= 366 * 1440:
                raise actions.ActionError("Minutes must be between 1 and a year.", "minutes")
            until = now + minutes * 60
        return access_requests.approve(db, config, request_id, until, now, actor, companions)
    except access_requests.RequestError as exc:
        raise actions.ActionError(str(exc).capitalize() + ".", "request") from None


def _always(config, db, item: AccessRequest, companions: list[str] | None = None) -> None:
    """A permanent approval: the profile of that device lets the site (or service) through,
    with the companions the parent ticked."""
    name = access_requests.subject_name(config, item)
    device = config.rules.device(name)
    profile = config.rules.profiles[device.profile if device else name]
    plan = access_requests.opening(db, config, item)
    if plan.service:
        service = config.catalog.services[plan.service]
        if plan.service in profile.block_services:
            actions.set_profile_list(db, None, profile.name, "block_services",
                                      [s for s in profile.block_services if s != plan.service])
        else:   # blocked by a category or a schedule's service list: allow the service's domains
            actions.add_to_profile(db, profile.name, "allow", *service.domains)
    else:
        actions.add_to_profile(db, profile.name, "allow", plan.opens,
                               *access_requests.chosen_companions(plan, companions))


def pending_for_page(config, db, limit: int = PAGE_SIZE, offset: int = 0) -> list[dict]:
    return [describe(config, r, db) for r in access_requests.pending(db, limit, offset)]


def lists_for_page(config, db, now: float, limit: int = PAGE_SIZE, offset: int = 0) -> tuple[list[dict], list[dict]]:
    answered = [describe(config, r) for r in access_requests.answered(db, now - ANSWERED_SHOWN_S)]
    return pending_for_page(config, db, limit, offset), answered


def page_number(text: str | None) -> int:
    try:
        return max(1, min(int(text or 1), 10_000))
    except ValueError:
        return 1


@bp.route("/requests")
def page():
    config, db = _state()
    number = page_number(request.args.get("page"))
    total = access_requests.pending_count(db)
    pages = max(1, -(-total // PAGE_SIZE))
    number = min(number, pages)
    pending, answered = lists_for_page(config, db, time.time(), PAGE_SIZE, (number - 1) * PAGE_SIZE)
    return render_template("requests.html", pending=pending, answered=answered, back="requests",
                           tz=ZoneInfo(config.timezone), page=number, pages=pages, total=total, now=time.time())


@bp.route("/requests/<int:request_id>/approve", methods=["POST"])
def approve(request_id: int):
    return _answer(request_id, request.form.get("for", ""))


@bp.route("/requests/<int:request_id>/decline", methods=["POST"])
def decline(request_id: int):
    return _answer(request_id, None)


@bp.route("/requests/<int:request_id>/undo", methods=["POST"])
def undo(request_id: int):
    """End an approval early: the allows it made (the site or service and its companions), or
    the bonus time of a "more time" approval."""
    config, db = _state()
    item = access_requests.get(db, request_id)
    if item is None or item.status != "approved" or item.limit is not None:
        flash("That approval cannot be undone here.", "error")
        return redirect(url_for("requests.page"), 303)
    who = access_requests.subject_name(config, item)
    ended = 0
    if item.until is None and not item.more_time:       # "always": take back what it added to the profile
        device = config.rules.device(who)
        profile = config.rules.profiles[device.profile if device else who]
        plan = access_requests.opening(db, config, item)
        names = list(config.catalog.services[plan.service].domains) if plan.service else \
            [plan.opens, *(c.domain for c in plan.companions)]
        try:
            if plan.service and not any(n in profile.allow for n in names):
                actions.set_profile_list(db, None, profile.name, "block_services",
                                         [*profile.block_services, plan.service])
            else:
                actions.remove_from_profile(db, profile.name, "allow", *names)
        except actions.ActionError as exc:
            flash(str(exc), "error")
            return redirect(url_for("requests.page"), 303)
        access_requests.end_early(db, item.id, time.time(), always=True)
        flash(f"Undone: {item.domain} is off the {profile.name} profile's allowed sites.", "ok")
        return redirect(url_for("requests.page"), 303)
    try:
        if item.more_time:
            ended = actions.undo(config, db, who, "bonus")
        else:
            plan = access_requests.opening(db, config, item)
            for what in [plan.opens, *(c.domain for c in plan.companions)]:
                try:
                    ended += actions.undo(config, db, who, "allow", what)
                except actions.NoChange:
                    pass
    except actions.ActionError as exc:
        flash(str(exc), "error")
        return redirect(url_for("requests.page"), 303)
    if ended:
        access_requests.end_early(db, item.id, time.time())
        flash(f"Undone: {item.domain} is blocked again for {who}.", "ok")
    else:
        flash(f"Nothing to undo: the approval of {item.domain} had ended already.", "error")
    return redirect(url_for("requests.page"), 303)


def _answer(request_id: int, choice: str | None):
    config, db = _state()
    try:
        companions = request.form.getlist("companion") if request.form.get("companions_offered") else None
        item = answer(config, db, request_id, choice, request.form.get("answer", ""), companions)
    except actions.ActionError as exc:
        flash(str(exc), "error")
    else:
        described = describe(config, item)
        who = asker = item.device or item.client
        if described["applies_to"]:      # an approval reaches exactly whom the card said
            who = f"profile {described['applies_to']}: every unnamed device" + \
                (f" and {', '.join(described['also_named'])}" if described["also_named"] else "")
        if item.status == "declined":
            flash(f"Declined {item.domain} for {asker}.", "ok")
        elif item.until is None:
            flash(f"{item.domain} is allowed for {who} from now on.", "ok")
        else:
            flash(f"Approved {item.domain} for {who} until {_clock(item.until, config.timezone)}.", "ok")
    back = url_for("dashboard.index") if request.form.get("back") == "dashboard" else url_for("requests.page")
    return redirect(back, 303)


def _clock(ts: float, timezone: str) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(ts, ZoneInfo(timezone)).strftime("%H:%M")
