"""Profiles, lists, access requests, settings and the first-run wizard."""
from __future__ import annotations

import re
import secrets
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from filterd.lists import sources
from filterd.rules.presets import PRESETS
from filterd.rules.model import DAYS
from filterd.store.state import audit

from . import actions, profile_form
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
    name = profile_form.profile_id(request.form.get("name", ""))   # "Leo" → leo
    preset = request.form.get("preset", "")
    if not _PROFILE_NAME.fullmatch(name):
        return profiles({"name": "Write the child's name (letters and digits), e.g. Emma."})
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
    """A child's page: their devices today, pause and bonus for all of them, and their rules
    (categories and apps as toggles, schedules with chips); each section saves on its own."""
    _, config, db = _state()
    if name not in config.rules.profiles:
        abort(404, description="There is no profile with that name.")
    errors: dict[str, str] = {}
    editor = profile_form.from_profile(config.rules.profiles[name])
    if request.method == "POST":
        form = request.form
        editor = profile_form.from_form(form)
        section = form.get("section") if form.get("section") in profile_form.SECTIONS else ""
        errors = profile_form.problems(editor)

        def change(document):
            body = document["profiles"][name]
            if body is None:
                body = document["profiles"][name] = {}
            profile_form.write(editor, body, config.rules.profiles[name])
        if not errors:
            try:
                actions.edit_config(db, form.get("version"), change, f"profile {name} edited")
                flash(f"Saved {profile_form.person(name)}. The filter applies it within a second.", "ok")
                return redirect(url_for("pages.profile", name=name) + (f"#{section}" if section else ""))
            except actions.ActionError as exc:
                errors[profile_form.field_of(exc.field, name, editor)] = str(exc)
    return render_template("profile.html", profile=config.rules.profiles[name], name=name, editor=editor,
                           person=profile_form.person(name), catalog=config.catalog, version=actions.config_version(),
                           errors=errors, days=DAYS, day_choices=profile_form.DAY_CHOICES,
                           youtube_names=profile_form.YOUTUBE_NAMES, today=_today_of(config, db, name),
                           paused=actions.paused(db), tz=ZoneInfo(config.timezone),
                           preset_changes=profile_form.preset_changes(config.rules.profiles[name], config.catalog))


def _today_of(config, db, name: str) -> dict:
    """The child's devices with what they did today, for the top of their page."""
    from .devices import device_rows
    rows = [row for row in device_rows(config, db) if row["known"] and row["profile"] == name]
    limits = [actions.limit_label(config, limit.name) for limit in config.rules.profiles[name].limits]
    return {"devices": rows, "limits": limits}


@bp.route("/profiles/<name>/pause", methods=["POST"], defaults={"what": "pause"})
@bp.route("/profiles/<name>/resume", methods=["POST"], defaults={"what": "resume"})
@bp.route("/profiles/<name>/bonus", methods=["POST"], defaults={"what": "bonus"})
def profile_override(name: str, what: str):
    """Pause, resume or bonus time for every device of a child at once (a profile override)."""
    _, config, db = _state()
    if name not in config.rules.profiles:
        abort(404, description="There is no profile with that name.")
    minutes = request.form.get("minutes") or None
    who = profile_form.person(name)
    try:
        if what == "pause":
            actions.pause(config, db, name, minutes)
            flash(f"{who}'s devices are paused " + (f"for {_duration(minutes)}." if minutes else "until you resume them."), "ok")
        elif what == "resume":
            actions.resume(config, db, name)
            flash(f"{who}'s devices are back on.", "ok")
        else:
            actions.bonus(config, db, name, minutes)
            flash(f"{who}: schedules lifted " + (f"for {_duration(minutes)}." if minutes else "until the current one ends."), "ok")
    except actions.ActionError as exc:
        flash(str(exc), "error")
    return redirect(url_for("pages.profile", name=name) + "#today")


def _duration(minutes: str) -> str:
    """60 → "1 h", 90 → "90 min": how long, as the parent chose it."""
    try:
        value = int(float(minutes))
    except ValueError:
        return f"{minutes} min"
    return f"{value // 60} h" if value % 60 == 0 and value >= 60 else f"{value} min"


def _profiles_of(document) -> dict:
    """The document's profiles, created so that a first child's profile does not become the
    rules of every unnamed device: the implicit `default` profile is written out and kept."""
    if not document.get("profiles"):
        document["profiles"] = {"default": {"preset": "teen"}}   # unnamed devices: filtered
        document.setdefault("default_profile", "default")
    elif "default_profile" not in document:
        document["default_profile"] = next(iter(document["profiles"]))
    return document["profiles"]


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
        child = profile_form.profile_id(request.form.get("child", ""))   # "Mia Rose" → mia-rose
        preset = request.form.get("preset", "child")
        timezone = request.form.get("timezone", config.timezone).strip()
        picked = request.form.getlist("device")
        unknown_profile = request.form.get("default_profile")
        hostnames = {row["ip"]: row["hostname"] for row in device_rows(config, db) if row["ip"] and row.get("hostname")}
        if request.form.get("child", "").strip() and not _PROFILE_NAME.fullmatch(child):
            errors["child"] = "Write the child's name (letters and digits), e.g. Emma."
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
                devices = document.get("devices")
                if devices is None:
                    devices = document["devices"] = []
                taken = {str(item.get("name", "")).lower() for item in devices}
                for i, ip in enumerate(picked):
                    # The name the device gave itself (DHCP), else the child's name and a number.
                    name = actions.device_name_from(hostnames.get(ip) or "") or f"{child}-device-{i + 1}"
                    if name.lower() in taken:
                        name = f"{child}-device-{i + 1}"
                    taken.add(name.lower())
                    devices.append({"name": name, "ip": ip, "profile": child})
            if unknown_profile in ("same", "level:teen"):
                level = "teen" if unknown_profile == "level:teen" else \
                    _youngest_level(document, preset if child else None)
                profiles = _profiles_of(document)
                body = profiles.get(NEW_DEVICES)
                if not isinstance(body, dict):
                    body = profiles[NEW_DEVICES] = {}
                body["preset"] = level
                document["default_profile"] = NEW_DEVICES
            elif unknown_profile and unknown_profile in (document.get("profiles") or {}):
                document["default_profile"] = unknown_profile
        if not errors:
            try:
                actions.edit_config(db, request.form.get("version"), change, "first-run wizard")
                flash("All set. Name the devices on the Devices page any time.", "ok")
                return redirect(url_for("dashboard.index"))
            except actions.ActionError as exc:
                errors[_wizard_field(exc.field, child)] = str(exc)
    return render_template("wizard.html", config=config, presets=PRESETS, version=actions.config_version(),
                           open_profiles=actions.open_profiles(config.rules),
                           seen=[d for d in device_rows(config, db) if not d["known"]], errors=errors,
                           form=request.form if errors else None)


NEW_DEVICES = "new-devices"          # the profile of devices nobody has named, made by the wizard
_LEVELS = ("young_child", "child", "teen")   # youngest first


def _youngest_level(document, wizard_preset: str | None) -> str:
    """The preset of the youngest child (the wizard's new one included), else teen: a device
    nobody has named may be that child's."""
    presets = [body.get("preset") for name, body in (document.get("profiles") or {}).items()
               if isinstance(body, dict) and name != NEW_DEVICES]
    presets.append(wizard_preset)
    return next((level for level in _LEVELS if level in presets), "teen")


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
