"""The filter's health in a parent's words: what the daemon's counters (store/status) say went
wrong lately — activity entries lost and why, a clock that is not set, a database made again, a
disk that is full — and nothing at all when all is well. `notes` is pure; `report` reads the
rows, the hourly counters and the disk, and hands both to the dashboard."""
from __future__ import annotations

import datetime
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from filterd.rules import clock
from filterd.store import status

WINDOW_S = 3600.0              # "lately": the hour holding now - WINDOW_S, and every hour since
DISK_FULL_BYTES = 2 * 2**20    # less free than this: SQLite cannot be trusted to write


@dataclass(frozen=True)
class Note:
    level: str    # "error" (something is lost now) or "warn"
    text: str


@dataclass(frozen=True)
class Health:
    since: float                  # the start of the hour the counters are summed from
    counters: dict[str, int]      # status.HEALTH_COUNTERS summed over every worker since `since`
    clock_doubtful: bool
    disk_free: int | None         # bytes free where the state DB lives; None: unknown
    last_error: str | None        # the log's write error while it goes on
    last_error_at: float | None
    notes: tuple[Note, ...]


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def notes(counters: dict[str, int], since_text: str, clock_doubtful: bool, clock_reads: str,
          disk_free: int | None, last_error: str | None, last_error_since: str | None) -> tuple[Note, ...]:
    """What a parent should read on the home page, most serious first; () when all is well.

    Rate-limited queries and cleaned upstream answers are the filter doing its job: they are
    counted on the status part only, never raised here."""
    found: list[Note] = []
    disk_full = disk_free is not None and disk_free < DISK_FULL_BYTES
    lost = counters.get("log_dropped", 0)
    if lost:
        if counters.get("log_disk_full", 0) or disk_full:
            why = "the disk is full. Filtering goes on; free some space on the filter's disk"
        elif counters.get("log_write_failures", 0):
            why = f"it could not write to its database ({last_error})" if last_error else \
                "it could not write to its database. Filtering goes on"
        elif counters.get("log_dropped_queue_full", 0):
            why = ("more queries came than it could write down (a device asking thousands of names, "
                   "or a busy disk). Filtering went on")
        else:
            why = "filtering went on"
        found.append(Note("error", f"The activity log lost {_count(lost, 'entry', 'entries')} since {since_text}: {why}."))
    elif disk_full:
        found.append(Note("error", f"The filter's disk is full ({_megabytes(disk_free)} free): the activity log "
                                   "cannot be written. Filtering goes on; free some space on the filter's disk."))
    if last_error and not lost and not disk_full:
        found.append(Note("error", f"The activity log cannot be written{f' since {last_error_since}' if last_error_since else ''}:"
                                   f" {last_error}. Filtering goes on."))
    if clock_doubtful:
        found.append(Note("warn", f"The filter's clock is not set (it reads {clock_reads}): schedules wait until it is, "
                                  "and old activity entries are kept. It sets itself once it reaches the internet."))
    reopened = counters.get("db_reopened", 0)
    if reopened:
        found.append(Note("warn", f"The filter's database file disappeared since {since_text} and was made again: "
                                  "pauses, allowed sites and activity from before then are gone."))
    return tuple(found)


def report(db, data_dir: Path, tz, now: float | None = None) -> Health:
    """The dashboard's health: the live workers' rows and the counters of the last hour or so."""
    now = time.time() if now is None else now
    alive = status.alive(status.read_all(db), now)
    since = (now - WINDOW_S) // 3600 * 3600
    counters = status.health_since(db, since)
    try:
        disk_free = shutil.disk_usage(data_dir).free
    except OSError:
        disk_free = None
    doubtful = any(r.clock_doubtful for r in alive) or not clock.plausible(now)
    failing = next((r for r in alive if r.log_last_error), None)

    def moment(ts: float, fmt: str = "%H:%M") -> str:
        return datetime.datetime.fromtimestamp(ts, tz).strftime(fmt)

    last_error_at = failing.log_last_error_at if failing else None
    return Health(since, counters, doubtful, disk_free, failing.log_last_error if failing else None, last_error_at,
                  notes(counters, moment(since), doubtful, moment(now, "%-d %b %Y"), disk_free,
                        failing.log_last_error if failing else None,
                        moment(last_error_at) if last_error_at else None))
