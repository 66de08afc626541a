"""Settings → earlier versions of the rules: who changed what when, the difference between a
version and the rules now, and going back to one (validated and written like any edit)."""
from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for

from filterd.store import config_versions, configfile

from . import actions
from .security import flash

bp = Blueprint("config_history", __name__)


def _state():
    app_state = current_app.extensions["filterd"]
    return app_state, app_state.config(), app_state.db()


def _when(ts: float, tz) -> str:
    return datetime.datetime.fromtimestamp(ts, tz).strftime("%a %d %b %Y %H:%M")


@bp.get("/settings/history")
def index():
    app_state, config, db = _state()
    tz = ZoneInfo(config.timezone)
    current_text, version = configfile.read(app_state.config_path)
    rows = config_versions.versions(db)
    return render_template("config_history.html", versions=rows, tz=tz, when=_when, version=version,
                           current=next((v.id for v in rows if v.text == current_text), None))


@bp.get("/settings/history/<int:version_id>")
def compare(version_id: int):
    app_state, config, db = _state()
    tz = ZoneInfo(config.timezone)
    chosen = config_versions.get(db, version_id)
    if chosen is None:
        abort(404, description="That version is no longer kept (the last 50 are).")
    current_text, version = configfile.read(app_state.config_path)
    chosen_name = f"{_when(chosen.ts, tz)} ({chosen.actor})"
    lines = config_versions.text_diff(current_text, chosen.text, "the rules now", chosen_name)
    changes = config_versions.describe_changes(current_text, chosen.text)
    return render_template("config_history_compare.html", chosen=chosen, chosen_name=chosen_name, lines=lines,
                           changes=changes, version=version)


@bp.post("/settings/history/<int:version_id>/restore")
def restore(version_id: int):
    app_state, config, db = _state()
    chosen = config_versions.get(db, version_id)
    if chosen is None:
        abort(404, description="That version is no longer kept (the last 50 are).")
    tz = ZoneInfo(config.timezone)
    try:
        actions.edit_config(db, request.form.get("version"), None, f"restored the rules of {_when(chosen.ts, tz)}",
                            new_text=chosen.text)
        flash(f"The rules of {_when(chosen.ts, tz)} are back. The filter applies them within a second.", "ok")
    except actions.ActionError as exc:
        flash(f"Not restored: {exc}", "error")
    return redirect(url_for("config_history.index"), 303)
