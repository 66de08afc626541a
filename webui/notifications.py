"""Notification channels (their state, a test button), the weekly summary page, and the
background worker that detects events and sends the outbox.

The worker is a daemon thread with its own state DB connection: requests never wait for it,
and it never waits for a request. Each round it reads the current config (so an edited
`notify:` section applies within a round), runs the detectors and sends what is due.
"""
from __future__ import annotations

import logging
import threading
import time
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from filterd import alerts, notify, state, summary

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
}


@bp.route("/settings/notifications")
def settings():
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    db = app_state.db()
    notify_config = config.notify or notify.NotifyConfig()
    problems = {p.name: p for p in notify.channel_problems(db, time.time())}
    channels = []
    for channel in notify_config.channels:
        channels.append({
            "name": channel.name, "type": channel.type, "target": channel.target(),
            "events": [EVENT_NAMES[e] for e in notify.EVENTS if channel.name in notify_config.channels_for(e)],
            "problem": problems.get(channel.name), **notify.channel_activity(db, channel.name)})
    rule = notify_config.repeated_attempts
    weekly = notify_config.weekly_summary
    return render_template(
        "notifications.html", channels=channels, tz=ZoneInfo(config.timezone),
        events=[(EVENT_NAMES[e], notify_config.channels_for(e)) for e in notify.EVENTS],
        public_url=notify.public_url(config), rule=rule,
        weekly_day=notify.DAY_NAMES[weekly.weekday].capitalize(),
        weekly_time=f"{weekly.minute // 60:02d}:{weekly.minute % 60:02d}",
        summary_profiles=alerts.summary_profiles(config) if notify_config.channels_for("weekly_summary") else [],
        profiles=list(config.rules.profiles))


@bp.route("/settings/notifications/test", methods=["POST"])
def send_test():
    """Send a test notification to one channel now (not through the outbox) and say how it went."""
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    name = request.form.get("channel", "")
    notify_config = config.notify or notify.NotifyConfig()
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
    """The weekly summary of one profile (the same data as the e-mail), the last seven days."""
    app_state = current_app.extensions["filterd"]
    config = app_state.config()
    if profile not in config.rules.profiles:
        abort(404)
    tz = ZoneInfo(config.timezone)
    data = summary.weekly_summary(app_state.db(), config, profile, time.time())
    peak = max((day["minutes"] for day in data["days"]), default=0) or 1
    return render_template("summary.html", summary=data, tz=tz, peak=peak, period=summary.period(data, tz),
                           duration=summary.duration, outcome=lambda r: summary.request_outcome(r, tz),
                           profiles=list(config.rules.profiles))
