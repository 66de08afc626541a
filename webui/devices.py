"""Devices: every device seen, naming and assigning them, pause/resume and reward time."""
from __future__ import annotations

import datetime
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for

from filterd.house import dhcp
from filterd.store import log_reader, overrides
from filterd.rules.devices import is_private_mac

from . import actions, vendors
from .security import flash, safe_redirect_target

bp = Blueprint("devices", __name__)


def device_rows(config, db, first_sites: bool = False) -> list[dict]:
    """Configured devices and unknown clients, new unnamed ones first; `first_sites`: with the
    sites each unnamed one asked for first and its maker (the Devices page, to tell which device
    it is)."""
    seen = log_reader.clients_seen(db)
    now = time.time()
    midnight = datetime.datetime.now(ZoneInfo(config.timezone)).replace(hour=0, minute=0, second=0,
                                                                        microsecond=0).timestamp()
    today = log_reader.queries_per_asker(db, midnight)
    rows = []
    named = set()
    named_ids = {device.client_id for device in config.rules.devices if device.client_id}
    # A device named a moment ago still has its unnamed row in the log until it asks again: its
    # address or MAC says it is that device (its card disappears at once, its history goes along).
    named_addresses = {device.ip: device.name for device in config.rules.devices if device.ip}
    named_macs = {device.mac.lower(): device.name for device in config.rules.devices if device.mac}

    def named_as(client) -> str | None:
        return client.device or named_addresses.get(client.client) or named_macs.get((client.mac or "").lower())

    for device in config.rules.devices:
        named.add(device.name)
        client = next((c for c in seen if c.device == device.name), None) or \
            next((c for c in seen if not c.device and named_as(c) == device.name), None)
        rows.append({"name": device.name, "profile": device.profile, "ip": device.ip or (client.client if client else None),
                     "mac": device.mac or (client.mac if client else None), "cidr": str(device.cidr) if device.cidr else None,
                     "first_seen": client.first_seen if client else None, "last_seen": client.last_seen if client else None,
                     "queries_today": today.get(device.name, 0), "known": True})
    for client in seen:
        if named_as(client) in named:
            continue
        # An unknown encrypted-DNS client ID is logged as itself, never an address (no "." or ":").
        client_id = client.client if not any(c in client.client for c in ".:") else None
        if client_id and client_id in named_ids:
            continue     # named since: its next queries carry the device's name
        rows.append({"name": None, "profile": config.rules.default_profile, "ip": None if client_id else client.client,
                     "mac": client.mac, "cidr": None, "first_seen": client.first_seen, "last_seen": client.last_seen,
                     "queries_today": today.get(client.client, 0), "known": False, "hostname": client.hostname,
                     "client_id": client_id})
    _add_dhcp_leases(rows, dhcp.current_leases(config, now), config.rules.default_profile)
    made_by = vendors.makers(row["mac"] for row in rows if not row["known"]) if first_sites else {}
    for row in rows:
        row["maker"] = made_by.get(row["mac"])
        row.setdefault("client_id", None)
        row["first_sites"] = []
        if first_sites and not row["known"] and row["ip"] and row["first_seen"]:
            row["first_sites"] = list(dict.fromkeys(_site(name) for name in
                                                    log_reader.first_names(db, row["ip"], row["first_seen"] - 1)))[:6]
        row["private_mac"] = is_private_mac(row["mac"])
        row["active"] = bool(row["last_seen"] and now - row["last_seen"] < 600)
    rows.sort(key=lambda r: (r["known"], -(r["last_seen"] or 0)))
    return rows


def _add_dhcp_leases(rows: list[dict], leases, default_profile: str) -> None:
    """The filter's own DHCP leases: the MAC, address and host name a device reported fill in
    what the query log lacks, and a device that joined but has not asked anything yet is listed."""
    for row in rows:
        row.setdefault("hostname", None)
        row["lease"] = False
    by_mac = {lease.mac: lease for lease in leases}
    by_ip = {lease.ip: lease for lease in leases}
    used = set()
    for row in rows:
        lease = by_mac.get((row["mac"] or "").lower()) or by_ip.get(row["ip"])
        if lease is None:
            continue
        used.add(lease)
        row["lease"] = True
        row["hostname"] = row["hostname"] or lease.hostname
        row["mac"] = row["mac"] or lease.mac
        row["ip"] = row["ip"] or lease.ip
    for lease in leases:
        if lease not in used:
            rows.append({"name": None, "profile": default_profile, "ip": lease.ip, "mac": lease.mac, "cidr": None,
                         "first_seen": None, "last_seen": None, "queries_today": 0, "known": False,
                         "hostname": lease.hostname, "lease": True})


@bp.route("/devices")
def index(failed: dict | None = None):
    """`failed`: a naming form that was refused, shown again on its device's card with the error
    beside the field and what the parent typed."""
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    db = app_state.db()
    rows = device_rows(config, db, first_sites=True)
    if failed is not None:
        keys = {row["name"] if row["known"] else (row["ip"] or row["mac"] or row["client_id"]) for row in rows}
        failed["on_card"] = failed["key"] in keys    # else (the device went meanwhile) at the top
    return render_template("devices.html", devices=rows, profiles=list(config.rules.profiles),
                           version=actions.config_version(), paused=actions.paused(db),
                           default_profile=config.rules.default_profile, failed=failed,
                           open_profiles=actions.open_profiles(config.rules),
                           parents_profile=actions.parents_profile(config.rules) or actions.PARENTS_PROFILE,
                           tz=ZoneInfo(config.timezone))


@bp.route("/devices/unnamed", methods=["POST"])
def set_default_profile():
    """The profile of every device nobody has named (the config's default_profile)."""
    app_state = current_app.extensions["filterd"]
    profile = request.form.get("profile", "")
    try:
        actions.set_default_profile(app_state.db(), request.form.get("version"), profile)
        flash(f"Devices nobody has named now use {profile}.", "ok")
    except actions.ActionError as exc:
        flash(str(exc), "error")
    return redirect(url_for("devices.index") + "#unnamed-devices")




@bp.route("/devices/<name>")
def detail(name: str):
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    db = app_state.db()
    device = config.rules.device(name)
    if device is None:
        abort(404, description="There is no device with that name. Name it on the Devices page first.")
    tz = ZoneInfo(config.timezone)
    midnight = datetime.datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    timeline: dict[int, dict[str, int]] = {}
    # From the hourly per-name counts (one short range of today's rows), not the log itself:
    # a busy tablet makes tens of thousands of queries a day.
    for hour_index, name, count in log_reader.allowed_names_per_hour(db, device.name, midnight):
        hour = datetime.datetime.fromtimestamp(hour_index * 3600, tz).hour
        sites = timeline.setdefault(hour, {})
        site = _site(name)
        sites[site] = sites.get(site, 0) + count
    hours = [(hour, sorted(sites.items(), key=lambda kv: -kv[1])[:8]) for hour, sites in sorted(timeline.items())]
    active = [o for o in overrides.active(db, time.time())
              if (o.subject_kind == "device" and o.subject == device.name)
              or (o.subject_kind == "profile" and o.subject == device.profile)]
    return render_template("device.html", device=device, hours=hours, active=active, tz=tz,
                           limits=actions.limits_of(config, db, device.name),
                           blocked=log_reader.top_domains(db, midnight, blocked=True, limit=10, device=device.name),
                           services=sorted(config.catalog.services.values(), key=lambda s: s.name),
                           config_profile=config.rules.profiles.get(device.profile))


@bp.route("/devices/<name>/limits/<limit>/extend", methods=["POST"])
def extend_limit(name: str, limit: str):
    def do(config, db):
        row = actions.extend_limit(config, db, name, limit, request.form.get("minutes"))
        return (f"{row.name}: {request.form.get('minutes')} more minutes for today "
                f"({row.remaining_minutes} left).")
    return _action(name, do)


def _site(name: str) -> str:
    """The registrable part a parent recognises (www.youtube.com → youtube.com; co.uk aware enough)."""
    labels = name.split(".")
    if len(labels) >= 3 and labels[-2] in ("co", "com", "org", "net", "ac", "gov") and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _action(name: str, do) -> object:
    config = current_app.extensions["filterd"].config()
    db = current_app.extensions["filterd"].db()
    try:
        message = do(config, db)
        flash(message, "ok")
    except actions.ActionError as exc:
        flash(str(exc), "error")
    return redirect(safe_redirect_target(request.form.get("back"), url_for("devices.detail", name=name)))


@bp.route("/devices/<name>/always-allowed/remove", methods=["POST"])
def remove_always_allowed(name: str):
    """Undo of an "always": a site off the allow list of the device's profile (it applies to the
    profile's other devices too, as the card says)."""
    what = request.form.get("what", "").strip()

    def do(config, db):
        device = config.rules.device(name)
        if device is None:
            raise actions.ActionError("There is no device with that name.", "name")
        actions.remove_from_profile(db, device.profile, "allow", what)
        return f"{what} is no longer always allowed for {device.profile}"
    return _action(name, do)


@bp.route("/devices/<name>/pause", methods=["POST"])
def pause(name: str):
    minutes = request.form.get("minutes")
    def do(config, db):
        actions.pause(config, db, name, minutes)
        if not minutes:
            return f"{name} paused until resumed"
        until = overrides.active(db, time.time())
        ends = max((o.until for o in until if o.kind == "pause" and o.subject == config.rules.device(name).name
                    and o.until), default=None)
        when = "" if ends is None else " (until " + datetime.datetime.fromtimestamp(
            ends, ZoneInfo(config.timezone)).strftime("%a %H:%M") + ")"
        return f"{name} paused for {minutes} min{when}"
    return _action(name, do)


@bp.route("/devices/<name>/resume", methods=["POST"])
def resume(name: str):
    return _action(name, lambda c, db: (actions.resume(c, db, name), f"{name} resumed")[1])


@bp.route("/devices/<name>/bonus", methods=["POST"])
def bonus(name: str):
    minutes = request.form.get("minutes")
    return _action(name, lambda c, db: (actions.bonus(c, db, name, minutes),
                                        f"{name}: schedules lifted" + (f" for {minutes} min" if minutes else " tonight"))[1])


@bp.route("/devices/<name>/allow", methods=["POST"])
def allow(name: str):
    what, minutes = request.form.get("what", ""), request.form.get("minutes")
    def shown(config) -> str:       # "YouTube", not the catalog's id "youtube"
        service = config.catalog.services.get(what.strip().lower())
        return service.name if service else what
    return _action(name, lambda c, db: (actions.allow(c, db, name, what, minutes),
                                        f"{shown(c)} allowed for {name}" + (f" for {minutes} min" if minutes else ""))[1])


@bp.route("/devices/parents", methods=["POST"])
def mark_parents():
    """"A parent's device": one tap names an unnamed device and takes it out of the filter."""
    app_state = current_app.extensions["filterd"]
    form = request.form
    mac = form.get("mac") or None
    try:
        name, profile = actions.mark_parents_device(app_state.config(), app_state.db(), form.get("version"),
                                                    form.get("name", ""), form.get("ip") or None, mac)
        flash(f"{name} is a parent's device now: profile {profile}, not filtered. "
              "Rename it or change its profile on its card below.", "ok")
    except actions.ActionError as exc:
        flash(str(exc), "error")
    return redirect(url_for("devices.index"))


@bp.route("/devices/<name>/undo", methods=["POST"])
def undo(name: str):
    """The Undo button beside an override in force: ends it now (for the whole profile when the
    override is the profile's, as the row says)."""
    kind, what = request.form.get("kind", ""), request.form.get("what") or None
    kind = "allow" if kind == "allow_day" else kind

    def do(config, db):
        device = config.rules.device(name)
        if device is None:
            raise actions.ActionError("There is no device with that name.", "name")
        subject = device.profile if request.form.get("scope") == "profile" else device.name
        actions.undo(config, db, subject, kind, what)
        service = config.catalog.services.get(what or "")
        shown = service.name if service else what
        return {"allow": f"{shown} is no longer allowed", "bonus": "Bonus time ended",
                "pause": "Pause ended"}.get(kind, "Undone") + (f" for {subject}" if subject != device.name else "")
    return _action(name, do)


@bp.route("/devices/assign", methods=["POST"])
def assign():
    db = current_app.extensions["filterd"].db()
    form = request.form
    try:
        actions.set_device(db, form.get("version"), form.get("name", "").strip(), form.get("profile", ""),
                            ip=form.get("ip") or None, mac=form.get("mac") or None, old_name=form.get("old_name") or None,
                            client_id=form.get("client_id") or None)
        flash(f"Saved {form.get('name')}. The filter applies it within a second.", "ok")
    except actions.ActionError as exc:
        where = exc.field or ""     # "name", or a YAML path such as devices[3].profile
        field = "profile" if where.endswith("profile") else "name" if where.endswith("name") else "form"
        failed = {"key": form.get("old_name") or form.get("ip") or form.get("mac") or form.get("client_id") or "",
                  "field": field,
                  "message": str(exc), "name": form.get("name", ""), "profile": form.get("profile", "")}
        return index(failed)
    return redirect(url_for("devices.index"))
