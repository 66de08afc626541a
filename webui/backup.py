"""Backup (config and state as one file) and restore (validated before anything is replaced).

The format and its checks are filterd.store.backup's; this is only the two routes. Restoring keeps
every session: it never changes the admin password or the API tokens (the backup holds
neither), so who was logged in before is exactly who may be logged in after.
"""
from __future__ import annotations

import time

from flask import Blueprint, current_app, g, redirect, request, url_for

from filterd.store import backup as backup_format
from filterd.store import configfile

from .security import flash

bp = Blueprint("backup", __name__)


# Of notify.channels.*: the webhook's secret, the ntfy token, the SMTP password (addresses are kept).
SECRET_KEYS = ("secret", "token", "password")


def without_notification_secrets(config_text: str) -> str:
    """The config text without the notification channels' secrets (comments kept). A backup
    made so can be handed to someone helping; restored, the channels need their secrets again."""
    import io

    from ruamel.yaml import YAML
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    document = yaml.load(config_text)
    channels = ((document or {}).get("notify") or {}).get("channels") or {}
    changed = False
    for channel in channels.values():
        for key in SECRET_KEYS:
            if isinstance(channel, dict) and key in channel:
                del channel[key]
                changed = True
    if not changed:
        return config_text
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


@bp.route("/settings/backup")
def download():
    """The backup file (a GET that only reads); ?secrets=omit leaves out the notification secrets."""
    app_state = current_app.extensions["filterd"]
    config_text, _ = configfile.read(app_state.config_path)
    omit = request.args.get("secrets") == "omit"
    if omit:
        config_text = without_notification_secrets(config_text)
    data = backup_format.make_backup(config_text, app_state.db())
    name = time.strftime("filterd-backup-%Y%m%d-%H%M" + ("-no-secrets" if omit else "") + ".json.gz")
    response = current_app.response_class(data, mimetype="application/gzip")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.route("/settings/restore", methods=["POST"])
def restore():
    """Replace the config and the backed-up state with an uploaded backup, once it is valid."""
    from .pages import render_settings

    app_state = current_app.extensions["filterd"]
    upload = request.files.get("backup")
    if upload is None or not upload.filename:
        return render_settings({"restore": "Choose the backup file to restore."})
    data = upload.read(backup_format.MAX_BACKUP_BYTES + 1)
    config = app_state.config()
    try:
        restored = backup_format.read_backup(data, app_state.config_path, config.data_dir)
    except backup_format.BackupError as exc:
        return render_settings({"restore": f"Not restored, nothing was changed: {exc}"})
    backup_format.apply_backup(restored, app_state.config_path, app_state.db(), g.get("actor", "web UI"))
    flash(f"Restored the {restored.summary()}. The filter applies it within a second.", "ok")
    return redirect(url_for("pages.settings"))
