"""The daemon's status rows (`daemon_status`): each worker writes its own every few seconds; the
dashboard, the API and the parents' alerts read them. One module owns the table's columns, so
readers see named fields, never positions, and agree on when a row is too old to count.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from filterd.store.state import transaction

STALE_S = 30.0        # no row updated since: that worker (or the whole daemon) is not running
HEALTH_KEPT_H = 8 * 24    # hours of daemon_health kept

COLUMNS = ("pid", "worker", "started", "updated", "config_mtime", "last_reload", "last_error", "log_dropped",
           "upstreams", "upstreams_failing", "log_written", "log_dropped_queue_full", "log_write_failures",
           "log_disk_full", "log_last_error", "log_last_error_at", "db_reopened", "clock_doubtful",
           "retention_skipped", "rate_limited", "answers_scrubbed")
# The counters also summed per hour in daemon_health: what went wrong lately, whoever counted it.
HEALTH_COUNTERS = ("log_written", "log_dropped", "log_dropped_queue_full", "log_write_failures", "log_disk_full",
                   "db_reopened", "retention_skipped", "rate_limited", "answers_scrubbed")


@dataclass(frozen=True)
class WorkerStatus:
    pid: int
    worker: int
    started: float
    updated: float
    config_mtime: float | None
    last_reload: float | None
    last_error: str | None
    log_dropped: int                  # every query-log event lost, whatever the cause
    upstreams: int
    upstreams_failing: int
    log_written: int = 0
    log_dropped_queue_full: int = 0
    log_write_failures: int = 0       # failed log writes, and status rows that could not be written
    log_disk_full: int = 0
    log_last_error: str | None = None     # None once writing works again
    log_last_error_at: float | None = None
    db_reopened: int = 0              # times the state DB was found deleted and made again
    clock_doubtful: int = 0           # 1 while the clock reads before filterd was written
    retention_skipped: int = 0
    rate_limited: int = 0             # queries turned away by the rate limit (kept across reloads)
    answers_scrubbed: int = 0         # upstream answers cleaned of records not about their question

    @property
    def upstreams_down(self) -> bool:
        """Every upstream keeps failing (several failures in a row with no success since)."""
        return bool(self.upstreams) and self.upstreams_failing >= self.upstreams


def write(db: sqlite3.Connection, status: WorkerStatus, workers: int | None = None,
          previous: WorkerStatus | None = None) -> None:
    """Insert or refresh this worker's row (keyed by its pid). The row of a worker it replaced
    (killed, restarted) goes, and so do rows of workers beyond the `workers` it was started with:
    a dead worker's row never stands beside the live one.

    What the counters grew by since `previous` (the last row this worker wrote; None: since it
    started) is added to the hour of `status.updated` in daemon_health, in the same transaction:
    a write that fails (a full disk) leaves the growth to the next one that works."""
    names = ", ".join(COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("pid", "worker", "started"))
    grown = [max(0, getattr(status, c) - (getattr(previous, c) if previous else 0)) for c in HEALTH_COUNTERS]
    hour = int(status.updated // 3600)
    with transaction(db):
        if any(grown):
            db.execute(f"INSERT INTO daemon_health (hour, {', '.join(HEALTH_COUNTERS)})"  # nosec B608
                       f" VALUES (?, {', '.join('?' * len(HEALTH_COUNTERS))}) ON CONFLICT (hour) DO UPDATE SET "
                       + ", ".join(f"{c} = {c} + excluded.{c}" for c in HEALTH_COUNTERS), (hour, *grown))
            db.execute("DELETE FROM daemon_health WHERE hour < ?", (hour - HEALTH_KEPT_H,))
        db.execute("DELETE FROM daemon_status WHERE pid != ? AND (worker = ? OR worker >= ?)",
                   (status.pid, status.worker, workers if workers is not None else 1 << 30))
        db.execute(f"INSERT INTO daemon_status ({names}) VALUES ({', '.join('?' * len(COLUMNS))})"  # nosec B608
                   f" ON CONFLICT (pid) DO UPDATE SET {updates}",
                   tuple(getattr(status, c) for c in COLUMNS))


def remove(db: sqlite3.Connection, pid: int) -> None:
    """A worker that stops cleanly takes its row with it."""
    db.execute("DELETE FROM daemon_status WHERE pid = ?", (pid,))


def read_all(db: sqlite3.Connection) -> list[WorkerStatus]:
    """Every row, the most recently updated first."""
    rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM daemon_status ORDER BY updated DESC").fetchall()  # nosec B608
    return [WorkerStatus(*row) for row in rows]


def alive(rows: list[WorkerStatus], now: float | None = None) -> list[WorkerStatus]:
    """The rows of workers that reported within STALE_S."""
    now = time.time() if now is None else now
    return [r for r in rows if now - r.updated < STALE_S]


def health_since(db: sqlite3.Connection, since: float) -> dict[str, int]:
    """Each counter summed over the hours from the one holding `since` on (every worker's)."""
    row = db.execute(f"SELECT {', '.join(f'coalesce(sum({c}), 0)' for c in HEALTH_COUNTERS)}"  # nosec B608
                     " FROM daemon_health WHERE hour >= ?", (int(since // 3600),)).fetchone()
    return dict(zip(HEALTH_COUNTERS, row))
