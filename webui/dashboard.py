"""The dashboard: the last 24 hours at a glance, and whether the filter is healthy."""
from __future__ import annotations

import time
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, redirect, render_template, url_for

from filterd.files import write_atomically
from filterd.store import log_reader, status
from filterd.store.state import audit
from filterd.lists import sources
from filterd.family import notify

from . import actions, charts, health
from .request_pages import pending_for_page
from .security import flash

bp = Blueprint("dashboard", __name__)

LIST_STALE_S = 8 * 86400     # a downloaded list older than this: its updates are failing


def daemon_status(db, config) -> dict:
    """Running or not, last reload, last config error, and the age of each list."""
    alive = status.alive(status.read_all(db))
    now = time.time()
    list_ages = []
    for source in config.rules.lists:
        path = sources.lists_dir(config) / f"{source.id}.txt" if source.url else None
        age = sources.file_age_s(path) if path else None
        list_ages.append({"id": source.id, "category": source.category, "url": source.url,
                          "age_days": None if age is None else age / 86400,
                          "stale": source.url is not None and (age is None or age > LIST_STALE_S)})
    update = sources.read_update_status(config)
    return {
        "lists_updated_s": now - update["finished"] if update and update.get("finished") else None,
        "lists_updating": bool(update and update["running"]),
        "restart_requested": restart_requested(config),
        "running": bool(alive),
        "workers": len(alive),
        "started": alive[0].started if alive else None,
        "last_reload": max((r.last_reload for r in alive if r.last_reload), default=None),
        "last_error": next((r.last_error for r in alive if r.last_error), None),
        "log_dropped": sum(r.log_dropped for r in alive),
        "upstreams_down": any(r.upstreams_down for r in alive),
        "lists": list_ages,
    }


RESTART_REQUEST = "restart-request"   # in data_dir: filterd-restart.path restarts the daemon


def restart_requested(config) -> float | None:
    """When a parent asked for a restart that has not happened yet (the file is still there)."""
    try:
        return (config.data_dir / RESTART_REQUEST).stat().st_mtime
    except OSError:
        return None


@bp.route("/filter/restart", methods=["POST"])
def restart():
    """"Restart the filter" from the phone: the web UI may not restart a service itself (it runs
    unprivileged); it leaves a request file that systemd's filterd-restart.path acts on."""
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    write_atomically(config.data_dir / RESTART_REQUEST, f"{time.time():.0f}\n".encode())
    audit(app_state.db(), "web UI", "restart", "the filter's restart was asked for")
    flash("Restarting the filter: it answers again within a few seconds.", "ok")
    return redirect(url_for("dashboard.index"))


def failed_logins(db, since: float, shown: int = 5) -> dict:
    """Wrong passwords and setup codes since `since`: how many, and from which addresses."""
    count, addresses = db.execute("SELECT count(*), count(DISTINCT peer) FROM login_failures WHERE ts >= ?",
                                  (since,)).fetchone()
    peers = [row[0] for row in db.execute("SELECT peer, count(*) AS n FROM login_failures WHERE ts >= ?"
                                          " GROUP BY peer ORDER BY n DESC LIMIT ?", (since, shown))]
    return {"count": count, "peers": peers, "more": max(addresses - shown, 0)}


@bp.route("/")
def index():
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    db = app_state.db()
    now = time.time()
    since = now - 86400
    tz = ZoneInfo(config.timezone)
    start_hour = int(now // 3600) - 23
    chart = charts.hourly(log_reader.activity_by_hour(db, start_hour * 3600), start_hour, 24, tz)
    categories = [(config.catalog.categories[c].name if c in config.catalog.categories else c, n)
                  for c, n in log_reader.blocks_by_category(db, since)]
    totals = log_reader.totals(db, since)
    other = totals[1] - sum(n for _, n in categories)
    if other > 0:     # schedules, pauses, apps and the parents' own block list: no category
        categories.append(("Bedtime, pauses, apps and your own list", other))
    pending = pending_for_page(config, db)
    from filterd.family import access_requests
    pending_total = access_requests.pending_count(db)
    from .devices import device_rows
    unnamed = sum(1 for row in device_rows(config, db) if not row["known"])
    return render_template(
        "dashboard.html", pending=pending, back="dashboard", tz=tz, channel_problems=notify.channel_problems(db, now),
        chart=chart, categories=charts.shares(categories),
        top_blocked=log_reader.top_domains(db, since, blocked=True, limit=10),
        totals=totals, now=now, active=log_reader.devices_active(db, now - 600),
        status=daemon_status(db, config), config_error=app_state.config_error,
        failed_logins=failed_logins(db, since), pending_total=pending_total,
        unnamed=unnamed, default_profile=config.rules.default_profile,
        default_open=config.rules.default_profile in actions.open_profiles(config.rules),
        health=health.report(db, config.data_dir, tz, now))
