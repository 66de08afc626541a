"""The checks in front of every request: Host, authentication, CSRF, and the response headers.

Children on the same Wi-Fi will try: a foreign Host header gets the block page (also the
DNS-rebinding defence); every admin route and method is closed except the login, the first-run
setup, static files and the PUBLIC_DOWNLOADS; a
state-changing request needs the session's CSRF token (form field or X-CSRF-Token header) and
a same-origin Origin, or an API bearer token.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import abort, current_app, g, redirect, request, url_for

SESSION_COOKIE = "filterd_session"
SECURE_SESSION_COOKIE = "__Host-filterd_session"
LOGIN_CSRF_COOKIE = "filterd_login_csrf"
SECURE_LOGIN_CSRF_COOKIE = "__Host-filterd_login_csrf"
IDLE_EXPIRY_S = 7 * 86400
ABSOLUTE_EXPIRY_S = 30 * 86400
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

# The house CA's certificate is public (it goes onto the children's devices), so its downloads
# and the trust check are open to anyone on an admin host name (GET only).
PUBLIC_DOWNLOADS = {"certificate.ca_certificate", "certificate.mobileconfig", "certificate.trust_check",
                    "certificate.trust_image", "me.page",
                    "encrypted_dns.shared_profile"}   # signed for one device and an hour

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # The old XSS auditors of browsers could be made to blank out parts of a page; the CSP does that job.
    "X-XSS-Protection": "0",
}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------- host names


def host_of(header: str) -> str:
    """The host part of a Host header, without port or IPv6 brackets, lowercased.

    A malformed header (a port that is not a number, text after the brackets) gives "", which
    is never an admin host name."""
    host = header.strip().lower()
    if host.startswith("["):
        inside, _, rest = host[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return ""
        return inside
    if host.count(":") == 1:
        host, port = host.split(":", 1)
        if not port.isdigit():
            return ""
    return host.rstrip(".")


def admin_hosts(config) -> set[str]:
    web = config.rules.web
    hosts = set(web.hostnames)
    for address in (web.host, web.address, web.address6):
        if address:
            hosts.add(address.lower())
    try:
        if ipaddress.ip_address(web.host).is_loopback or web.host in ("0.0.0.0", "::"):  # nosec B104
            hosts.update({"localhost", "127.0.0.1", "::1"})
    except ValueError:
        pass
    return hosts


def is_admin_host() -> bool:
    return host_of(request.headers.get("Host", "")) in current_app.extensions["filterd"].admin_hosts()


# ---------------------------------------------------------------- sessions


@dataclass
class Session:
    id_hash: str
    csrf_token: str
    created: float


def _cookie_name() -> str:
    return SECURE_SESSION_COOKIE if request.is_secure else SESSION_COOKIE


def login_cookie_name() -> str:
    return SECURE_LOGIN_CSRF_COOKIE if request.is_secure else LOGIN_CSRF_COOKIE


def load_session(db) -> Session | None:
    token = request.cookies.get(_cookie_name())
    if not token or len(token) > 200:
        return None
    row = db.execute("SELECT id_hash, csrf_token, created, last_seen FROM sessions WHERE id_hash = ?",
                     (token_hash(token),)).fetchone()
    if row is None:
        return None
    now = time.time()
    if now - row[3] > IDLE_EXPIRY_S or now - row[2] > ABSOLUTE_EXPIRY_S:
        db.execute("DELETE FROM sessions WHERE id_hash = ?", (row[0],))
        return None
    if now - row[3] > 60:  # keep the idle clock without a write per request
        db.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, row[0]))
    return Session(row[0], row[1], row[2])


def start_session(db, response) -> None:
    """A new session (a fresh ID: the login rotates it), set as an HttpOnly, SameSite cookie."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    # Expired sessions of earlier logins would otherwise stay in the table for ever.
    db.execute("DELETE FROM sessions WHERE last_seen < ? OR created < ?", (now - IDLE_EXPIRY_S, now - ABSOLUTE_EXPIRY_S))
    db.execute("INSERT INTO sessions (id_hash, created, last_seen, csrf_token, peer, user_agent)"
               " VALUES (?, ?, ?, ?, ?, ?)", (token_hash(token), now, now, secrets.token_urlsafe(32),
                                             request.remote_addr, request.headers.get("User-Agent", "")[:200]))
    response.set_cookie(_cookie_name(), token, max_age=ABSOLUTE_EXPIRY_S, httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/")


def end_session(db, response) -> None:
    token = request.cookies.get(_cookie_name())
    if token:
        db.execute("DELETE FROM sessions WHERE id_hash = ?", (token_hash(token),))
    response.delete_cookie(_cookie_name(), path="/", secure=request.is_secure, samesite="Strict")


# API token scopes, each including the one before: reading; reading and the family's everyday
# answers (pause, resume, allow for a while, bonus time, answer a child's request); everything.
TOKEN_SCOPES = {"read": "Read only", "family": "Family actions (pause, allow, answer requests)",
                "admin": "Full admin (also rules and lists)"}
FAMILY_ENDPOINTS = {"api.pause", "api.resume", "api.allow", "api.bonus", "api.approve_request",
                    "api.decline_request", "api.undo_allow", "api.undo_bonus", "api.undo_pause"}


def scope_allows(scope: str, endpoint: str, method: str) -> bool:
    if scope == "admin":
        return True
    if method in SAFE_METHODS:
        return scope in ("read", "family")
    return scope == "family" and endpoint in FAMILY_ENDPOINTS


def bearer_token(db) -> bool:
    """An API request with a valid, unexpired token whose scope covers it (403 when it does not)."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    token = header[7:].strip()
    if not token or len(token) > 200:
        return False
    row = db.execute("SELECT id, name, scope, expires FROM api_tokens WHERE token_hash = ?",
                     (token_hash(token),)).fetchone()
    now = time.time()
    if row is None or (row[3] is not None and row[3] <= now):
        return False
    db.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (now, row[0]))
    g.actor = f"API token {row[1]} (#{row[0]})"
    if not scope_allows(row[2], request.endpoint or "", request.method):
        abort(403, description=f"This token may only {TOKEN_SCOPES.get(row[2], row[2]).lower()}: "
                               "create one with a wider scope on the Settings page.")
    return True


def flash(message: str, kind: str = "ok") -> None:
    """A one-time message for the next page, kept in the server-side session."""
    session = g.get("session")
    if session is None:
        return
    db = current_app.extensions["filterd"].db()
    row = db.execute("SELECT flash FROM sessions WHERE id_hash = ?", (session.id_hash,)).fetchone()
    messages = json.loads(row[0]) if row and row[0] else []
    messages.append([kind, message[:500]])
    db.execute("UPDATE sessions SET flash = ? WHERE id_hash = ?", (json.dumps(messages[-5:]), session.id_hash))


def take_flashes() -> list[tuple[str, str]]:
    session = g.get("session")
    if session is None:
        return []
    db = current_app.extensions["filterd"].db()
    row = db.execute("SELECT flash FROM sessions WHERE id_hash = ?", (session.id_hash,)).fetchone()
    if not row or not row[0]:
        return []
    db.execute("UPDATE sessions SET flash = NULL WHERE id_hash = ?", (session.id_hash,))
    return [tuple(m) for m in json.loads(row[0])]


# ---------------------------------------------------------------- CSRF


def csrf_token() -> str:
    """The token for the page being rendered: the session's, or the login form's cookie."""
    session = g.get("session")
    if session is not None:
        return session.csrf_token
    token = g.get("login_csrf")
    if token is None:
        token = request.cookies.get(login_cookie_name()) or secrets.token_urlsafe(32)
        g.login_csrf = token
    return token


def origin_is_foreign() -> bool:
    """A browser sends Origin on cross-site POSTs (and Sec-Fetch-Site): refuse any request
    that says it comes from anywhere but this very origin (scheme, host and port)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin").lower() not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return origin.rstrip("/").lower() != f"{request.scheme}://{request.headers.get('Host', '')}".lower()


def safe_redirect_target(target: str | None, default: str) -> str:
    """Only a path on this site (no open redirect through ?next= or a form's back field)."""
    if not target or len(target) > 2000:
        return default
    if any(ord(c) < 0x21 or c in "\\\x7f" for c in target):   # control characters, spaces, backslashes
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def check_csrf(expected: str | None) -> None:
    """Abort with 400 unless the request carries the expected token and no foreign Origin."""
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    if origin_is_foreign() or not expected or not sent or \
            not hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode()):
        abort(400, description="This form has expired or did not come from this page. "
                               "Reload the page and try again.")


# ---------------------------------------------------------------- admin pages over HTTPS

HSTS = "max-age=31536000"    # a year; browsers ignore it from a connection whose certificate they refused


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_https_url() -> str | None:
    """Where a plain-HTTP admin request should go instead: the same path over HTTPS, while the
    HTTPS server runs (web.blockpage_https: ca, with the house CA) and web.admin_https is auto.
    Not for loopback (`make run`), nor the CA's public downloads (a device fetches those before
    it trusts the CA)."""
    if request.is_secure or request.endpoint in PUBLIC_DOWNLOADS:
        return None
    web = current_app.extensions["filterd"].config().rules.web
    if web.admin_https != "auto" or web.blockpage_https != "ca" or "filterd.https_server" not in current_app.extensions:
        return None
    host = host_of(request.headers.get("Host", ""))
    if not host or _is_loopback(host):
        return None
    if host not in web.hostnames and host not in (web.address, web.address6):
        return None      # e.g. the listen address alone: the HTTPS server is not there, its certificate names not it
    shown = f"[{host}]" if ":" in host else host
    port = "" if web.https_port == 443 else f":{web.https_port}"
    path = request.full_path if request.query_string else request.path
    return f"https://{shown}{port}{safe_redirect_target(path, '/')}"


# ---------------------------------------------------------------- the gate


def gate():
    """before_request: decide who may see what. Returns a response to stop the request."""
    app_state = current_app.extensions["filterd"]
    if request.endpoint == "static":
        return None
    if not is_admin_host():
        g.blockpage = True
        return current_app.view_functions["blockpage.page"]()
    https_url = admin_https_url()
    if https_url:
        return redirect(https_url, 308)
    db = app_state.db()
    g.session = load_session(db)
    g.actor = "web UI"
    endpoint = request.endpoint or ""
    setup_done = app_state.admin_exists(db)
    if endpoint == "auth.setup" and not setup_done:
        if request.method not in SAFE_METHODS:
            check_csrf(request.cookies.get(login_cookie_name()))
        return None
    if not setup_done:
        if request.path.startswith("/api/"):
            abort(401)
        return redirect(url_for("auth.setup"))
    if endpoint == "auth.login":
        if request.method not in SAFE_METHODS:
            # A logged-in page carries the session's token; the login form the cookie's.
            check_csrf(g.session.csrf_token if g.session is not None else request.cookies.get(login_cookie_name()))
        return None
    if endpoint in PUBLIC_DOWNLOADS and request.method in SAFE_METHODS:
        return None
    if g.session is None:
        if request.path.startswith("/api/"):
            if bearer_token(db):
                return None  # token clients send no cookies: no CSRF to fear
            abort(401)
        # full_path ends in "?" under Werkzeug 2.2 (Debian 12) even without a query string.
        back = (request.full_path if request.query_string else request.path) if request.method == "GET" else "/"
        return redirect(url_for("auth.login", next=back),
                        303 if request.method not in SAFE_METHODS else 302)
    if request.method not in SAFE_METHODS:
        check_csrf(g.session.csrf_token)
    return None


def add_headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Cache-Control"] = response.headers.get("Cache-Control", "no-store")
    response.headers.pop("Server", None)
    if request.is_secure and not g.get("blockpage") and request.endpoint != "static" and is_admin_host():
        response.headers["Strict-Transport-Security"] = HSTS      # admin names only, never a blocked site
    token = g.get("login_csrf")
    if token is not None and g.get("session") is None:
        response.set_cookie(login_cookie_name(), token, httponly=True, samesite="Strict",
                            secure=request.is_secure, path="/")
    return response
