"""The state DB both processes share (`data_dir/state.db`): schema, migrations, connections.

SQLite in WAL mode: the daemon writes the query log and reads overrides, the web UI writes
overrides and reads everything, neither waits for the other to be up. The schema is versioned
with `PRAGMA user_version`; whichever process opens the file first applies the missing
migrations, inside one transaction, so a crash mid-way leaves the previous version intact.
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_MS = 5_000

# Each entry moves the schema one version up. Never edit a released entry: add a new one.
MIGRATIONS: list[str] = [
    # 1: overrides, the query log and its rollups, devices seen, daemon status
    """
    CREATE TABLE overrides (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('pause', 'allow', 'bonus')),
        subject_kind TEXT NOT NULL CHECK (subject_kind IN ('device', 'profile')),
        subject TEXT NOT NULL,
        value TEXT,
        created REAL NOT NULL,
        until REAL,
        ended REAL,
        source TEXT NOT NULL DEFAULT 'cli'
    );
    CREATE INDEX overrides_active ON overrides (ended, until);

    CREATE TABLE queries (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        device TEXT,
        client TEXT NOT NULL,
        name TEXT,
        qtype INTEGER NOT NULL,
        action TEXT NOT NULL,
        rule TEXT,
        reason TEXT,
        category TEXT,
        rcode INTEGER,
        latency_ms REAL,
        profile TEXT
    );
    CREATE INDEX queries_ts ON queries (ts);
    CREATE INDEX queries_device_ts ON queries (device, ts);
    CREATE INDEX queries_action_ts ON queries (action, ts);

    CREATE TABLE rollups (
        hour INTEGER NOT NULL,
        device TEXT NOT NULL,
        category TEXT NOT NULL,
        queries INTEGER NOT NULL,
        blocked INTEGER NOT NULL,
        PRIMARY KEY (hour, device, category)
    ) WITHOUT ROWID;

    CREATE TABLE clients_seen (
        client TEXT PRIMARY KEY,
        mac TEXT,
        device TEXT,
        hostname TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        queries INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE daemon_status (
        pid INTEGER PRIMARY KEY,
        worker INTEGER NOT NULL,
        started REAL NOT NULL,
        updated REAL NOT NULL,
        config_mtime REAL,
        last_reload REAL,
        last_error TEXT,
        log_dropped INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT
    );
    """,
    # 2: the web UI: the admin account, server-side sessions, login throttling, API tokens
    """
    CREATE TABLE admin (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        password_hash TEXT NOT NULL,
        created REAL NOT NULL,
        changed REAL NOT NULL
    );

    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        created REAL NOT NULL,
        last_seen REAL NOT NULL,
        csrf_token TEXT NOT NULL,
        peer TEXT,
        user_agent TEXT,
        flash TEXT
    );

    CREATE TABLE login_throttle (
        key TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        blocked_until REAL NOT NULL,
        last_failure REAL NOT NULL
    );

    CREATE TABLE login_failures (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        peer TEXT,
        user_agent TEXT
    );

    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        last_used REAL
    );
    """,
    # 3: indexes that return a device's or a decision's rows newest first without sorting
    # (every index ends with the rowid), and per-name hourly counts for "top sites".
    """
    DROP INDEX queries_device_ts;
    DROP INDEX queries_action_ts;
    CREATE INDEX queries_device ON queries (device);
    CREATE INDEX queries_action ON queries (action);
    CREATE INDEX queries_unnamed_client ON queries (client) WHERE device IS NULL;
    CREATE INDEX queries_category ON queries (category) WHERE category IS NOT NULL;

    CREATE TABLE name_rollups (
        blocked INTEGER NOT NULL,
        hour INTEGER NOT NULL,
        device TEXT NOT NULL,
        name TEXT NOT NULL,
        queries INTEGER NOT NULL,
        PRIMARY KEY (blocked, hour, device, name)
    ) WITHOUT ROWID;    -- "top sites since …" reads one contiguous range of the table
    """,
    # 4: children's access requests; notifications waiting to be sent (a restart loses none)
    # and the marks that keep an alert to once per window or once per device; how many upstreams
    # each worker has and how many keep failing (an outage is worth telling the parents).
    """
    CREATE TABLE access_requests (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        domain TEXT NOT NULL,
        reason TEXT NOT NULL,
        rule TEXT,
        unblocks TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        client TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        asks INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'approved', 'declined')),
        decided REAL,
        decided_by TEXT,
        until REAL,
        answer TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX access_requests_status ON access_requests (status, updated);
    CREATE INDEX access_requests_device ON access_requests (device, domain, updated);

    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        event TEXT NOT NULL,
        channel TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL,
        sent REAL,
        given_up REAL,
        last_error TEXT
    );
    CREATE INDEX notifications_due ON notifications (sent, given_up, next_try);

    CREATE TABLE notify_marks (
        key TEXT PRIMARY KEY,
        ts REAL NOT NULL
    ) WITHOUT ROWID;

    ALTER TABLE daemon_status ADD COLUMN upstreams INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN upstreams_failing INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: the child on the Wi-Fi (issue #15): an unnamed device's requests known by its MAC where
    # the ARP table has it (a new IP address does not reset its limits); API tokens with a scope
    # (read, family, admin) and an optional expiry.
    """
    ALTER TABLE access_requests ADD COLUMN mac TEXT;
    CREATE INDEX access_requests_unnamed ON access_requests (status, created) WHERE device = '';
    ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
    ALTER TABLE api_tokens ADD COLUMN expires REAL;
    """,
    # 6: daily limits: the minutes each device (or profile) used per limit and day, as a bitmap of
    # the day's minutes (workers merge theirs with OR, so none counts a minute twice), and the
    # minutes parents added for a day; the config's history (the last versions the web UI wrote)
    """
    CREATE TABLE limit_usage (
        day TEXT NOT NULL,
        subject_kind TEXT NOT NULL CHECK (subject_kind IN ('device', 'profile')),
        subject TEXT NOT NULL,
        name TEXT NOT NULL,
        minutes BLOB NOT NULL,
        used INTEGER NOT NULL,
        last_minute INTEGER NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (day, subject_kind, subject, name)
    ) WITHOUT ROWID;

    CREATE TABLE limit_extensions (
        id INTEGER PRIMARY KEY,
        day TEXT NOT NULL,
        subject_kind TEXT NOT NULL CHECK (subject_kind IN ('device', 'profile')),
        subject TEXT NOT NULL,
        name TEXT NOT NULL,
        minutes INTEGER NOT NULL,
        created REAL NOT NULL,
        source TEXT NOT NULL
    );
    CREATE INDEX limit_extensions_day ON limit_extensions (day, subject_kind, subject, name);

    CREATE TABLE config_versions (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        actor TEXT NOT NULL,
        what TEXT NOT NULL,
        changes TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL
    );
    """,
    # 7: the query log's health, per worker, for the dashboard (log_dropped stays the total lost);
    # queries over the rate limit and upstream records dropped as not about the question;
    # rows logged while the clock read before filterd was written are marked, not trusted
    """
    ALTER TABLE daemon_status ADD COLUMN log_written INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN log_dropped_queue_full INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN log_write_failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN log_disk_full INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN log_last_error TEXT;
    ALTER TABLE daemon_status ADD COLUMN log_last_error_at REAL;
    ALTER TABLE daemon_status ADD COLUMN db_reopened INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN clock_doubtful INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN retention_skipped INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN rate_limited INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daemon_status ADD COLUMN answers_scrubbed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE queries ADD COLUMN clock_doubtful INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX queries_clock_doubtful ON queries (id) WHERE clock_doubtful = 1;
    """,
    # 8: the same counters per hour, summed over every worker (each adds what it counted since
    # its last status row), so the dashboard can say what went wrong in the last hour, not since
    # a worker started days ago
    """
    CREATE TABLE daemon_health (
        hour INTEGER PRIMARY KEY,
        log_written INTEGER NOT NULL DEFAULT 0,
        log_dropped INTEGER NOT NULL DEFAULT 0,
        log_dropped_queue_full INTEGER NOT NULL DEFAULT 0,
        log_write_failures INTEGER NOT NULL DEFAULT 0,
        log_disk_full INTEGER NOT NULL DEFAULT 0,
        db_reopened INTEGER NOT NULL DEFAULT 0,
        retention_skipped INTEGER NOT NULL DEFAULT 0,
        rate_limited INTEGER NOT NULL DEFAULT 0,
        answers_scrubbed INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 9: temporary allows that keep schedules ("bedtime still applies"): kind allow_day. SQLite
    # cannot change a CHECK: the table is copied into a new one (ids kept)
    """
    CREATE TABLE overrides_new (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('pause', 'allow', 'allow_day', 'bonus')),
        subject_kind TEXT NOT NULL CHECK (subject_kind IN ('device', 'profile')),
        subject TEXT NOT NULL,
        value TEXT,
        created REAL NOT NULL,
        until REAL,
        ended REAL,
        source TEXT NOT NULL DEFAULT 'cli'
    );
    INSERT INTO overrides_new (id, kind, subject_kind, subject, value, created, until, ended, source)
        SELECT id, kind, subject_kind, subject, value, created, until, ended, source FROM overrides;
    DROP TABLE overrides;
    ALTER TABLE overrides_new RENAME TO overrides;
    CREATE INDEX overrides_active ON overrides (ended, until);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class StateError(Exception):
    """The state DB cannot be used (newer schema than this code knows, unreadable file)."""


def db_path(data_dir: Path) -> Path:
    return Path(data_dir) / "state.db"


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the DB file, None when it is gone: a connection's file was deleted
    or replaced when this no longer matches what it was when opened."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


class Reopening:
    """A writable connection that follows its file: when the state DB is deleted or replaced
    while the daemon runs (a parent's `rm`, a restore by hand), `check()` opens the new one
    (created and migrated) instead of writing on into an unlinked file forever."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.conn = connect(self.path)
        self.identity = file_identity(self.path)
        self.reopened = 0

    def check(self) -> bool:
        """True when the file had gone and a new connection was opened (raises StateError
        when it cannot be: the caller keeps the old one and tries again later)."""
        if file_identity(self.path) == self.identity and self.identity is not None:
            return False
        try:   # first, so this process is done with the old file's WAL before a new one exists
            self.conn.close()
        except sqlite3.Error:
            pass
        self.conn = connect(self.path)
        self.identity = file_identity(self.path)
        self.reopened += 1
        return True

    def close(self) -> None:
        self.conn.close()


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open the state DB (creating and migrating it when writable) with the shared settings."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                               isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    try:
        if not readonly:
            _switch_to_wal(conn)
            # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn)
        else:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise StateError(f"{path}: still locked by another process after {BUSY_TIMEOUT_MS / 1000:.0f} s") from None
        raise StateError(f"{path}: cannot be used as the state DB ({exc}); move it aside "
                         "(the daemon starts a new one) or restore a backup") from None
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """WAL mode; the switch does not wait on busy_timeout, so a fresh DB opened by several
    processes at once (workers, web UI) retries here instead of failing."""
    import time

    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this file has and the DB lacks; return the version reached."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StateError(f"state.db has schema version {version}, newer than this filterd "
                         f"({SCHEMA_VERSION}): upgrade filterd or restore a backup")
    if version == SCHEMA_VERSION:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
        for number in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


@contextmanager
def transaction(conn: sqlite3.Connection):
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK when anything goes wrong in between.

    Connections here are in autocommit mode; IMMEDIATE takes the write lock up front, so two
    processes never both read and then fail to write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return [s for s in out if s]


def audit(conn: sqlite3.Connection, actor: str, action: str, detail: str = "", now: float | None = None) -> None:
    """Record who changed what (the parents see this trail in the web UI)."""
    import time

    conn.execute("INSERT INTO audit (ts, actor, action, detail) VALUES (?, ?, ?, ?)",
                 (now if now is not None else time.time(), actor, action, detail))


def data_dir_problem(data_dir: Path) -> str | None:
    """Why the data directory cannot hold the state DB and the lists (None when it can): both
    processes check this at start and say it in one line instead of a traceback."""
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        connect(db_path(data_dir)).close()
    except StateError as exc:
        return str(exc)
    except (OSError, sqlite3.Error) as exc:
        return f"cannot use the data directory {data_dir}: {getattr(exc, 'strerror', None) or exc}"
    return None
