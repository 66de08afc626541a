"""Backup and restore: the config and the state that matters, as one file filterd fully controls.

The file is gzip-compressed JSON, never an archive with paths (nothing in it names a file to
write):

    {"format": "filterd-backup", "version": 1, "created": 1764080000.0, "schema_version": 4,
     "config": "<the YAML config, as text>",
     "tables": {"overrides": {"columns": [...], "rows": [[...], ...]}, ...}}

What a restore brings back: the config (comments and all), pauses / temporary allows / bonus
time (`overrides`), the devices seen (`clients_seen`), children's access requests, and the
audit trail (rows older than this filter's own trail are added before it; the trail since is
never erased, so a restore cannot hide what happened).

What it does not hold: the query log and its hourly counts (millions of rows; history starts
again), passwords, API tokens and sessions (a restore never revives an old password or a
revoked token, and the parent restoring stays logged in with the password in use now), login
throttling, notification outbox and marks, and the daemon's status.

`read_backup` parses strictly and validates everything — the config exactly as `filterd
check` does, and every row by inserting it into a scratch in-memory copy of the real schema
(column names, types, NOT NULL, CHECK constraints, keys) — before `apply_backup` replaces
anything: the rows in one transaction, the config by the atomic write (temp file, fsync,
rename, `.bak` kept) just before that transaction commits.
"""
from __future__ import annotations

import gzip
import json
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from filterd.store import state
from filterd.rules.config import ConfigError
from filterd.store.configfile import validate_text, write_atomically

FORMAT = "filterd-backup"
VERSION = 1
# The tables a backup carries, in the order they are written back.
TABLES = ("overrides", "clients_seen", "access_requests", "audit")
MAX_BACKUP_BYTES = 64 * 2**20        # decompressed: far above any real house, far below a gzip bomb
MAX_CONFIG_CHARS = 2 * 2**20
MAX_TEXT_CHARS = 10_000              # any one text value in a row
MAX_ROWS = 1_000_000                 # per table
_TYPES = {"INTEGER": (int,), "REAL": (int, float), "TEXT": (str,)}


class BackupError(ValueError):
    """A file that is not a usable filterd backup; the message says what is wrong in one line."""


@dataclass(frozen=True)
class Backup:
    created: float
    config_text: str
    tables: dict[str, list[tuple]]    # table → rows, in the columns of `columns(table)`

    def summary(self) -> str:
        counts = ", ".join(f"{len(rows)} {table.replace('_', ' ')}" for table, rows in self.tables.items())
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created))
        return f"backup of {when}: config and {counts}"


# ---------------------------------------------------------------- the schema, from state.py itself


def _scratch_db() -> sqlite3.Connection:
    """An empty in-memory DB with exactly the state DB's schema (its real migrations)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    state.migrate(conn)
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str, bool]]:
    """(name, declared type, NOT NULL) of each column, in table order."""
    return [(row[1], row[2].upper(), bool(row[3]))
            for row in conn.execute(f"PRAGMA table_info({table})")]  # nosec B608 - table from TABLES


def columns(table: str) -> list[str]:
    conn = _scratch_db()
    try:
        return [name for name, _, _ in _columns(conn, table)]
    finally:
        conn.close()


# ---------------------------------------------------------------- making one


def make_backup(config_text: str, db: sqlite3.Connection, now: float | None = None) -> bytes:
    """The backup file's bytes: the config text and TABLES read in one read transaction."""
    tables = {}
    db.execute("BEGIN")
    try:
        for table in TABLES:
            names = [name for name, _, _ in _columns(db, table)]
            rows = db.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY rowid").fetchall()  # nosec B608
            tables[table] = {"columns": names, "rows": [list(row) for row in rows]}
    finally:
        db.execute("COMMIT")
    document = {"format": FORMAT, "version": VERSION, "created": now if now is not None else time.time(),
                "schema_version": state.SCHEMA_VERSION, "config": config_text, "tables": tables}
    return gzip.compress(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 6)


# ---------------------------------------------------------------- reading and validating one


def _decompress(data: bytes) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data   # plain JSON is accepted too (a parent may have unpacked the file)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_BACKUP_BYTES + 1)
    except zlib.error as exc:
        raise BackupError(f"the file is damaged (gzip: {exc})") from None
    if len(out) > MAX_BACKUP_BYTES or inflater.unconsumed_tail:
        raise BackupError(f"the file unpacks to more than {MAX_BACKUP_BYTES // 2**20} MB: not a filterd backup")
    if not inflater.eof:
        raise BackupError("the file is cut short (incomplete gzip data)")
    return out


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise BackupError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def read_backup(data: bytes, config_path: Path, data_dir: Path | None = None) -> Backup:
    """Parse and validate a backup completely; raise BackupError (nothing touched) if anything
    in it is not exactly what a filterd backup holds. With `data_dir` (this filter's), a
    config that would move the state elsewhere is refused: the rows go into this one."""
    if len(data) > MAX_BACKUP_BYTES:
        raise BackupError("the file is too large to be a filterd backup")
    raw = _decompress(data)
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError("the file is not a filterd backup (not JSON: was it made by Settings → Backup?)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BackupError("the file is not a filterd backup (no \"format\": \"filterd-backup\")")
    expected = {"format", "version", "created", "schema_version", "config", "tables"}
    if set(document) != expected:
        extra, missing = sorted(set(document) - expected), sorted(expected - set(document))
        raise BackupError(f"unexpected backup contents (extra: {extra or 'none'}, missing: {missing or 'none'})")
    if document["version"] != VERSION or isinstance(document["version"], bool):
        raise BackupError(f"backup format version {document['version']!r} is not one this filterd reads ({VERSION})")
    schema = document["schema_version"]
    if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= state.SCHEMA_VERSION:
        raise BackupError(f"the backup comes from a newer filterd (state schema {schema!r}, this one has "
                          f"{state.SCHEMA_VERSION}): upgrade filterd first")
    created = document["created"]
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not 0 < created < 2**33:
        raise BackupError("the backup's creation time is not a time")
    config_text = document["config"]
    if not isinstance(config_text, str) or not config_text.strip() or len(config_text) > MAX_CONFIG_CHARS:
        raise BackupError("the backup holds no usable config text")
    try:
        restored = validate_text(config_text, Path(config_path))
    except ConfigError as exc:
        raise BackupError(f"the backup's config is refused, as `filterd check` would: {exc.problems[0]}") from None
    if data_dir is not None and Path(restored.data_dir).resolve() != Path(data_dir).resolve():
        raise BackupError(f"the backup's config keeps its data in {restored.data_dir}, this filter in {data_dir}: "
                          "set data_dir in the backup's config to match (it is plain JSON inside gzip)")
    tables = document["tables"]
    if not isinstance(tables, dict) or set(tables) != set(TABLES):
        raise BackupError(f"the backup must hold exactly the tables {', '.join(TABLES)}")
    return Backup(float(created), config_text, {table: _validated_rows(table, tables[table]) for table in TABLES})


def _validated_rows(table: str, content) -> list[tuple]:
    """The rows, each checked for the column types and then inserted into a scratch copy of
    the real schema, so NOT NULL, CHECK, UNIQUE and key constraints are SQLite's own."""
    if not isinstance(content, dict) or set(content) != {"columns", "rows"}:
        raise BackupError(f"{table}: expected columns and rows")
    scratch = _scratch_db()
    try:
        schema = _columns(scratch, table)
        names = [name for name, _, _ in schema]
        if content["columns"] != names:
            raise BackupError(f"{table}: the columns {content['columns']!r} are not this filterd's ({', '.join(names)})")
        rows = content["rows"]
        if not isinstance(rows, list) or len(rows) > MAX_ROWS:
            raise BackupError(f"{table}: rows must be a list of at most {MAX_ROWS:,}")
        out = []
        for number, row in enumerate(rows, 1):
            if not isinstance(row, list) or len(row) != len(schema):
                raise BackupError(f"{table} row {number}: expected {len(schema)} values")
            for (name, kind, not_null), value in zip(schema, row):
                if value is None:
                    if not_null:
                        raise BackupError(f"{table} row {number}: {name} must not be empty")
                    continue
                allowed = _TYPES.get(kind.split("(")[0], (int, float, str))
                if isinstance(value, bool) or not isinstance(value, allowed):
                    raise BackupError(f"{table} row {number}: {name} must be {kind.lower()}, not {type(value).__name__}")
                if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
                    raise BackupError(f"{table} row {number}: {name} is too long")
            out.append(tuple(row))
        placeholders = ", ".join("?" for _ in names)
        scratch.execute("BEGIN")
        try:
            for number, row in enumerate(out, 1):
                try:
                    scratch.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders})",  # nosec B608
                                    row)
                except sqlite3.IntegrityError as exc:
                    raise BackupError(f"{table} row {number}: refused by the schema ({exc})") from None
        finally:
            scratch.execute("ROLLBACK")
        return out
    finally:
        scratch.close()


# ---------------------------------------------------------------- restoring one


def apply_backup(backup: Backup, config_path: Path, db: sqlite3.Connection, actor: str,
                 now: float | None = None) -> None:
    """Replace the config and the backed-up tables; all rows in one transaction, the config
    written atomically just before it commits (a failed write rolls the rows back)."""
    now = now if now is not None else time.time()
    with state.transaction(db):
        first_audit = db.execute("SELECT ts, id FROM audit ORDER BY id LIMIT 1").fetchone()
        for table in TABLES:
            names = columns(table)
            rows = backup.tables[table]
            if table == "audit":
                # The trail since is kept; the backup's older entries go before it, with ids
                # below its first one (the trail is read in id order).
                ts, key = names.index("ts"), names.index("id")
                rows = sorted((row for row in rows if first_audit is None or row[ts] < first_audit[0]),
                              key=lambda row: row[ts])
                start = (first_audit[1] if first_audit else 1) - len(rows)
                rows = [tuple(start + i if n == key else value for n, value in enumerate(row))
                        for i, row in enumerate(rows)]
            else:
                db.execute(f"DELETE FROM {table}")  # nosec B608 - table from TABLES
            db.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES "  # nosec B608
                           f"({', '.join('?' for _ in names)})", rows)
        state.audit(db, actor, "restore", backup.summary(), now)
        write_atomically(Path(config_path), backup.config_text)
