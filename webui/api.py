"""The JSON API (for home automation and the pages' own scripts); same auth as the pages.

Errors are `{"error": "…", "field": "…"}` with a 4xx status. See docs/api.md.
"""
from __future__ import annotations

import time
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, jsonify, request

from filterd.family import access_requests
from filterd.store import log_reader

from . import request_pages as access_requests_page
from . import actions
from .dashboard import daemon_status
from .devices import device_rows
from .log import query_filter

bp = Blueprint("api", __name__, url_prefix="/api")


def _state():
    app_state = current_app.extensions["filterd"]
    return app_state.config(), app_state.db()


class NotFound(actions.ActionError):
    """The device or profile in the URL does not exist (404)."""


def _body() -> dict:
    """The request's JSON object; an empty body is {} (e.g. a pause with no minutes)."""
    if not request.get_data(cache=True).strip():
        return {}
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise actions.ActionError("the body must be a JSON object, e.g. {\"minutes\": 30}", None)
    return data


@bp.errorhandler(actions.ActionError)
def action_error(exc: actions.ActionError):
    if isinstance(exc, actions.NoChange):
        # Nothing changed: undo of nothing in force is "not found"; an allow already there is fine.
        return jsonify({"ok": request.method != "DELETE", "changed": False, "error": str(exc)}), \
            404 if request.method == "DELETE" else 200
    status = 404 if isinstance(exc, NotFound) else 409 if exc.field == "version" else 400
    return jsonify({"error": str(exc), "field": exc.field}), status


def _device_name(config, name: str) -> str:
    device = config.rules.device(name)
    if device is None:
        raise NotFound(f"no device named {name}", "name")
    return device.name


@bp.get("/status")
def status():
    config, db = _state()
    return jsonify(daemon_status(db, config))


@bp.get("/devices")
def devices():
    config, db = _state()
    paused = actions.paused(db)
    rows = device_rows(config, db)
    for row in rows:
        row["paused"] = row["name"] in paused
        row["paused_until"] = paused.get(row["name"])
    return jsonify(rows)


@bp.post("/devices/<name>/pause")
def pause(name):
    config, db = _state()
    actions.pause(config, db, _device_name(config, name), _body().get("minutes"))
    return jsonify({"ok": True})


@bp.post("/devices/<name>/resume")
def resume(name):
    config, db = _state()
    return jsonify({"ok": True, "resumed": actions.resume(config, db, _device_name(config, name))})


@bp.post("/devices/<name>/allow")
def allow(name):
    config, db = _state()
    body = _body()
    keep = body.get("keep_schedules", False)
    if not isinstance(keep, bool):
        raise actions.ActionError("keep_schedules must be true or false", "keep_schedules")
    actions.allow(config, db, _device_name(config, name), str(body.get("domain") or body.get("service") or ""),
                  body.get("minutes"), keep_schedules=keep)
    return jsonify({"ok": True, "changed": True})


@bp.delete("/devices/<name>/allow/<what>")
def undo_allow(name, what):
    config, db = _state()
    return jsonify({"ok": True, "changed": True, "ended": actions.undo(config, db, _device_name(config, name),
                                                                        "allow", what)})


@bp.delete("/devices/<name>/bonus")
def undo_bonus(name):
    config, db = _state()
    return jsonify({"ok": True, "changed": True, "ended": actions.undo(config, db, _device_name(config, name), "bonus")})


@bp.delete("/devices/<name>/pause")
def undo_pause(name):
    config, db = _state()
    return jsonify({"ok": True, "changed": True, "ended": actions.undo(config, db, _device_name(config, name), "pause")})


@bp.get("/devices/<name>/limits")
def device_limits(name):
    config, db = _state()
    rows = actions.limits_of(config, db, _device_name(config, name))
    return jsonify([{k: row[k] for k in ("name", "used_minutes", "allowed_minutes", "remaining_minutes", "resets_at")}
                    for row in rows])


@bp.post("/devices/<name>/limits/<limit>/extend")
def extend_limit(name, limit):
    config, db = _state()
    row = actions.extend_limit(config, db, _device_name(config, name), limit, _body().get("minutes"))
    return jsonify({"ok": True, **{k: v for k, v in row.as_dict().items() if k != "per"}})


@bp.post("/devices/<name>/bonus")
def bonus(name):
    config, db = _state()
    actions.bonus(config, db, _device_name(config, name), _body().get("minutes"))
    return jsonify({"ok": True})


def _profile_json(profile) -> dict:
    return {"name": profile.name, "preset": profile.preset, "block_categories": list(profile.block_categories),
            "block_services": list(profile.block_services), "allow": list(profile.allow), "block": list(profile.block),
            "safesearch": profile.safesearch, "youtube": profile.youtube, "log": profile.log,
            "schedules": [{"name": s.name, "days": sorted(s.days), "start": f"{s.start // 60:02d}:{s.start % 60:02d}",
                           "end": f"{s.end // 60:02d}:{s.end % 60:02d}", "block": "all" if s.block_all else list(s.block),
                           "allow": list(s.allow)} for s in profile.schedules]}


@bp.get("/profiles")
def profiles():
    config, _ = _state()
    from filterd.store import configfile
    return jsonify({"version": configfile.read(current_app.extensions["filterd"].config_path)[1],
                    "profiles": [_profile_json(p) for p in config.rules.profiles.values()]})


@bp.get("/profiles/<name>")
def profile(name):
    config, _ = _state()
    if name not in config.rules.profiles:
        return jsonify({"error": f"no profile named {name}", "field": "name"}), 404
    return jsonify(_profile_json(config.rules.profiles[name]))


@bp.put("/profiles/<name>")
def put_profile(name):
    """Replace the given keys of a profile; send "version" from GET /api/profiles to be safe."""
    config, db = _state()
    body = _body()
    allowed = {"preset", "block_categories", "block_services", "allow", "block", "safesearch", "youtube",
               "schedules", "bypass_protection", "log"}
    unknown = set(body) - allowed - {"version"}
    if unknown:
        return jsonify({"error": f"unknown keys: {', '.join(sorted(unknown))}", "field": sorted(unknown)[0]}), 400
    if not allowed & set(body):
        return jsonify({"error": f"nothing to change: send some of {', '.join(sorted(allowed))}", "field": None}), 400

    def change(document):
        profiles = document.setdefault("profiles", {})
        current = profiles.get(name) or {}
        for key in allowed & set(body):
            current[key] = body[key]
        profiles[name] = current
    config, version = actions.edit_config(db, body.get("version"), change, f"profile {name} changed through the API")
    return jsonify({"ok": True, "version": version, "profile": _profile_json(config.rules.profiles[name])})


@bp.get("/queries")
def queries():
    config, db = _state()
    filters, _ = query_filter(request.args, ZoneInfo(config.timezone))
    limit = request.args.get("limit", 50, type=int)
    before = request.args.get("before", type=int)
    rows = log_reader.recent_queries(db, filters, limit=limit, before_id=before)
    return jsonify([row.__dict__ for row in rows])


def _request_json(config, item, db=None) -> dict:
    described = access_requests_page.describe(config, item, db)
    out = dict(item.__dict__)
    out["unblocks_text"] = described["unblocks"]
    out["applies_to"] = described["applies_to"] or item.device    # the device, or the profile answering for it
    # Who else an approval reaches: the default profile's named devices, when it answers for an unnamed one.
    out["applies_to_devices"] = described["also_named"] if described["applies_to"] else [item.device]
    # What else the site needs, offered for approval ({"companions": [...]} picks; none sent: the ticked ones).
    out["companions"] = [{"domain": c.domain, "why": c.why, "ticked": c.ticked} for c in described["companions"]]
    return out


API_PAGE_SIZE = 50
API_PAGE_SIZE_MAX = 200


@bp.get("/requests")
def requests_list():
    """Pending requests, newest first; ?status=answered for the last week's answers, all for both."""
    config, db = _state()
    status = request.args.get("status", "pending")
    if status not in ("pending", "answered", "all"):
        raise actions.ActionError("status must be pending, answered or all", "status")
    try:
        limit = int(request.args.get("limit", API_PAGE_SIZE))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        raise actions.ActionError("limit and offset must be numbers", "limit") from None
    if not 1 <= limit <= API_PAGE_SIZE_MAX or offset < 0:
        raise actions.ActionError(f"limit must be 1-{API_PAGE_SIZE_MAX} and offset 0 or more", "limit")
    pending, answered = access_requests_page.lists_for_page(config, db, time.time(), limit, offset)
    chosen = (pending if status != "answered" else []) + (answered if status != "pending" else [])
    response = jsonify([_request_json(config, item["request"], db) for item in chosen])
    # Paging of the pending requests (named devices' first): how many in all, and the next page.
    total = access_requests.pending_count(db)
    response.headers["X-Total-Count"] = str(total)
    if status != "answered" and offset + limit < total:
        response.headers["Link"] = f'<{request.path}?status={status}&limit={limit}&offset={offset + limit}>; rel="next"'
    return response


@bp.post("/requests/<int:request_id>/approve")
def approve_request(request_id: int):
    """{"minutes": 60} for a while, {"until": "bedtime" | "morning" | "tonight"} until the child's
    next bedtime, the next morning or midnight, {} for always."""
    config, db = _state()
    body = _body()
    if "until" in body:
        if body["until"] not in ("bedtime", "morning", "tonight"):
            raise actions.ActionError('until must be "bedtime", "morning" or "tonight" (or send minutes)', "until")
        choice = body["until"]
    elif body.get("minutes") is not None:
        choice = str(body["minutes"])
    else:
        choice = "always"
    companions = body.get("companions")
    if companions is not None and not (isinstance(companions, list) and all(isinstance(c, str) for c in companions)):
        raise actions.ActionError("companions must be a list of names (from the request's companions)", "companions")
    item = _answer(config, db, request_id, choice, "", companions)
    return jsonify({"ok": True, "request": _request_json(config, item)})


@bp.post("/requests/<int:request_id>/decline")
def decline_request(request_id: int):
    config, db = _state()
    answer = _body().get("answer", "")
    if not isinstance(answer, str):
        raise actions.ActionError("answer must be text", "answer")
    item = _answer(config, db, request_id, None, answer)
    return jsonify({"ok": True, "request": _request_json(config, item)})


def _answer(config, db, request_id: int, choice, answer: str, companions: list[str] | None = None):
    if access_requests.get(db, request_id) is None:
        raise NotFound(f"no request {request_id}", "id")
    return access_requests_page.answer(config, db, request_id, choice, answer, companions)


@bp.post("/lists/update")
def lists_update():
    config, db = _state()
    actions.start_lists_update(config, db)
    return jsonify({"ok": True, "started": True}), 202
