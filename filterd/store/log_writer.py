"""The query log's writing side: the hot path appends a tuple, a thread batches it into SQLite.

DNS is never slowed by the log: `record` is a list append (or a counted drop when the queue
is full); the writer thread swaps the list out once a second (sooner when it fills) and writes
the batch in one transaction — rows, hourly rollups per device × category, and the clients
seen. A `kill -9` loses at most the batch being gathered: WAL mode keeps every committed
transaction. Worker 0 also enforces retention (`log.retention_days`, `log.rollup_days`).
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path

from filterd.store import state
from filterd.dns.wire import name_from_question
from filterd.rules.clock import CLOCK_FLOOR   # no clock reading earlier is right (a Pi booted at 1970)
from filterd.rules.log_settings import LogConfig

log = logging.getLogger("filterd.querylog")

FLUSH_INTERVAL_S = 1.0
MAX_BATCH = 5_000         # events per transaction: bounds the writer's memory and its GIL slices
RETENTION_INTERVAL_S = 3600.0
DELETE_CHUNK = 20_000
CLOCK_JUMP_S = 86_400.0   # a wall-clock step bigger than this between two passes is doubted


class RetentionClock:
    """Whether a retention pass may trust the wall clock, and what "now" it should delete by.

    Retention deletes what is older than `retention_days`: on a clock that jumped a year
    forward (a bad NTP answer, a mistyped `date`) that is the whole log. So a pass is skipped
    while the clock reads before CLOCK_FLOOR, and when the wall clock moved more than a day
    further than the monotonic clock since the last pass. A forward jump is also remembered:
    later passes age the rows by the clock they were written with (now minus the jump), so
    what the jump made look old is kept — a real jump (a Pi whose clock NTP set forward after
    a week unplugged) only keeps rows that much longer. Pure: both clocks are passed in.
    """

    def __init__(self, floor: float = CLOCK_FLOOR, jump_s: float = CLOCK_JUMP_S):
        self.floor = floor
        self.jump_s = jump_s
        self.last: tuple[float, float] | None = None   # (wall, monotonic) at the last pass
        self.skew = 0.0

    def check(self, wall: float, monotonic: float) -> tuple[float | None, str | None]:
        """(the "now" to delete by, None) or (None, why the clock is doubted)."""
        last, self.last = self.last, (wall, monotonic)
        if wall < self.floor:
            return None, f"the clock reads {time.strftime('%Y-%m-%d', time.gmtime(wall))}, before filterd existed"
        if last is not None:
            jump = (wall - last[0]) - (monotonic - last[1])
            if abs(jump) > self.jump_s:
                # A clock set from before the floor (a Pi booted at 1970, then NTP) is no skew to
                # age rows by: its rows are marked doubtful and aged by their place in the log.
                if jump > 0 and last[0] >= self.floor:
                    self.skew += jump
                return None, f"the clock jumped {jump / 86400:+.1f} days since the last pass"
        return wall - self.skew, None


class CpuBudget:
    """Keeps the writer off a saturated DNS thread: a flood is answered, not logged.

    After each flush the writer asks how long to rest. While the DNS thread and the writer
    together use less than `busy` of a core there is no rest: at a house's load every query
    is logged. Past it (a flood, or a Pi's one busy core) the writer takes at most `share` of
    the time; the queue then fills and the excess is counted as dropped.
    """

    def __init__(self, dns_cpu=None, share: float = 0.05, busy: float = 0.85, clock=time.monotonic):
        self.dns_cpu = dns_cpu or _thread_cpu_reader(threading.main_thread())
        self.share = share
        self.busy = busy
        self.clock = clock
        self.last_wall = clock()
        self.last_dns = self.dns_cpu()
        self.own_since = 0.0

    def rest_after(self, own_cpu_s: float) -> float:
        """Seconds to rest after a flush that took `own_cpu_s` of the writer's CPU."""
        now, dns = self.clock(), self.dns_cpu()
        elapsed = now - self.last_wall
        self.own_since += own_cpu_s
        if elapsed < 0.2:   # too short a window to judge: decide at the next flush
            return 0.0
        load = (dns - self.last_dns + self.own_since) / elapsed
        self.last_wall, self.last_dns, self.own_since = now, dns, 0.0
        if load < self.busy:
            return 0.0
        return min(own_cpu_s * (1 / self.share - 1), 5.0)


def _thread_cpu_reader(thread: threading.Thread):
    """CPU seconds used so far by `thread` (Linux: its CPU clock); 0 where unsupported."""
    try:
        clock_id = time.pthread_getcpuclockid(thread.ident)
        time.clock_gettime(clock_id)
    except (AttributeError, OSError, TypeError):
        return lambda: 0.0
    return lambda: time.clock_gettime(clock_id)


class QueryLog:
    """One worker's log queue and its writer thread."""

    def __init__(self, db_file: Path, settings: LogConfig, retention: bool = False, clock=time.time,
                 monotonic=time.monotonic):
        self.db_file = db_file
        self.settings = settings
        self.retention = retention
        self.clock = clock
        self.monotonic = monotonic
        self.retention_clock = RetentionClock()
        self.pending: list[tuple] = []
        self.limit = settings.queue_size
        self.wake_at = min(5_000, max(1, settings.queue_size // 2))   # flush early when this full
        # What the dashboard shows (daemon_status): every event lost is counted somewhere.
        self.dropped = 0                # all events lost: the queue was full, or a write failed
        self.dropped_queue_full = 0
        self.write_failures = 0         # transactions that failed (their events are in `dropped`)
        self.disk_full = 0              # … of which because the disk (or its quota) was full
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.retention_skipped = 0      # passes skipped on a doubted clock
        self.reopened = 0               # times the DB file was found deleted and opened anew
        self.written = 0
        self.neighbours: dict[str, str] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_retention = 0.0

    def configure(self, settings: LogConfig) -> None:
        """A reloaded config's log settings (mode and retention are read at each use)."""
        self.settings = settings
        self.limit = settings.queue_size
        self.wake_at = min(5_000, max(1, settings.queue_size // 2))

    # ------------------------------------------------ hot path

    def record(self, event: tuple) -> None:
        """Queue one answered query: (ts, client, device, profile, question key, qtype,
        Decision, rcode, latency_ms, mode). Never blocks: a full queue counts a drop."""
        pending = self.pending
        if len(pending) < self.limit:
            pending.append(event)
            if len(pending) == self.wake_at:
                self._wake.set()
        else:
            self.dropped += 1
            self.dropped_queue_full += 1

    # ------------------------------------------------ writer thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="querylog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.5)

    def _run(self) -> None:
        db = state.Reopening(self.db_file)
        budget = CpuBudget()
        try:
            while not self._stop.is_set():
                self._wake.wait(FLUSH_INTERVAL_S)
                self._wake.clear()
                self._follow_the_file(db)
                conn = db.conn
                while True:
                    started = time.thread_time()
                    self.flush(conn)
                    rest = budget.rest_after(time.thread_time() - started)
                    if rest:
                        self._stop.wait(rest)
                    if len(self.pending) < MAX_BATCH or self._stop.is_set():
                        break
                if self.retention and self.clock() - self._last_retention >= RETENTION_INTERVAL_S:
                    self.enforce_retention(conn)
            while self.pending and self.flush(db.conn):
                pass
        finally:
            db.close()

    def _follow_the_file(self, db: state.Reopening) -> None:
        """A state DB deleted (or replaced) under the daemon: write into the new file."""
        try:
            if db.check():
                self.reopened += 1
                log.debug("query log: %s was deleted or replaced; writing into a new one", self.db_file)
        except state.StateError as exc:
            self._failed(f"cannot reopen {self.db_file}: {exc}", exc)

    def flush(self, conn) -> int:
        """Write up to MAX_BATCH queued events in one transaction; returns the rows written."""
        pending = self.pending
        batch = pending[:MAX_BATCH]
        # Only this thread removes from the front; the DNS thread only appends at the end.
        del pending[:len(batch)]
        if not batch:
            return 0
        rows, rollups, seen, names = rows_from_events(batch, self.neighbours)
        # One statement per table over a JSON array: executemany would release and retake the
        # GIL for every row, and with the DNS thread busy each retake waits out a switch interval.
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO queries (ts, device, client, name, qtype, action, rule, reason, category, rcode,"
                " latency_ms, profile, clock_doubtful) SELECT value->>0, value->>1, value->>2, value->>3,"
                " value->>4, value->>5, value->>6, value->>7, value->>8, value->>9, value->>10, value->>11,"
                " value->>12 FROM json_each(?)",
                (json.dumps(rows),))
            conn.execute(
                "INSERT INTO rollups (hour, device, category, queries, blocked) SELECT value->>0, value->>1,"
                " value->>2, value->>3, value->>4 FROM json_each(?) WHERE true ON CONFLICT (hour, device, category)"
                " DO UPDATE SET queries = queries + excluded.queries, blocked = blocked + excluded.blocked",
                (json.dumps([(hour, device, category, counts[0], counts[1])
                             for (hour, device, category), counts in rollups.items()]),))
            conn.execute(
                "INSERT INTO name_rollups (hour, device, blocked, name, queries) SELECT value->>0, value->>1,"
                " value->>2, value->>3, value->>4 FROM json_each(?) WHERE true"
                " ON CONFLICT (blocked, hour, device, name) DO UPDATE SET queries = queries + excluded.queries",
                (json.dumps([(hour, device, blocked, name, count)
                             for (hour, device, blocked, name), count in names.items()]),))
            conn.execute(
                "INSERT INTO clients_seen (client, mac, device, first_seen, last_seen, queries) SELECT value->>0,"
                " value->>1, value->>2, value->>3, value->>4, value->>5 FROM json_each(?) WHERE true"
                " ON CONFLICT (client) DO UPDATE SET mac = coalesce(excluded.mac, mac), device = excluded.device,"
                " last_seen = max(last_seen, excluded.last_seen), queries = queries + excluded.queries",
                (json.dumps([(client, mac, device, first, last, count)
                             for client, (mac, device, first, last, count) in seen.items()]),))
            conn.execute("COMMIT")
        except Exception as exc:  # disk full, DB locked for too long: count, keep serving
            try:
                conn.execute("ROLLBACK")
            except Exception:
                pass
            self.dropped += len(batch)
            self._failed(f"could not write {len(batch)} events: {exc}", exc)
            return 0
        if self.last_error is not None and self.write_failures:
            log.warning("query log: writing again (%d events lost meanwhile)", self.dropped)
            self.last_error = None
        self.written += len(rows)
        return len(rows)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Count a failed write; warn at the first of a run of them, not every second."""
        self.write_failures += 1
        if is_disk_full(exc):
            self.disk_full += 1
        if self.last_error is None:
            log.warning("query log: %s", what)
        else:
            log.debug("query log: %s", what)
        self.last_error = what
        self.last_error_at = self.clock()

    def enforce_retention(self, conn) -> None:
        """Delete rows past `retention_days` and rollups past `rollup_days`, in small chunks;
        nothing at all on a clock there is reason to doubt (RetentionClock)."""
        wall = self.clock()
        self._last_retention = wall
        now, doubt = self.retention_clock.check(wall, self.monotonic())
        if now is None:
            self.retention_skipped += 1
            log.warning("query log: retention skipped, nothing deleted: %s", doubt)
            return
        cutoff = now - self.settings.retention_days * 86400
        hour_cutoff = int((now - self.settings.rollup_days * 86400) // 3600)
        try:
            # Rows logged on a doubted clock are aged by their place in the log instead (ids
            # grow in writing order): logged before a row past retention, they are older still.
            newest_expired = conn.execute("SELECT id FROM queries WHERE ts < ? AND clock_doubtful = 0"
                                          " ORDER BY ts DESC LIMIT 1", (cutoff,)).fetchone()
            if newest_expired:
                conn.execute("DELETE FROM queries WHERE clock_doubtful = 1 AND id < ?", newest_expired)
            while True:
                deleted = conn.execute(
                    "DELETE FROM queries WHERE id IN (SELECT id FROM queries WHERE ts < ? AND clock_doubtful = 0"
                    " LIMIT ?)", (cutoff, DELETE_CHUNK)).rowcount
                if deleted < DELETE_CHUNK:
                    break
            conn.execute("DELETE FROM rollups WHERE hour < ?", (hour_cutoff,))
            conn.execute("DELETE FROM name_rollups WHERE blocked IN (0, 1) AND hour < ?", (int(cutoff // 3600),))
            conn.execute("DELETE FROM overrides WHERE (ended IS NOT NULL AND ended < ?)"
                         " OR (until IS NOT NULL AND until < ?)", (cutoff, cutoff))
            conn.execute("PRAGMA optimize")   # keeps the planner's statistics fresh as the log grows
        except Exception as exc:
            log.warning("query log: retention failed: %s", exc)


def rows_from_events(events: list[tuple], neighbours: dict[str, str]):
    """Turn queued events into query rows, rollup increments and per-client activity.

    Names are decoded here, off the hot path. Anonymous mode keeps the counts but not the
    name; the protected category is logged as its category only, never the name.
    """
    rows = []
    rollups: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    names: dict[tuple, int] = defaultdict(int)
    seen: dict[str, list] = {}
    for ts, client, device, profile, key, qtype, decision, rcode, latency, mode in events:
        if mode == "off":
            continue
        blocked = decision.action in ("block", "nxdomain")
        name = None if mode == "anonymous" or decision.rule == "csam" else name_from_question(key)
        reason = decision.reason if name is not None or decision.rule == "csam" else decision.rule
        rows.append((ts, device, client, name, qtype, decision.action, decision.rule, reason,
                     decision.category, rcode, latency, profile, int(ts < CLOCK_FLOOR)))
        hour = int(ts // 3600)
        counts = rollups[(hour, device or client, decision.category or "")]
        counts[0] += 1
        counts[1] += blocked
        if name is not None and decision.action != "local":   # the filter's own names are no "top site"
            names[(hour, device or client, int(blocked), name)] += 1
        entry = seen.get(client)
        if entry is None:
            seen[client] = [neighbours.get(client), device, ts, ts, 1]
        else:
            entry[3] = ts
            entry[4] += 1
    return rows, rollups, seen, names


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL: the disk (or the user's quota) has no room for the write."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_FULL
    return "full" in str(exc).lower()
