"""Notification channels (their state, a test button), the weekly summary page, and the
background worker that detects events and sends the outbox.

The worker is a daemon thread with its own state DB connection: requests never wait for it,
and it never waits for a request. Each round it reads the current config (so an edited
`notify:` section applies within a round), runs the detectors and sends what is due.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from filterd.family import alerts, notify, summary
from filterd.rules import notify_settings
from filterd.rules.model import DAY_NAMES
from filterd.store import state

from . import actions
from .security import flash

bp = Blueprint("notifications", __name__)
log = logging.getLogger("filterd.webui.notify")

ROUND_S = 5.0


class NotifyWorker:
    """Every `interval_s`: detectors, then the outbox. Stopped by `stop()` (tests) or with the process."""

    def __init__(self, app, interval_s: float = ROUND_S):
        self.app = app
        self.interval_s = interval_s
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-worker", daemon=True)
        self._conn = None
        self._conn_path = None
        self.rounds = 0

    def start(self) -> "NotifyWorker":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_once(self, now: float | None = None) -> tuple[int, int]:
        """One round: (events queued, notifications sent)."""
        config = self.app.extensions["filterd"].config()
        path = state.db_path(config.data_dir)
        if self._conn is None or path != self._conn_path:
            self._close()
            self._conn, self._conn_path = state.connect(path), path
        now = time.time() if now is None else now
        queued = alerts.run_detectors(self._conn, config, now, running_since=self.started)
        sent = notify.send_due(self._conn, config, now)
        self.rounds += 1
        return queued, sent

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:   # a locked DB, a bug: log it, keep the worker alive for the next round
                log.exception("notification round failed; trying again in %.0f s", self.interval_s)
                self._close()
            self._stop.wait(self.interval_s)
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None


def start_worker(app, config, interval_s: float = ROUND_S) -> NotifyWorker:
    """Start the background sender of notifications (once per app)."""
    worker = app.extensions.get("filterd-notify")
    if worker is None:
        worker = NotifyWorker(app, interval_s).start()
        app.extensions["filterd-notify"] = worker
    return worker


EVENT_NAMES = {
    "access_request": "a child asks for a site",
    "new_device": "a new device on the network",
    "repeated_attempts": "repeated blocked attempts",
    "daemon_problem": "a problem with the filter",
    "weekly_summary": "the weekly summary",
    "limit_spent": "a daily limit runs out (limits with notify: true)",
}


# The channel forms. Field names carry the type ("ntfy-url", "email-host"): one form holds the
# fields of every type, and only the chosen type's are used. Secrets (the webhook's secret, the
# SMTP password) are never put back into a page: an empty secret field keeps the current one.
PRIORITIES = ("min", "low", "default", "high", "urgent")
TYPE_FIELDS = {
    "ntfy": ("url", "priority"),
    "webhook": ("url", "secret"),
    "email": ("host", "port", "security", "username", "password", "from", "to"),
}
SECRET_FIELDS = ("webhook-secret", "email-password")
PLAIN_FIELDS = ("name", "type") + tuple(f"{kind}-{key}" for kind, keys in TYPE_FIELDS.items() for key in keys
                                         if f"{kind}-{key}" not in SECRET_FIELDS)
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


@bp.route("/settings/notifications")
def settings(errors: dict[str, str] | None = None, error_form: str | None = None):
    """The channels (each with its events, its settings and a remove button), what goes where,
    and the form to add a channel. After a refused change, `error_form` ("add" or a channel's
    name) is the form shown again with the parent's input (never a secret) and `errors`."""
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    db = app_state.db()
    notify_config = config.notify or notify_settings.NotifyConfig()
    problems = {p.name: p for p in notify.channel_problems(db, time.time())}
    errors = errors or {}
    channels = []
    for channel in notify_config.channels:
        mine = error_form == channel.name
        channels.append({
            "name": channel.name, "type": channel.type, "target": channel.target(),
            "events": [EVENT_NAMES[e] for e in notify_settings.EVENTS if channel.name in notify_config.channels_for(e)],
            "values": _submitted_values() if mine else _channel_values(channel, notify_config),
            "errors": errors if mine else {},
            "has_secret": bool(channel.secret), "has_password": bool(channel.password),
            "problem": problems.get(channel.name), **notify.channel_activity(db, channel.name)})
    rule = notify_config.repeated_attempts
    weekly = notify_config.weekly_summary
    return render_template(
        "notifications.html", channels=channels, tz=ZoneInfo(config.timezone),
        events=[(EVENT_NAMES[e], notify_config.channels_for(e)) for e in notify_settings.EVENTS],
        event_names=EVENT_NAMES, priorities=PRIORITIES, version=actions.config_version(),
        add_values=_submitted_values() if error_form == "add" else _new_values(),
        add_errors=errors if error_form == "add" else {},
        public_url=notify.public_url(config), rule=rule,
        weekly_day=DAY_NAMES[weekly.weekday].capitalize(),
        weekly_time=f"{weekly.minute // 60:02d}:{weekly.minute % 60:02d}",
        summary_profiles=alerts.summary_profiles(config) if notify_config.channels_for("weekly_summary") else [],
        profiles=list(config.rules.profiles))


def _new_values() -> dict:
    values = dict.fromkeys(PLAIN_FIELDS, "")
    values.update({"type": "ntfy", "ntfy-priority": "default", "email-security": "starttls",
                   "events": set(notify_settings.EVENTS)})
    return values


def _submitted_values() -> dict:
    """The parent's input, to show the form again: everything but the secrets."""
    values = {key: request.form.get(key, "") for key in PLAIN_FIELDS}
    values["events"] = set(request.form.getlist("event"))
    return values


def _channel_values(channel, notify_config) -> dict:
    """An existing channel's settings for its form. Not its URL (the path can hold a token; the
    field stays empty and keeps the URL) and never a secret."""
    values = dict.fromkeys(PLAIN_FIELDS, "")
    values["name"], values["type"] = channel.name, channel.type
    values["ntfy-priority"] = "urgent" if channel.priority == "max" else channel.priority
    if channel.type == "email":
        values.update({
            "email-host": channel.host or "",
            # The default port is left out, so that changing the security changes the port with it.
            "email-port": "" if channel.port == DEFAULT_PORTS.get(channel.security) else str(channel.port),
            "email-security": channel.security, "email-username": channel.username or "",
            "email-from": channel.sender or "", "email-to": ", ".join(channel.recipients)})
    values["events"] = {e for e in notify_settings.EVENTS if channel.name in notify_config.channels_for(e)}
    return values


@bp.route("/settings/notifications/add", methods=["POST"])
def add_channel():
    """A new channel from the form, with the events it receives."""
    app_state = current_app.extensions["filterd"]
    form = request.form
    name, kind = form.get("name", "").strip(), form.get("type", "")
    if not name:
        return settings({"name": "Give the channel a name, e.g. phone."}, "add")
    if kind not in TYPE_FIELDS:
        return settings({"type": "Choose ntfy, webhook or e-mail."}, "add")

    def change(document):
        section = _notify_section(document)
        channels = _mapping_in(section, "channels")
        if any(str(existing).lower() == name.lower() for existing in channels):
            raise actions.ActionError(f"A channel named {name} exists already: choose another name.", "name")
        body = {"type": kind}
        _apply_settings(body, kind, form, existing=False)
        channels[name] = body
        _set_events(section, name, chosen)

    try:
        chosen = _chosen_events(form)
        actions.edit_config(app_state.db(), form.get("version"), change,
                             f"notification channel {name} added ({kind}; events: {', '.join(chosen) or 'none'})")
    except actions.ActionError as exc:
        return settings(_error_of(exc, name, kind), "add")
    flash(f"Channel {name} added. Send it a test notification to check that it arrives.", "ok")
    return redirect(url_for("notifications.settings", _anchor=f"channel-{name}"), 303)


@bp.route("/settings/notifications/edit", methods=["POST"])
def edit_channel():
    """A channel's events and settings; an empty secret field keeps the current secret."""
    app_state = current_app.extensions["filterd"]
    form = request.form
    name = form.get("channel", "")
    channel = (app_state.config().notify or notify_settings.NotifyConfig()).channel(name)
    if channel is None:
        flash("There is no such channel in the config (removed meanwhile?).", "error")
        return redirect(url_for("notifications.settings"), 303)
    kind = channel.type
    # Whether a secret was replaced is worth a line in the audit trail; the secret itself never is.
    new_secret = bool(form.get("webhook-secret") if kind == "webhook" else form.get("email-password")
                      if kind == "email" else "")

    def change(document):
        section = _notify_section(document)
        body = _mapping_in(section, "channels").get(name)
        if not isinstance(body, dict) or body.get("type") != kind:
            raise actions.ActionError(f"The channel {name} was changed meanwhile: reload the page.", "version")
        _apply_settings(body, kind, form, existing=True)
        _set_events(section, name, chosen)

    try:
        chosen = _chosen_events(form)
        actions.edit_config(app_state.db(), form.get("version"), change,
                             f"notification channel {name} changed (events: {', '.join(chosen) or 'none'}"
                             f"{'; a new secret' if new_secret else ''})")
    except actions.ActionError as exc:
        return settings(_error_of(exc, name, kind), name)
    flash(f"Saved channel {name}.", "ok")
    return redirect(url_for("notifications.settings", _anchor=f"channel-{name}"), 303)


@bp.route("/settings/notifications/remove", methods=["POST"])
def remove_channel():
    """Remove a channel and take it out of every event's list (its waiting messages are dropped)."""
    app_state = current_app.extensions["filterd"]
    name = request.form.get("channel", "")
    if (app_state.config().notify or notify_settings.NotifyConfig()).channel(name) is None:
        flash("There is no such channel in the config (removed meanwhile?).", "error")
        return redirect(url_for("notifications.settings"), 303)

    def change(document):
        section = _notify_section(document)
        channels = _mapping_in(section, "channels")
        if name not in channels:
            raise actions.ActionError(f"The channel {name} was removed meanwhile: reload the page.", "version")
        del channels[name]
        _set_events(section, name, ())

    try:
        actions.edit_config(app_state.db(), request.form.get("version"), change,
                             f"notification channel {name} removed")
    except actions.ActionError as exc:
        return settings(_error_of(exc, name, ""), name)
    flash(f"Channel {name} removed.", "ok")
    return redirect(url_for("notifications.settings"), 303)


def _chosen_events(form) -> tuple[str, ...]:
    chosen = form.getlist("event")
    if any(event not in notify_settings.EVENTS for event in chosen):
        raise actions.ActionError("Choose among the events offered.", "event")
    return tuple(e for e in notify_settings.EVENTS if e in chosen)


def _notify_section(document) -> dict:
    if document.get("notify") is None:
        document["notify"] = {}
    if not isinstance(document["notify"], dict):
        raise actions.ActionError("notify: in the config file is not a mapping: fix it by hand.", "form")
    return document["notify"]


def _mapping_in(section: dict, key: str) -> dict:
    if section.get(key) is None:
        section[key] = {}
    if not isinstance(section[key], dict):
        raise actions.ActionError(f"notify.{key} in the config file is not a mapping: fix it by hand.", "form")
    return section[key]


def _put(body: dict, key: str, value, default=None) -> None:
    """Set a key only when it changes (an untouched setting keeps its spelling in the file);
    None removes it. A value equal to `default` is not written where the key is absent."""
    if value is None:
        body.pop(key, None)
    elif key not in body and value == default:
        return
    elif body.get(key) != value:
        body[key] = value


def _apply_settings(body: dict, kind: str, form, existing: bool) -> None:
    """The type's settings from the form into the channel's mapping (validated afterwards by
    the config check). An existing channel keeps its URL and secrets where the field is empty."""
    def text(key: str) -> str:
        return form.get(f"{kind}-{key}", "").strip()

    if kind in ("ntfy", "webhook"):
        if text("url") or not existing:          # an existing channel's URL is not shown: empty keeps it
            _put(body, "url", text("url"))
    if kind == "ntfy":
        _put(body, "priority", text("priority") or "default", "default")
    elif kind == "webhook":
        secret = form.get("webhook-secret", "")
        if secret:
            _put(body, "secret", secret)
        elif form.get("webhook-remove-secret"):
            _put(body, "secret", None)
    elif kind == "email":
        security = text("security")
        _put(body, "host", text("host"))
        port = text("port")
        _put(body, "port", None if not port else int(port) if port.isdigit() else port)
        _put(body, "security", security, "starttls")
        username, password = text("username"), form.get("email-password", "")
        if not username and not password:
            _put(body, "username", None)         # no login
            _put(body, "password", None)
        else:
            _put(body, "username", username or None)
            if password:
                _put(body, "password", password)
        _put(body, "from", text("from"))
        recipients = [item for item in re.split(r"[,;\s]+", text("to")) if item]
        current = body.get("to")
        if not recipients:
            _put(body, "to", None)               # the check says an address is needed
        elif ([current] if isinstance(current, str) else current) != recipients:
            body["to"] = recipients


def _set_events(section: dict, name: str, chosen) -> None:
    """Put `name` in the lists of the `chosen` events and take it out of the others."""
    events = section.get("events")
    if events is None:
        if not chosen:
            return
        events = section["events"] = {}
    if not isinstance(events, dict):
        raise actions.ActionError("notify.events in the config file is not a mapping: fix it by hand.", "form")
    for event in notify_settings.EVENTS:
        current = events.get(event)
        items = [] if current is None else [current] if isinstance(current, str) else current
        if not isinstance(items, list):
            raise actions.ActionError(f"notify.events.{event} in the config file is not a list: fix it by hand.",
                                       "form")
        if event in chosen and name not in items:
            if isinstance(current, list):
                current.append(name)
            else:
                events[event] = items + [name]
        elif event not in chosen and name in items:
            if isinstance(current, list):
                while name in current:
                    current.remove(name)
            else:
                events[event] = []
            if not events[event]:
                del events[event]


def _error_of(exc, name: str, kind: str) -> dict[str, str]:
    """An ActionError → {form field: message}: notify.channels.phone.url → "ntfy-url",
    notify.channels.mum.to[1] → "email-to", the channel's own path → "name"."""
    path = exc.field or ""
    message = str(exc)
    prefix = f"notify.channels.{name}"
    if path in ("name", "type", "event", "version", "form"):
        field = path
    elif path == prefix:
        field = "name"
    elif path.startswith(prefix + "."):
        key = path[len(prefix) + 1:].split("[")[0]
        field = "type" if key == "type" else f"{kind}-{key}" if key in TYPE_FIELDS.get(kind, ()) else "form"
    elif path.startswith("notify.events"):
        field = "event"
    else:
        field = "form"
    if field != "form" and path and message.startswith(path + ": "):
        message = message[len(path) + 2:]       # beside its field, the YAML path says nothing more
    return {field: message}


@bp.route("/settings/notifications/test", methods=["POST"])
def send_test():
    """Send a test notification to one channel now (not through the outbox) and say how it went."""
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    name = request.form.get("channel", "")
    notify_config = config.notify or notify_settings.NotifyConfig()
    if notify_config.channel(name) is None:
        flash("There is no such channel in the config.", "error")
        return redirect(url_for("notifications.settings"), 303)
    error = notify.send_test(config, name)
    state.audit(app_state.db(), g.get("actor", "web UI"), "notification test",
                f"{name}: {'failed' if error else 'sent'}")
    if error:
        flash(f"The test to {name} failed: {error}", "error")
    else:
        flash(f"Test notification sent to {name}. Check that it arrived.", "ok")
    return redirect(url_for("notifications.settings"), 303)


@bp.route("/summary/<profile>")
def weekly(profile: str):
    """The weekly summary of one profile: the week the last e-mail covered, with its cut-off
    (alerts.last_weekly_moment), so the page and the e-mail count the same requests."""
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    if profile not in config.rules.profiles:
        abort(404)
    tz = ZoneInfo(config.timezone)
    data = summary.weekly_summary(app_state.db(), config, profile,
                                  alerts.last_weekly_moment(config, time.time()).timestamp())
    peak = max((day["minutes"] for day in data["days"]), default=0) or 1
    return render_template("summary.html", summary=data, tz=tz, peak=peak, period=summary.period(data, tz),
                           duration=summary.duration, outcome=lambda r: summary.request_outcome(r, tz),
                           profiles=list(config.rules.profiles))
