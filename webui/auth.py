"""First-run setup, login with throttling, logout.

Throttling is keyed on the socket's peer address (never X-Forwarded-For) and on the account,
and kept in the state DB so unplugging the Pi does not reset it: after 5 failures every
attempt gets 429 with Retry-After, the delay doubling each time — a correct password included.
"""
from __future__ import annotations

import time

from flask import Blueprint, current_app, g, make_response, redirect, render_template, request, url_for

from filterd.store.state import audit, transaction

from . import security
from .passwords import hash_password, password_problem, verify_password

bp = Blueprint("auth", __name__)

FREE_ATTEMPTS = 5
FIRST_DELAY_S = 30
MAX_DELAY_S = 3600
FORGET_AFTER_S = 86400     # failures older than a day (and no delay running) are forgotten


def _db():
    return current_app.extensions["filterd"].db()


def throttle_wait(db, keys: list[str], now: float) -> float:
    """Seconds to wait before another attempt is heard (0: go ahead)."""
    wait = 0.0
    for key in keys:
        row = db.execute("SELECT blocked_until FROM login_throttle WHERE key = ?", (key,)).fetchone()
        if row and row[0] > now:
            wait = max(wait, row[0] - now)
    return wait


def count_attempt(db, keys: list[str], now: float) -> None:
    """Count an attempt as a failure before the (slow) password check, so parallel attempts
    cannot all slip through before the first failure is recorded; a success clears it."""
    for key in keys:
        row = db.execute("SELECT failures, blocked_until, last_failure FROM login_throttle WHERE key = ?",
                         (key,)).fetchone()
        failures = row[0] if row and (now - row[2] < FORGET_AFTER_S or row[1] > now) else 0
        failures += 1
        delay = 0 if failures < FREE_ATTEMPTS else min(FIRST_DELAY_S * 2 ** (failures - FREE_ATTEMPTS), MAX_DELAY_S)
        db.execute("INSERT INTO login_throttle (key, failures, blocked_until, last_failure) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,"
                   " blocked_until = excluded.blocked_until, last_failure = excluded.last_failure",
                   (key, failures, now + delay, now))


def check_and_count(db, keys: list[str], now: float) -> float:
    """In one transaction: the wait still to run (0: go ahead, and the attempt is counted)."""
    with transaction(db):
        wait = throttle_wait(db, keys, now)
        if wait <= 0:
            count_attempt(db, keys, now)
    return wait


def record_failure(db, now: float) -> None:
    """The failed attempt, for the list on the Settings page."""
    db.execute("INSERT INTO login_failures (ts, peer, user_agent) VALUES (?, ?, ?)",
               (now, request.remote_addr, request.headers.get("User-Agent", "")[:200]))


def _safe_next(target: str | None) -> str:
    """Only same-site paths: no open redirect through ?next=."""
    return security.safe_redirect_target(target, url_for("dashboard.index"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    db = _db()
    error = None
    status = 200
    headers = {}
    if request.method == "POST":
        now = time.time()
        keys = [f"peer:{request.remote_addr}", "account:admin"]
        wait = check_and_count(db, keys, now)
        if wait > 0:
            error = f"Too many wrong passwords. Try again in {int(wait) + 1} seconds."
            status, headers = 429, {"Retry-After": str(int(wait) + 1)}
        else:
            row = db.execute("SELECT password_hash FROM admin WHERE id = 1").fetchone()
            if row and verify_password(request.form.get("password", ""), row[0]):
                db.execute("DELETE FROM login_throttle WHERE key IN (?, ?)", keys)
                response = redirect(_safe_next(request.args.get("next")))
                security.end_session(db, response)       # whatever came before, a new ID now
                security.start_session(db, response)
                audit(db, "web UI", "login", f"from {request.remote_addr}")
                return response
            record_failure(db, now)
            error = "Wrong password."
            status = 401
            wait = throttle_wait(db, keys, now)
            if wait > 0:
                status, headers = 429, {"Retry-After": str(int(wait) + 1)}
                error = f"Too many wrong passwords. Try again in {int(wait) + 1} seconds."
    response = make_response(render_template("login.html", error=error), status)
    response.headers.update(headers)
    return response


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run: choose the admin password (there is no default one)."""
    db = _db()
    app_state = current_app.extensions["filterd"]
    if app_state.admin_exists(db):
        return redirect(url_for("pages.wizard"))
    error = None
    if request.method == "POST":
        password = request.form.get("password", "")
        error = password_problem(password, request.form.get("confirm", ""))
        if error is None:
            now = time.time()
            cursor = db.execute("INSERT OR IGNORE INTO admin (id, password_hash, created, changed) VALUES (1, ?, ?, ?)",
                                (hash_password(password), now, now))
            if cursor.rowcount == 0:   # someone else finished the setup first
                return redirect(url_for("auth.login"))
            audit(db, "web UI", "setup", f"admin password set from {request.remote_addr}")
            response = redirect(url_for("pages.wizard"))
            security.start_session(db, response)
            return response
    return render_template("setup.html", error=error)


@bp.route("/logout", methods=["POST"])
def logout():
    db = _db()
    response = redirect(url_for("auth.login"))
    security.end_session(db, response)
    g.session = None
    return response


def change_password(db, current: str, new: str, confirm: str) -> str | None:
    """Settings: change the password; every other session ends. Returns an error or None.

    The current password is checked under the same throttle as the login form: a session left
    open on a shared tablet must not be a way to guess the password at full speed."""
    now = time.time()
    keys = [f"peer:{request.remote_addr}", "account:admin"]
    wait = check_and_count(db, keys, now)
    if wait > 0:
        return f"Too many wrong passwords. Try again in {int(wait) + 1} seconds."
    row = db.execute("SELECT password_hash FROM admin WHERE id = 1").fetchone()
    if row is None or not verify_password(current, row[0]):
        record_failure(db, now)
        return "The current password is wrong."
    db.execute("DELETE FROM login_throttle WHERE key IN (?, ?)", keys)
    problem = password_problem(new, confirm)
    if problem:
        return problem
    db.execute("UPDATE admin SET password_hash = ?, changed = ? WHERE id = 1", (hash_password(new), time.time()))
    db.execute("DELETE FROM sessions")
    audit(db, g.get("actor", "web UI"), "password", "admin password changed; every session ended")
    return None
