"""Helpers for the web UI tests: a temporary config and state DB, an app, logged-in clients.

Not a conftest: the web UI test modules import what they need from here. Everything is real:
a config file in a temporary folder (with comments, so edits can be checked to keep them), the
state DB in its data_dir, the Flask app from `create_app(…, testing=True)` and its test client.
"""
from __future__ import annotations

import re
import secrets
import sqlite3
import time
from functools import lru_cache
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from jinja2 import BytecodeCache

from filterd.store import state
from webui import create_app, security
from webui.passwords import hash_password

ADMIN_HOST = "127.0.0.1:8080"     # web.listen: an admin host name (any port)
BASE_URL = f"http://{ADMIN_HOST}"
PASSWORD = "correct horse battery"
PEER = "192.168.1.50"

XSS_PAYLOADS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')

CONFIG_TEXT = """\
# The house's rules (a parent's comments: they must survive edits made in the web UI).
timezone: UTC   # where we live

data_dir: {data_dir}

dns:
  listen: ["127.0.0.1:5353"]
  upstreams: ["udp://127.0.0.1:1"]   # never asked in these tests

# The web UI
web:
  listen: "127.0.0.1:8080"
  address: 192.168.1.2
  hostnames: [filter.home]

log:
  mode: full

profiles:
  # Emma and Noah
  kids:
    preset: child
    allow: [khanacademy.org]
    schedules:
      - {{name: bedtime, days: [sun, mon, tue, wed, thu], start: "21:00", end: "07:00", block: all}}
  adults:
    preset: adult

# Devices, by address
devices:
  - {{name: kids-tablet, ip: 192.168.1.23, profile: kids}}
  - {{name: dad-phone, ip: 192.168.1.24, profile: adults}}
default_profile: adults
"""


class MemoryBytecodeCache(BytecodeCache):
    """Compiled templates shared by the many apps of a test run (keyed by the template's source)."""

    def __init__(self):
        self.store: dict[str, bytes] = {}

    def load_bytecode(self, bucket):
        if bucket.key in self.store:
            bucket.bytecode_from_string(self.store[bucket.key])

    def dump_bytecode(self, bucket):
        self.store[bucket.key] = bucket.bytecode_to_string()


TEMPLATE_CACHE = MemoryBytecodeCache()


class AdminClient(FlaskClient):
    """Flask's test client, sending every request to `base_url` unless told otherwise (the
    default host, localhost, would be an admin name only by the loopback rule)."""

    base_url = BASE_URL

    def open(self, *args, **kwargs):
        if not args or isinstance(args[0], str):
            kwargs.setdefault("base_url", self.base_url)
        return super().open(*args, **kwargs)

    def _domain(self) -> str:
        from urllib.parse import urlsplit
        return urlsplit(self.base_url).hostname

    def get_cookie(self, key, domain=None, path="/"):
        domain = domain or self._domain()
        if hasattr(FlaskClient, "get_cookie"):      # Werkzeug >= 2.3
            return super().get_cookie(key, domain, path)
        for cookie in self.cookie_jar or ():        # Werkzeug 2.2 (Debian 12): an http.cookiejar
            if cookie.name == key and cookie.domain.lstrip(".") in (domain, domain + ".local") and cookie.path == path:
                return cookie
        return None

    def set_cookie(self, key, value="", *args, domain=None, **kwargs):
        domain = domain or self._domain()
        if hasattr(FlaskClient, "get_cookie"):      # Werkzeug >= 2.3
            return super().set_cookie(key, value, *args, domain=domain, **kwargs)
        return super().set_cookie(domain, key, value, *args, **kwargs)   # Werkzeug 2.2: the server name first


@lru_cache(maxsize=1)
def password_hash() -> str:
    """One real scrypt hash for the whole run (hashing costs ~50 ms a time)."""
    return hash_password(PASSWORD)


class Env:
    """A config file + data_dir in `folder`, and apps made from them."""

    def __init__(self, folder: Path, config_text: str | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.folder / "var"
        self.config_path = self.folder / "filterd.yaml"
        self.config_path.write_text(config_text or CONFIG_TEXT.format(data_dir=self.data_dir))
        self.app = self.new_app()

    def new_app(self):
        """A fresh app instance on the same files (as after a restart)."""
        app = create_app(self.config_path, testing=True)
        app.jinja_env.bytecode_cache = TEMPLATE_CACHE   # compile each template once per test run
        return app

    def db(self) -> sqlite3.Connection:
        return state.connect(state.db_path(self.data_dir))

    def query(self, sql: str, args=()) -> list[tuple]:
        conn = self.db()
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def execute(self, sql: str, args=()) -> None:
        conn = self.db()
        try:
            conn.execute(sql, args)
        finally:
            conn.close()

    def set_password(self) -> None:
        """The admin account, as after /setup (straight into the DB: quick)."""
        now = time.time()
        self.execute("INSERT OR REPLACE INTO admin (id, password_hash, created, changed) VALUES (1, ?, ?, ?)",
                     (password_hash(), now, now))

    def setup_code(self) -> str:
        """The one-time setup code, read from `<data_dir>/setup-code` as the installer does (the
        web UI makes the file at start and on the first visit of /setup)."""
        return (self.data_dir / "setup-code").read_text().strip()

    def client(self, app=None, peer: str = PEER, base_url: str = BASE_URL):
        """A test client talking to `base_url` (an admin host name) from the socket peer `peer`."""
        app = app or self.app
        app.test_client_class = AdminClient
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = peer
        client.base_url = base_url
        return client

    def logged_in(self, app=None, peer: str = PEER, through_login: bool = False):
        """A client with a session (password set when needed): a session row made directly, as
        the login form makes it (quick: no scrypt), or through the login form itself."""
        if not self.query("SELECT 1 FROM admin"):
            self.set_password()
        client = self.client(app, peer)
        if through_login:
            assert login(client).status_code == 302
            return client
        token, now = secrets.token_urlsafe(32), time.time()
        self.execute("INSERT INTO sessions (id_hash, created, last_seen, csrf_token, peer, user_agent)"
                     " VALUES (?, ?, ?, ?, ?, 'tests')", (security.token_hash(token), now, now,
                                                          secrets.token_urlsafe(32), peer))
        client.set_cookie("filterd_session", token)
        return client

    def config_text(self) -> str:
        return self.config_path.read_text()

    def audit(self) -> list[tuple[str, str, str]]:
        return self.query("SELECT actor, action, detail FROM audit ORDER BY id")


def csrf_from(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, "no csrf-token meta tag in the page"
    return match.group(1)


def page_csrf(client, path: str = "/settings") -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return csrf_from(response.get_data(as_text=True))


def version_from(html: str) -> str:
    match = re.search(r'name="version" value="([0-9a-f]+)"', html)
    assert match, "no version field in the page"
    return match.group(1)


def login(client, password: str = PASSWORD, next_path: str | None = None, headers=None):
    """GET /login (for the login form's CSRF token), then POST the password."""
    token = page_csrf(client, "/login")
    url = "/login" + (f"?next={next_path}" if next_path else "")
    return client.post(url, data={"csrf_token": token, "password": password}, headers=headers or {})


def session_cookie(client, name: str = "filterd_session"):
    return client.get_cookie(name)


def insert_query(env: Env, name: str, device: str | None = "kids-tablet", client: str = "192.168.1.23",
                 action: str = "block", category: str | None = "adult", ts: float | None = None) -> None:
    env.execute("INSERT INTO queries (ts, device, client, name, qtype, action, rule, reason, category, rcode,"
                " latency_ms, profile) VALUES (?, ?, ?, ?, 1, ?, 'category', 'test', ?, 0, 1.0, 'kids')",
                (ts or time.time(), device, client, name, action, category))


def cookie_headers(response, name: str) -> list[str]:
    """The Set-Cookie headers of a response for one cookie name, in order."""
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]


def last_cookie_value(response, name: str) -> str | None:
    """The value the browser keeps for `name` after this response (None: deleted or not set)."""
    headers = cookie_headers(response, name)
    if not headers:
        return None
    last = headers[-1]
    if "Expires=Thu, 01 Jan 1970" in last or "Max-Age=0" in last:
        return None
    return last.split(";", 1)[0].split("=", 1)[1]


def is_block_page(response) -> bool:
    body = response.get_data(as_text=True)
    return 'class="blockpage"' in body and 'name="csrf-token"' not in body


def location_path(response) -> str:
    from urllib.parse import urlsplit
    return urlsplit(response.headers.get("Location", "")).path


# ---------------------------------------------------------------- pytest fixtures (imported by the modules)


@pytest.fixture
def env(tmp_path) -> Env:
    """A config, a data_dir and an app; the admin password already set."""
    environment = Env(tmp_path)
    environment.set_password()
    return environment


@pytest.fixture
def fresh_env(tmp_path) -> Env:
    """First run: no password yet."""
    return Env(tmp_path)


@pytest.fixture
def admin(env):
    """A logged-in client."""
    return env.logged_in()
