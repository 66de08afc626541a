"""The parents' web UI and the children's block page: a Flask application factory.

It imports filterd's config, policy and state modules rather than re-implementing them; the
files are the interface with the daemon (the YAML config and state.db), so either process can
restart alone.
"""
from __future__ import annotations

import functools

import os
import threading
from pathlib import Path

from flask import Flask, g
from flask.json.provider import DefaultJSONProvider

from filterd.files import file_signature
from filterd.store import state
from filterd.rules.config import Config, load_config

from . import security


class AppState:
    """What the app shares between requests: the config (reloaded when the file changes)."""

    def __init__(self, config_path: Path):
        self.config_path = Path(config_path)
        self._config: Config | None = None
        self._signature = None
        self._lock = threading.Lock()
        self._admin_exists = False

    def config(self) -> Config:
        """The current config; a broken file keeps the last good one (the page says so)."""
        signature = file_signature(self.config_path)
        with self._lock:
            if self._config is None or signature != self._signature:
                try:
                    self._config = load_config(self.config_path)
                    self.config_error = None
                except Exception as exc:  # ConfigError: keep the last good config
                    if self._config is None:
                        raise
                    self.config_error = str(exc)
                self._signature = signature
            return self._config

    config_error: str | None = None

    def policy(self):
        """The daemon's policy for the current config and compiled lists (for "why?" and the block page)."""
        from filterd.lists import sources
        from filterd.lists.build import build_policy

        config = self.config()
        key = (id(config), sources.current_signature_path(config))
        with self._lock:
            if getattr(self, "_policy_key", None) != key:
                # The daemon compiles; until it has, the page decides with no list (never compiles here).
                self._policy = build_policy(config, compile_if_missing=False, missing_ok=True)
                self._policy_key = key
            return self._policy

    def admin_hosts(self) -> set[str]:
        return security.admin_hosts(self.config())

    def db(self):
        """One connection per request (closed at teardown)."""
        if "db" not in g:
            g.db = state.connect(state.db_path(self.config().data_dir))
        return g.db

    def admin_exists(self, db) -> bool:
        if not self._admin_exists:
            self._admin_exists = db.execute("SELECT 1 FROM admin WHERE id = 1").fetchone() is not None
        return self._admin_exists


class HtmlSafeJSONProvider(DefaultJSONProvider):
    """JSON with <, >, & and ' written as \\u escapes: a query name such as
    <script>…</script> never appears raw in any response, even if one is misread as HTML."""

    def dumps(self, obj, **kwargs) -> str:
        text = super().dumps(obj, **kwargs)
        return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
                .replace("'", "\\u0027"))


def _datetimeformat(ts: float, tz=None, fmt: str = "%H:%M") -> str:
    import datetime
    return datetime.datetime.fromtimestamp(ts, tz).strftime(fmt)


def _ago(seconds: float | None) -> str:
    """How long ago, as a parent says it: "just now", "5 min", "2 h", "3 days"."""
    if seconds is None:
        return "never"
    if seconds < 90:
        return "just now"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


@functools.lru_cache(maxsize=1)
def _timezones() -> tuple[str, ...]:
    """The time zones a house may be in (Continent/City), for the searchable list."""
    from zoneinfo import available_timezones
    areas = ("Africa/", "America/", "Antarctica/", "Asia/", "Atlantic/", "Australia/", "Europe/", "Indian/", "Pacific/")
    return tuple(sorted(zone for zone in available_timezones() if zone.startswith(areas))) + ("UTC",)


def create_app(config_path: str | os.PathLike, testing: bool = False) -> Flask:
    app = Flask(__name__)
    app.json = HtmlSafeJSONProvider(app)
    app.config.update(TESTING=testing, MAX_CONTENT_LENGTH=2 * 2**20, SESSION_COOKIE_HTTPONLY=True)
    app.extensions["filterd"] = AppState(Path(config_path))
    app.jinja_env.autoescape = True
    app.jinja_env.globals["csrf_token"] = security.csrf_token
    app.jinja_env.globals["take_flashes"] = security.take_flashes
    app.jinja_env.filters["datetimeformat"] = _datetimeformat
    app.jinja_env.filters["ago"] = _ago
    app.jinja_env.globals["timezones"] = _timezones

    from . import api, auth, backup, blockpage, certificate, dashboard, devices, encrypted_dns, log, notifications, pages, request_pages, me, config_history
    for module in (auth, blockpage, dashboard, devices, log, pages, request_pages, notifications, me, config_history, certificate,
                   backup, encrypted_dns, api):
        app.register_blueprint(module.bp)

    app.before_request(security.gate)
    app.after_request(security.add_headers)

    @app.teardown_appcontext
    def close_db(exc):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    from .errors import register
    register(app)
    return app
