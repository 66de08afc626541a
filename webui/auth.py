"""First-run setup (with the installer's setup code), login with throttling, logout.

Throttling is kept in the state DB so unplugging the Pi does not reset it, and is shaped so a
child guessing cannot lock the parents out:
- per peer address (the socket's, never X-Forwarded-For): after 5 failures that address gets
  429 with Retry-After, the delay doubling with each further failure — its correct guess too;
- house-wide: once HOUSE_MAX_FAILURES wrong guesses arrived within HOUSE_WINDOW_S from anywhere
  (a child hopping addresses), every address that has itself failed waits until the window
  drains; an address that has not failed is always heard, so a parent logs in;
- the current password on the settings page (already logged in) has its own limit per session.
The setup code on a fresh install is throttled the same way, from every address.
"""
from __future__ import annotations

import time

from flask import Blueprint, current_app, g, make_response, redirect, render_template, request, url_for

from filterd.store.state import audit, transaction

from . import security, setup_code
from .passwords import hash_password, password_problem, verify_password

bp = Blueprint("auth", __name__)

FREE_ATTEMPTS = 5
FIRST_DELAY_S = 30
MAX_DELAY_S = 3600
FORGET_AFTER_S = 86400     # failures older than a day (and no delay running) are forgotten
HOUSE_WINDOW_S = 600
HOUSE_MAX_FAILURES = 30    # wrong guesses house-wide per window before failing addresses wait


def _db():
    return current_app.extensions["filterd"].db()


def peer_key() -> str:
    return f"peer:{request.remote_addr}"


def throttle_wait(db, keys: list[str], now: float) -> float:
    """Seconds to wait before another attempt is heard (0: go ahead)."""
    wait = 0.0
    for key in keys:
        row = db.execute("SELECT blocked_until FROM login_throttle WHERE key = ?", (key,)).fetchone()
        if row and row[0] > now:
            wait = max(wait, row[0] - now)
    return wait


def house_wait(db, key: str, now: float) -> float:
    """The house-wide cap on guessing: seconds `key` waits (0 for an address with no recent failure)."""
    row = db.execute("SELECT failures, last_failure FROM login_throttle WHERE key = ?", (key,)).fetchone()
    if row is None or row[0] == 0 or now - row[1] >= FORGET_AFTER_S:
        return 0.0
    recent = db.execute("SELECT ts FROM login_failures WHERE ts > ? ORDER BY ts DESC LIMIT ?",
                        (now - HOUSE_WINDOW_S, HOUSE_MAX_FAILURES)).fetchall()
    if len(recent) < HOUSE_MAX_FAILURES:
        return 0.0
    return max(recent[-1][0] + HOUSE_WINDOW_S - now, 1.0)


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


def check_and_count(db, keys: list[str], now: float, house: bool = True) -> float:
    """In one transaction: the wait still to run (0: go ahead, and the attempt is counted).
    `house`: the house-wide cap applies to the first key (the peer address)."""
    with transaction(db):
        wait = throttle_wait(db, keys, now)
        if wait <= 0 and house:
            wait = house_wait(db, keys[0], now)
        if wait <= 0:
            count_attempt(db, keys, now)
    return wait


def record_failure(db, now: float, what: str = "password") -> None:
    """The failed attempt, for the lists on the Settings page and the dashboard."""
    agent = request.headers.get("User-Agent", "")[:200]
    if what != "password":
        agent = f"({what}) {agent}"[:200]
    db.execute("INSERT INTO login_failures (ts, peer, user_agent) VALUES (?, ?, ?)",
               (now, request.remote_addr, agent))


def too_many(wait: float) -> tuple[str, int, dict]:
    seconds = int(wait) + 1
    return (f"Too many wrong attempts from this address. Try again in {seconds} seconds.", 429,
            {"Retry-After": str(seconds)})


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
        keys = [peer_key()]
        wait = check_and_count(db, keys, now)
        if wait > 0:
            error, status, headers = too_many(wait)
        else:
            row = db.execute("SELECT password_hash FROM admin WHERE id = 1").fetchone()
            if row and verify_password(request.form.get("password", ""), row[0]):
                db.execute("DELETE FROM login_throttle WHERE key = ?", keys)
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
                error, status, headers = too_many(wait)
    response = make_response(render_template("login.html", error=error), status)
    response.headers.update(headers)
    return response


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run: the installer's setup code, then the admin password (there is no default one)."""
    db = _db()
    app_state = current_app.extensions["filterd"]
    data_dir = app_state.config().data_dir
    if app_state.admin_exists(db):
        setup_code.remove(data_dir)
        return redirect(url_for("pages.wizard"))
    setup_code.ensure(data_dir)
    error = code_error = None
    status, headers = 200, {}
    if request.method == "POST":
        now = time.time()
        keys = [peer_key()]
        wait = check_and_count(db, keys, now)
        if wait > 0:
            code_error, status, headers = too_many(wait)
        elif not setup_code.matches(data_dir, request.form.get("setup_code", "")):
            record_failure(db, now, "setup code")
            code_error, status = "That is not the setup code.", 403
            wait = throttle_wait(db, keys, now)
            if wait > 0:
                code_error, status, headers = too_many(wait)
        else:
            db.execute("DELETE FROM login_throttle WHERE key = ?", keys)
            password = request.form.get("password", "")
            error = password_problem(password, request.form.get("confirm", ""))
            if error is None:
                cursor = db.execute("INSERT OR IGNORE INTO admin (id, password_hash, created, changed)"
                                    " VALUES (1, ?, ?, ?)", (hash_password(password), now, now))
                if cursor.rowcount == 0:   # someone else finished the setup first
                    return redirect(url_for("auth.login"))
                setup_code.remove(data_dir)
                audit(db, "web UI", "setup", f"admin password set from {request.remote_addr}")
                response = redirect(url_for("pages.wizard"))
                security.start_session(db, response)
                return response
    response = make_response(render_template("setup.html", error=error, code_error=code_error,
                                             code_file=str(setup_code.path(data_dir))), status)
    response.headers.update(headers)
    return response


@bp.route("/logout", methods=["POST"])
def logout():
    db = _db()
    response = redirect(url_for("auth.login"))
    security.end_session(db, response)
    g.session = None
    return response


def change_password(db, current: str, new: str, confirm: str) -> str | None:
    """Settings: change the password; every other session ends. Returns an error or None.

    The current password has a limit of its own per session (a session left open on a shared
    tablet must not be a way to guess at full speed), apart from the login's per-address one:
    a child's guesses at the login form never stop a logged-in parent changing the password."""
    now = time.time()
    keys = [f"session:{g.session.id_hash}"]
    wait = check_and_count(db, keys, now, house=False)
    if wait > 0:
        return f"Too many wrong passwords. Try again in {int(wait) + 1} seconds."
    row = db.execute("SELECT password_hash FROM admin WHERE id = 1").fetchone()
    if row is None or not verify_password(current, row[0]):
        record_failure(db, now, "current password on Settings")
        return "The current password is wrong."
    db.execute("DELETE FROM login_throttle WHERE key = ?", keys)
    problem = password_problem(new, confirm)
    if problem:
        return problem
    db.execute("UPDATE admin SET password_hash = ?, changed = ? WHERE id = 1", (hash_password(new), time.time()))
    db.execute("DELETE FROM sessions")
    audit(db, g.get("actor", "web UI"), "password", "admin password changed; every session ended")
    return None
