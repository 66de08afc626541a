"""The page a child sees when a blocked name leads here: what, why, and when it opens again.

Any Host that is not one of the filter's admin names gets this page, at any path and method.
The reason comes from policy.decide for the device at the client's address (identified the
same way the daemon does). It says nothing that helps a bypass: no list names, no settings.
"""
from __future__ import annotations

import datetime
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template, request

from filterd import overrides, policy
from filterd.clients import ClientMap, read_neighbours
from filterd.domains import normalise_domain

from .security import host_of

bp = Blueprint("blockpage", __name__)

CHILD_REASONS = {
    "category": "This site is in a group of sites your family has blocked: {what}.",
    "service": "{what} is switched off on this device.",
    "schedule": "It's {what} right now, so this is switched off.",
    "pause": "The internet is paused on this device for now.",
    "profile_block": "Your parents have blocked this site.",
    "safesearch": "This search engine can't be set to safe mode, so it's blocked.",
    "bypass": "This is switched off on this network.",
    "csam": "This site is blocked.",
}


def child_reason(config, decision: policy.Decision) -> str:
    what = ""
    if decision.rule == "category" and decision.category in config.catalog.categories:
        what = config.catalog.categories[decision.category].name.lower()
    elif decision.rule == "service" and decision.service in config.catalog.services:
        what = config.catalog.services[decision.service].name
    elif decision.rule == "schedule":
        what = decision.schedule or "quiet time"
    return CHILD_REASONS.get(decision.rule, "This site is blocked on this network.").format(what=what)


@bp.route("/__blocked__", endpoint="page")
def page():
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    name = normalise_domain(host_of(request.headers.get("Host", ""))) or ""
    ip = request.remote_addr or ""
    identity = ClientMap(config.rules).identify(ip, read_neighbours().get(ip))
    moment = datetime.datetime.now(ZoneInfo(config.timezone))
    try:
        active = overrides.active(app_state.db(), time.time())
    except Exception:
        active = ()
    decision = policy.decide(app_state.policy(), identity.profile, name, 1, moment, identity.device, active) \
        if name else None
    protected = decision is not None and decision.rule == "csam"
    return render_template("blockpage.html", name=None if protected else name, decision=decision,
                           reason=child_reason(config, decision) if decision else "This page is not available.",
                           protected=protected), 403 if decision and decision.blocked else 200
