"""The state DB (`filterd/store/state.py`): schema version, migrations, connections.

Every test uses a real SQLite file in a temporary folder; the concurrent-migration test starts
real processes that open the same fresh file at the same moment.
"""
from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import pytest

from filterd.store import state

TABLES = {"overrides", "queries", "rollups", "clients_seen", "daemon_status", "audit"}


def tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def user_version(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


# ---------------------------------------------------------------- a fresh DB


def test_a_fresh_db_gets_every_table_and_the_current_schema_version(tmp_path):
    path = state.db_path(tmp_path / "var")
    conn = state.connect(path)
    try:
        assert path == tmp_path / "var" / "state.db"
        assert path.exists()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
        assert TABLES <= tables(conn)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_opening_the_db_twice_keeps_its_data_and_version(tmp_path):
    path = tmp_path / "state.db"
    first = state.connect(path)
    state.audit(first, "parent", "pause", "tablet for 30m", now=1000.0)
    second = state.connect(path)   # while the first is still open, as daemon and web UI do
    try:
        assert second.execute("SELECT actor, action, detail, ts FROM audit").fetchall() == \
            [("parent", "pause", "tablet for 30m", 1000.0)]
        assert second.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    finally:
        first.close()
        second.close()
    third = state.connect(path)    # and again after both closed
    try:
        assert third.execute("SELECT count(*) FROM audit").fetchone()[0] == 1
    finally:
        third.close()


def test_migrate_on_a_current_db_is_a_no_op(tmp_path):
    conn = state.connect(tmp_path / "state.db")
    try:
        assert state.migrate(conn) == state.SCHEMA_VERSION
        assert not conn.in_transaction
    finally:
        conn.close()


def test_a_readonly_connection_reads_but_cannot_write(tmp_path):
    path = tmp_path / "state.db"
    state.connect(path).close()
    conn = state.connect(path, readonly=True)
    try:
        assert conn.execute("SELECT count(*) FROM queries").fetchone()[0] == 0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO audit (ts, actor, action) VALUES (1, 'a', 'b')")
    finally:
        conn.close()


# ---------------------------------------------------------------- versions this code does not know


def test_a_db_from_a_newer_filterd_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "state.db"
    state.connect(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {state.SCHEMA_VERSION + 1}")
    with pytest.raises(state.StateError) as caught:
        state.connect(path)
    message = str(caught.value)
    assert f"schema version {state.SCHEMA_VERSION + 1}" in message
    assert f"({state.SCHEMA_VERSION})" in message
    assert "upgrade filterd" in message
    assert user_version(path) == state.SCHEMA_VERSION + 1   # left as it was


def test_a_file_that_is_not_a_database_is_a_state_error_naming_the_file(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes\n" * 100)
    with pytest.raises(state.StateError, match="state.db"):
        state.connect(path)


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    state.connect(path).close()
    broken = "CREATE TABLE half_done (a INTEGER);\nCREATE TABLE broken (;\n"
    monkeypatch.setattr(state, "MIGRATIONS", state.MIGRATIONS + [broken])
    monkeypatch.setattr(state, "SCHEMA_VERSION", len(state.MIGRATIONS))
    with pytest.raises(state.StateError, match="syntax error"):
        state.connect(path)
    assert user_version(path) == len(state.MIGRATIONS) - 1
    with sqlite3.connect(path) as conn:
        assert "half_done" not in tables(conn)


def test_an_older_db_is_brought_up_to_date_keeping_its_rows(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    state.connect(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO audit (ts, actor, action) VALUES (1, 'parent', 'pause')")
    added = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);\n" \
            "INSERT INTO notes (text) SELECT action FROM audit;\n"
    monkeypatch.setattr(state, "MIGRATIONS", state.MIGRATIONS + [added])
    monkeypatch.setattr(state, "SCHEMA_VERSION", len(state.MIGRATIONS))
    conn = state.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
        assert conn.execute("SELECT text FROM notes").fetchall() == [("pause",)]
    finally:
        conn.close()


def test_statements_are_split_without_breaking_semicolons_in_strings():
    script = "CREATE TABLE a (x TEXT DEFAULT 'one;two');\n\nINSERT INTO a VALUES ('3;4');\n"
    assert state._statements(script) == ["CREATE TABLE a (x TEXT DEFAULT 'one;two');",
                                         "INSERT INTO a VALUES ('3;4');"]


# ---------------------------------------------------------------- processes opening at once


def test_connect_waits_for_another_writer_on_a_fresh_db(tmp_path):
    path = tmp_path / "state.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")             # another process, half-way through creating the file
    other.execute("CREATE TABLE being_set_up (a INTEGER)")
    finishes = threading.Timer(0.2, other.execute, ("COMMIT",))
    finishes.start()
    try:
        conn = state.connect(path)
        conn.close()
    finally:
        finishes.join()
        other.close()
    assert user_version(path) == state.SCHEMA_VERSION


def _connect_retrying_the_wal_switch(path):
    """state.connect, retried only on the WAL-switch lock error above (the xfail test covers it),
    so the test below checks the migration transaction itself."""
    for _ in range(100):
        try:
            return state.connect(path)
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc):
                raise
    return state.connect(path)


def _open_when_released(path, barrier, results):
    """A process that opens (and so migrates) the DB the moment every process is ready."""
    try:
        barrier.wait(timeout=30)
        conn = _connect_retrying_the_wal_switch(path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("INSERT INTO audit (ts, actor, action) VALUES (1, 'process', 'opened')")
        conn.close()
        results.put(("ok", version))
    except BaseException as exc:  # report anything to the test, which asserts on it
        results.put(("error", repr(exc)))


@pytest.mark.parametrize("round_number", range(3))
def test_processes_migrating_a_fresh_db_at_once_all_succeed(tmp_path, round_number):
    processes = 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    path = tmp_path / "state.db"
    started = [context.Process(target=_open_when_released, args=(path, barrier, results))
               for _ in range(processes)]
    for process in started:
        process.start()
    outcomes = [results.get(timeout=60) for _ in started]
    for process in started:
        process.join(timeout=30)
    assert outcomes == [("ok", state.SCHEMA_VERSION)] * processes
    conn = state.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == processes
        assert TABLES <= tables(conn)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_audit_records_who_changed_what(tmp_path):
    conn = state.connect(tmp_path / "state.db")
    try:
        state.audit(conn, "web", "allow", "youtube.com for tablet", now=1234.5)
        state.audit(conn, "cli", "resume", "tablet")
        rows = conn.execute("SELECT ts, actor, action, detail FROM audit ORDER BY id").fetchall()
        assert rows[0] == (1234.5, "web", "allow", "youtube.com for tablet")
        assert rows[1][1:] == ("cli", "resume", "tablet") and rows[1][0] > 1_600_000_000
    finally:
        conn.close()
