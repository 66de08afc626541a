"""Profiles, lists, access requests, settings and the first-run wizard."""
from __future__ import annotations

import re
import secrets
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from filterd.lists import sources
from filterd.rules.presets import PRESETS
from filterd.rules.catalog import YOUTUBE_LEVELS
from filterd.rules.model import DAYS
from filterd.store.state import audit

from . import actions
from .auth import change_password
from .security import TOKEN_SCOPES, flash, token_hash

bp = Blueprint("pages", __name__)


def _state():
    app_state = current_app.extensions["filterd"]
    return app_state, app_state.config(), app_state.db()


@bp.route("/profiles")
def profiles(errors: dict[str, str] | None = None):
    _, config, _ = _state()
    return render_template("profiles.html", profiles=config.rules.profiles, presets=PRESETS,
                           devices=config.rules.devices, version=actions.config_version(),
                           errors=errors or {}, form=request.form if errors else None)


@bp.route("/profiles", methods=["POST"])
def create_profile():
    """Create a profile from an age preset; a refused one shows its error beside the field."""
    _, config, db = _state()
    name = request.form.get("name", "").strip().lower()
    preset = request.form.get("preset", "")
    if not _PROFILE_NAME.fullmatch(name):
        return profiles({"name": "Use 1-64 lower-case letters, digits, - _ and ., e.g. emma."})
    if preset and preset not in PRESETS:
        return profiles({"preset": "Choose one of the age groups offered."})

    def change(document):
        profiles = _profiles_of(document)
        if name in profiles:
            raise actions.ActionError(f"A profile named {name} exists already.", "name")
        profiles[name] = {"preset": preset} if preset else {}
    try:
        actions.edit_config(db, request.form.get("version"), change, f"profile {name} created from {preset or 'nothing'}")
    except actions.ActionError as exc:
        field = exc.field or ""
        return profiles({"name" if field in ("name", f"profiles.{name}") else
                         "version" if field == "version" else "form": str(exc)})
    flash(f"Profile {name} created.", "ok")
    return redirect(url_for("pages.profile", name=name))


_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@bp.route("/profiles/<name>", methods=["GET", "POST"])
def profile(name: str):
    _, config, db = _state()
    if name not in config.rules.profiles:
        abort(404, description="There is no profile with that name.")
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = request.form
        # Unknown ids are not dropped quietly: the config check names them beside their field.
        categories = [c.strip() for c in form.getlist("category") if c.strip()]
        chosen_services = [s.strip() for s in form.getlist("service") if s.strip()]
        allow = [line.strip() for line in form.get("allow", "").splitlines() if line.strip()]
        block = [line.strip() for line in form.get("block", "").splitlines() if line.strip()]
        schedules = _schedules_from_form(form)

        wanted = {"block_categories": categories, "block_services": chosen_services, "allow": allow, "block": block,
                  "safesearch": form.get("safesearch") == "on",
                  "youtube": form.get("youtube", "off") if form.get("youtube") in YOUTUBE_LEVELS else "off",
                  "schedules": schedules}

        def change(document):
            body = document["profiles"][name]
            if body is None:
                body = document["profiles"][name] = {}
            save_relative_to_preset(body, wanted, config.rules.profiles[name])
        try:
            actions.edit_config(db, form.get("version"), change, f"profile {name} edited")
            flash(f"Saved {name}. The filter applies it within a second.", "ok")
            return redirect(url_for("pages.profile", name=name))
        except actions.ActionError as exc:
            errors[_field_of(exc.field, name)] = str(exc)
    return render_template("profile.html", profile=config.rules.profiles[name], catalog=config.catalog,
                           version=actions.config_version(), errors=errors, days=DAYS, form=request.form if errors else None,
                           preset_changes=preset_changes(config.rules.profiles[name], config.catalog))


def preset_changes(profile, catalog) -> list[str]:
    """What a profile based on a preset does differently, as the parent reads it ("+ Games")."""
    preset = PRESETS.get(profile.preset or "")
    if preset is None:
        return []
    out = []
    for key, names in (("block_categories", catalog.categories), ("block_services", catalog.services)):
        base, now = list(preset.get(key, [])), list(getattr(profile, key))
        out += [f"+ {names[i].name if i in names else i} blocked" for i in now if i not in base]
        out += [f"− {names[i].name if i in names else i} allowed" for i in base if i not in now]
    if profile.safesearch != preset.get("safesearch"):
        out.append(f"SafeSearch {'on' if profile.safesearch else 'off'}")
    if profile.youtube != preset.get("youtube"):
        out.append(f"YouTube filter: {profile.youtube}")
    return out


def save_relative_to_preset(body, wanted: dict, current) -> None:
    """Write the profile form into the profile's YAML mapping, keeping the parent's intent:

    - keys whose value did not change are not touched (kept byte for byte, compact YAML too);
    - with a `preset:`, category and app choices are stored as what differs from the preset
      (`block_categories_add` / `_remove`, `block_services_add` / `_remove`), and `safesearch`,
      `youtube` only when they differ from it — so a later change of the preset still applies;
    - without a preset, the lists are written as they are.
    """
    preset = PRESETS.get(body.get("preset") or "") if body.get("preset") else None
    unchanged = {"block_categories": tuple(wanted["block_categories"]) == current.block_categories,
                 "block_services": tuple(wanted["block_services"]) == current.block_services}
    for key in ("block_categories", "block_services"):
        if unchanged[key]:
            continue
        if preset is None:
            body[key] = list(wanted[key])
            continue
        base = list(preset.get(key, []))
        if key in body:                       # an explicit list replaced the preset's: back to relative
            del body[key]
        added = [item for item in wanted[key] if item not in base]
        removed = [item for item in base if item not in wanted[key]]
        for suffix, items in (("_add", added), ("_remove", removed)):
            if items:
                body[key + suffix] = items
            elif key + suffix in body:
                del body[key + suffix]
    for key, now in (("allow", current.allow), ("block", current.block)):
        if tuple(wanted[key]) != tuple(now):
            body[key] = list(wanted[key])
    for key in ("safesearch", "youtube"):
        if wanted[key] == getattr(current, key):
            continue
        if preset is not None and wanted[key] == preset.get(key):
            body.pop(key, None)
        else:
            body[key] = wanted[key]
    if wanted["schedules"] != [_schedule_as_form(s) for s in current.schedules]:
        body["schedules"] = wanted["schedules"]


def _schedule_as_form(schedule) -> dict:
    """A parsed schedule as `_schedules_from_form` would post it back (to tell an unchanged one)."""
    return {"name": schedule.name, "days": [d for i, d in enumerate(DAYS) if i in schedule.days],
            "start": f"{schedule.start // 60:02d}:{schedule.start % 60:02d}",
            "end": f"{(schedule.end // 60) % 24:02d}:{schedule.end % 60:02d}",
            "block": "all" if schedule.block_all else list(schedule.block)}


# The profile editor's fields that show their own error; any other goes on top of the form.
PROFILE_FIELDS = ("version", "block_categories", "allow", "block", "schedules")


def _profiles_of(document) -> dict:
    """The document's profiles, created so that a first child's profile does not become the
    rules of every unnamed device: the implicit `default` profile is written out and kept."""
    if not document.get("profiles"):
        document["profiles"] = {"default": {}}
        document.setdefault("default_profile", "default")
    elif "default_profile" not in document:
        document["default_profile"] = next(iter(document["profiles"]))
    return document["profiles"]


def _field_of(path: str | None, profile: str) -> str:
    """profiles.kids.schedules[0].start → schedules; profiles.kids.allow[2] → allow (the
    profile's name may hold dots itself: profiles.kids.v2.allow[0] → allow)."""
    if not path:
        return "form"
    prefix = f"profiles.{profile}."
    rest = path[len(prefix):] if path.startswith(prefix) else path
    field = re.sub(r"_(add|remove)$", "", rest.split(".")[0].split("[")[0])   # block_categories_add[0] → block_categories
    return field if field in PROFILE_FIELDS else "form"


def _schedules_from_form(form) -> list[dict]:
    """Schedule rows from the week editor: name, days (checkboxes), start, end, block."""
    out = []
    for i in range(int(form.get("schedule_count", 0) or 0) + 1):
        name = form.get(f"schedule-{i}-name", "").strip()
        if not name or form.get(f"schedule-{i}-delete"):
            continue
        block = form.get(f"schedule-{i}-block", "all").strip()
        out.append({"name": name, "days": [d for d in DAYS if form.get(f"schedule-{i}-{d}")] or list(DAYS),
                    "start": form.get(f"schedule-{i}-start", ""), "end": form.get(f"schedule-{i}-end", ""),
                    "block": "all" if block in ("", "all") else [b.strip() for b in block.split(",") if b.strip()]})
    return out


@bp.route("/lists")
def lists_page(errors: dict[str, str] | None = None):
    _, config, db = _state()
    from .dashboard import daemon_status
    files, missing = sources.sources(config)
    update = sources.read_update_status(config)
    present = {f.id for f in files}
    catalog_lists = [(spec, spec.id in present) for spec in sources.wanted_lists(config) if spec.origin == "catalog"]
    response = current_app.make_response((render_template(
        "lists.html", status=daemon_status(db, config), files=files, missing=missing, update=update,
        catalog_lists=catalog_lists,
        categories=config.catalog.categories, version=actions.config_version(), errors=errors or {},
        tz=ZoneInfo(config.timezone),
        form=request.form if errors else None), 200))
    if update is not None and update["running"]:
        # Progress without JavaScript: the browser reloads the page every 2 s while it runs.
        response.headers["Refresh"] = "2"
    return response


@bp.route("/lists/update", methods=["POST"])
def lists_update():
    """Start `filterd lists update` in the background; the page shows its progress."""
    _, config, db = _state()
    try:
        actions.start_lists_update(config, db)
        flash("Updating the lists: the progress is shown below.", "ok")
    except actions.ActionError as exc:
        flash(str(exc), "error")
    return redirect(url_for("pages.lists_page") + "#update")


# The add-a-list form's fields; a config error on lists[N].<key> goes beside the field <key>.
LIST_FIELDS = ("id", "url", "category", "version")


@bp.route("/lists/add", methods=["POST"])
def lists_add():
    """Add a block list by URL: downloaded once through the SSRF guard, then added to the config."""
    _, config, db = _state()
    form = request.form
    try:
        actions.add_list_by_url(config, db, form.get("version"), form.get("id", ""), form.get("url", ""),
                                 form.get("category", ""))
    except actions.ActionError as exc:
        field = (exc.field or "").rsplit(".", 1)[-1].split("[")[0]
        return lists_page(errors={field if field in LIST_FIELDS else "add": str(exc)})
    flash(f"List {form.get('id', '').strip().lower()} added. The filter uses it within a few seconds.", "ok")
    return redirect(url_for("pages.lists_page"))


@bp.route("/settings", methods=["GET", "POST"])
def settings():
    app_state, config, db = _state()
    new_token = None
    errors: dict[str, str] = {}
    if request.method == "POST":
        action = request.form.get("action")
        if action == "password":
            problem = change_password(db, request.form.get("current", ""), request.form.get("new", ""),
                                      request.form.get("confirm", ""))
            if problem:
                errors["password"] = problem
            else:
                from . import security
                response = redirect(url_for("auth.login"))
                security.end_session(db, response)
                return response
        elif action == "filter":
            problem = _save_filter_settings(db, request.form)
            if problem is None:
                flash("Saved. The filter applies it within a second.", "ok")
                return redirect(url_for("pages.settings"))
            errors[problem[0]] = problem[1]
        elif action == "token":
            name = request.form.get("name", "").strip()[:60]
            scope = request.form.get("scope", "read")
            days = request.form.get("expires_days", "").strip()
            if not name:
                errors["token"] = "Give the token a name (e.g. home-assistant)."
            elif scope not in TOKEN_SCOPES:
                errors["token"] = "Choose what the token may do: " + ", ".join(TOKEN_SCOPES.values()).lower() + "."
            elif days and (not days.isdigit() or not 1 <= int(days) <= 3650):
                errors["token"] = "Expiry: a number of days from 1 to 3650, or empty for never."
            else:
                now = time.time()
                expires = now + int(days) * 86400 if days else None
                new_token = "fd_" + secrets.token_urlsafe(32)
                db.execute("INSERT INTO api_tokens (name, token_hash, created, scope, expires) VALUES (?, ?, ?, ?, ?)",
                           (name, token_hash(new_token), now, scope, expires))
                audit(db, g.get("actor", "web UI"), "api token",
                      f"created {name} ({scope}" + (f", expires in {days} days)" if days else ")"))
        elif action == "revoke":
            token_id = request.form.get("token_id", type=int)
            row = db.execute("SELECT name FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                flash("There is no such token (revoked already?).", "error")
            else:
                db.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,))
                audit(db, g.get("actor", "web UI"), "api token", f"revoked {row[0]} (#{token_id})")
                flash(f"Token {row[0]} revoked.", "ok")
            return redirect(url_for("pages.settings"))
    return render_settings(errors, new_token)


def render_settings(errors: dict[str, str], new_token: str | None = None):
    """The Settings page (also for the restore form's errors, from webui/backup.py)."""
    _, config, db = _state()
    tokens = db.execute("SELECT id, name, created, last_used, scope, expires FROM api_tokens ORDER BY id").fetchall()
    failures = db.execute("SELECT ts, peer, user_agent FROM login_failures ORDER BY id DESC LIMIT 20").fetchall()
    trail = db.execute("SELECT ts, actor, action, detail FROM audit ORDER BY id DESC LIMIT 50").fetchall()
    return render_template("settings.html", config=config, tokens=tokens, new_token=new_token, errors=errors,
                           token_scopes=TOKEN_SCOPES, now=time.time(),
                           failures=failures, trail=trail, tz=ZoneInfo(config.timezone), version=actions.config_version(),
                           form=request.form if errors else None)


# Settings form field → the config path its errors name (the first path segment that matches).
FILTER_FIELDS = {"upstreams": "dns.upstreams", "block_mode": "dns.block_mode", "timezone": "timezone",
                 "log_mode": "log.mode", "retention_days": "log.retention_days", "hostnames": "web.hostnames"}


def _save_filter_settings(db, form) -> tuple[str, str] | None:
    """Upstreams, block mode, time zone, log mode and retention, admin host names.

    Goes through the same validation as `filterd check`; returns (field, message) when refused.
    """
    upstreams = [line.strip() for line in form.get("upstreams", "").splitlines() if line.strip()]
    hostnames = [line.strip() for line in form.get("hostnames", "").splitlines() if line.strip()]
    retention = form.get("retention_days", "").strip()
    if not retention.isdigit():
        return "retention_days", "Write a whole number of days."

    def change(document):
        dns = document.setdefault("dns", {})
        dns["upstreams"] = upstreams
        dns["block_mode"] = form.get("block_mode", "")
        document["timezone"] = form.get("timezone", "").strip()
        log = document.setdefault("log", {})
        log["mode"] = form.get("log_mode", "")
        log["retention_days"] = int(retention)
        document.setdefault("web", {})["hostnames"] = hostnames
    try:
        actions.edit_config(db, form.get("version"), change, "filter settings changed")
    except actions.ActionError as exc:
        path = exc.field or ""
        field = next((name for name, prefix in FILTER_FIELDS.items() if path.startswith(prefix)), "filter")
        return field, str(exc)
    return None


@bp.route("/setup/wizard", methods=["GET", "POST"])
def wizard():
    """After the password: time zone, a first child's profile from a preset, that child's devices."""
    _, config, db = _state()
    from .devices import device_rows
    errors: dict[str, str] = {}
    if request.method == "POST":
        child = request.form.get("child", "").strip().lower()
        preset = request.form.get("preset", "child")
        timezone = request.form.get("timezone", config.timezone).strip()
        picked = request.form.getlist("device")
        unknown_profile = request.form.get("default_profile")
        if child and not _PROFILE_NAME.fullmatch(child):
            errors["child"] = "Use 1-64 lower-case letters, digits, - _ and ., e.g. emma."
        if child and preset not in PRESETS:
            errors["preset"] = "Choose one of the age groups offered."

        def change(document):
            document["timezone"] = timezone
            if child:
                profiles = _profiles_of(document)
                if child in profiles:   # never replace a profile (and its rules) from the wizard
                    raise actions.ActionError(f"A profile named {child} exists already: "
                                               "choose another name, or edit it on the Profiles page.", "child")
                profiles[child] = {"preset": preset}
                devices = document.setdefault("devices", [])
                for i, ip in enumerate(picked):
                    devices.append({"name": f"{child}-device-{i + 1}", "ip": ip, "profile": child})
            if unknown_profile and unknown_profile in (document.get("profiles") or {}):
                document["default_profile"] = unknown_profile
        if not errors:
            try:
                actions.edit_config(db, request.form.get("version"), change, "first-run wizard")
                flash("All set. Name the devices on the Devices page any time.", "ok")
                return redirect(url_for("dashboard.index"))
            except actions.ActionError as exc:
                errors[_wizard_field(exc.field, child)] = str(exc)
    return render_template("wizard.html", config=config, presets=PRESETS, version=actions.config_version(),
                           seen=[d for d in device_rows(config, db) if not d["known"]], errors=errors,
                           form=request.form if errors else None)


def _wizard_field(path: str | None, child: str) -> str:
    """The wizard field a config error belongs beside: timezone, child, device or version."""
    path = path or ""
    if path in ("timezone", "version", "child"):
        return path
    if path.startswith(f"profiles.{child}"):
        return "child"
    if path.startswith("devices"):
        return "device"
    return "form"
