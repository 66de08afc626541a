"""`/me`: a child's own page — what this device may still do today.

No login: the device is found by the address it comes from, as the block page finds it, and
the page shows only that device's own limits, bedtime and pause, nothing about anyone else.
"""
from __future__ import annotations

import datetime
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template, request

from filterd.dns.clients import read_neighbours
from filterd.family import limits
from filterd.rules.explain import who_is
from filterd.rules.schedule import window_end
from filterd.store import overrides

from . import actions

bp = Blueprint("me", __name__)


def _days(days: frozenset[int]) -> str:
    """{0, 1, 2, 3, 6} → "Sun–Thu"-like words a child reads at a glance."""
    names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    if len(days) == 7:
        return "every day"
    if days == frozenset(range(5)):
        return "school days"
    if days == frozenset({6, 0, 1, 2, 3}):
        return "school nights (Sunday to Thursday)"
    if days == frozenset({5, 6}):
        return "weekends"
    return ", ".join(names[d] for d in sorted(days))


@bp.get("/me")
def page():
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    db = app_state.db()
    ip = request.remote_addr or ""
    who = who_is(config.rules, ip=ip, neighbours=read_neighbours())
    tz = ZoneInfo(config.timezone)
    now = time.time()
    moment = datetime.datetime.fromtimestamp(now, tz)
    profile = config.rules.profiles[who.profile]
    active = overrides.active(db, now)
    mine = [o for o in active if (o.subject_kind == "device" and o.subject == who.device)
            or (o.subject_kind == "profile" and o.subject == who.profile)]
    pause = next((o for o in mine if o.kind == "pause"), None)
    bonus = next((o for o in mine if o.kind == "bonus"), None)
    schedules = []
    for schedule in profile.schedules:
        end = window_end(schedule, moment)
        schedules.append({"name": schedule.name, "on": end is not None and bonus is None,
                          "start": f"{schedule.start // 60:02d}:{schedule.start % 60:02d}",
                          "end": f"{schedule.end // 60:02d}:{schedule.end % 60:02d}" if schedule.end < 1440 else "midnight",
                          "days": _days(schedule.days)})
    rows = limits.usage(db, config, who.device, now) if who.device and profile.limits else []
    labels = {row.name: actions.limit_label(config, row.name) for row in rows}
    return render_template("me.html", who=who, pause=pause, bonus=bonus, schedules=schedules, limits=rows, tz=tz,
                           labels=labels, when=lambda reset: _when(reset, moment))


def _when(moment: datetime.datetime, now: datetime.datetime) -> str:
    """"tomorrow at 00:00", "today at 04:00", "Sunday at 00:00"."""
    days = (moment.date() - now.date()).days
    day = "today" if days == 0 else "tomorrow" if days == 1 else moment.strftime("%A")
    return f"{day} at {moment:%H:%M}"
