"""The query log's reading side, for the web UI, the API and `filterd stats`.

Plain functions over a SQLite connection; every one is bounded by a time range and a limit so
a page stays fast with months of history (charts read the hourly rollups, not the rows).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

MAX_PAGE = 500


@dataclass(frozen=True)
class QueryRow:
    id: int
    ts: float
    device: str | None
    client: str
    name: str | None
    qtype: int
    action: str
    rule: str | None
    reason: str | None
    category: str | None
    rcode: int | None
    latency_ms: float | None
    profile: str | None


@dataclass(frozen=True)
class QueryFilter:
    device: str | None = None        # a device name, or a client IP for unknown devices
    action: str | None = None        # allow | block | rewrite | local | nxdomain; "blocked" = block+nxdomain
    category: str | None = None
    text: str | None = None          # substring of the name
    since: float | None = None
    until: float | None = None
    rules: tuple[str, ...] | None = None   # the deciding rules (policy.Decision.rule), e.g. ("schedule",)


TEXT_SCAN_ROWS = 500_000     # rows one page of a text search reads at most (~0.1 s here)


def text_scan_floor(conn: sqlite3.Connection, filters: QueryFilter, before_id: int | None = None) -> int | None:
    """For a text search, the lowest id one page reads, or None when the whole range is small.

    `name LIKE '%…%'` has no index: a search that matches nothing would read a month of the log
    (10M rows, seconds on a Pi). A page reads the newest TEXT_SCAN_ROWS below `before_id`, and
    the page offers to search further back from the floor."""
    if not filters.text:
        return None
    top = before_id if before_id is not None else \
        conn.execute("SELECT coalesce(max(id), 0) + 1 FROM queries").fetchone()[0]
    floor = top - TEXT_SCAN_ROWS
    low = _first_id_since(conn, filters.since) if filters.since is not None else 0
    return floor if floor > low else None


def recent_queries(conn: sqlite3.Connection, filters: QueryFilter = QueryFilter(), limit: int = 50,
                   before_id: int | None = None, floor: int | None = None) -> list[QueryRow]:
    """Newest first; page on with `before_id` = the last row's id (stable while rows arrive).

    Rows are appended in time order, so a time range becomes an id range (two index probes)
    and every filter walks an index newest first, stopping after `limit` rows. `floor` (from
    text_scan_floor) bounds how far back one page reads.
    """
    where, args = [], []
    low = _first_id_since(conn, filters.since) if filters.since is not None else None
    if floor is not None:
        low = floor if low is None else max(low, floor)
    high = _first_id_since(conn, filters.until) if filters.until is not None else None
    if before_id is not None:
        high = before_id if high is None else min(high, before_id)
    if low is not None:
        where.append("id >= ?")
        args.append(low)
    if high is not None:
        where.append("id < ?")
        args.append(high)
    if filters.action == "blocked":
        where.append("action IN ('block', 'nxdomain')")
    elif filters.action:
        where.append("action = ?")
        args.append(filters.action)
    if filters.category:
        where.append("category = ?")
        args.append(filters.category)
    if filters.rules:
        where.append("rule IN (" + ", ".join("?" * len(filters.rules)) + ")")
        args.extend(filters.rules)
    if filters.text:
        where.append("name LIKE ? ESCAPE '\\'")
        args.append("%" + filters.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    limit = max(1, min(limit, MAX_PAGE))
    columns = "id, ts, device, client, name, qtype, action, rule, reason, category, rcode, latency_ms, profile"
    if filters.device:
        # Two index walks (a named device; an unnamed client by address) instead of one OR.
        # Fixed SQL fragments only; every value is a bound parameter.
        rest = "".join(" AND " + w for w in where)
        sql = (f"SELECT * FROM (SELECT {columns} FROM queries WHERE device = ?{rest} ORDER BY id DESC LIMIT ?)"
               f" UNION ALL SELECT * FROM (SELECT {columns} FROM queries WHERE device IS NULL AND client = ?{rest}"
               " ORDER BY id DESC LIMIT ?) ORDER BY id DESC LIMIT ?")  # nosec B608
        args = [filters.device, *args, limit, filters.device, *args, limit, limit]
    else:
        condition = " WHERE " + " AND ".join(where) if where else ""
        sql = f"SELECT {columns} FROM queries{condition} ORDER BY id DESC LIMIT ?"  # nosec B608
        args.append(limit)
    return [QueryRow(*row) for row in conn.execute(sql, args)]


def query_row(conn: sqlite3.Connection, row_id: int) -> QueryRow | None:
    """One logged query by its id (the log's "why?" explains that row)."""
    row = conn.execute("SELECT id, ts, device, client, name, qtype, action, rule, reason, category, rcode,"
                       " latency_ms, profile FROM queries WHERE id = ?", (row_id,)).fetchone()
    return QueryRow(*row) if row else None


def _first_id_since(conn: sqlite3.Connection, since: float) -> int:
    """The first row at or after `since` (rows are appended in time order), by the ts index."""
    row = conn.execute("SELECT id FROM queries WHERE ts >= ? ORDER BY ts LIMIT 1", (since,)).fetchone()
    if row is not None:
        return row[0]
    return conn.execute("SELECT coalesce(max(id), 0) + 1 FROM queries").fetchone()[0]


def top_domains(conn: sqlite3.Connection, since: float, blocked: bool, limit: int = 10,
                device: str | None = None) -> list[tuple[str, int]]:
    """The most queried names since `since` (whole hours), blocked or allowed ones, from the
    per-name hourly rollups: a day of a busy house is a few thousand rows, not 300,000."""
    sql = "SELECT name, sum(queries) AS n FROM name_rollups WHERE blocked = ? AND hour >= ?"
    args: list = [int(blocked), int(since // 3600)]
    if device:
        sql += " AND device = ?"
        args.append(device)
    sql += " GROUP BY name ORDER BY n DESC, name LIMIT ?"
    args.append(limit)
    return [(name, n) for name, n in conn.execute(sql, args)]


def activity_by_hour(conn: sqlite3.Connection, since: float, until: float | None = None,
                     device: str | None = None) -> list[tuple[int, str, int, int]]:
    """(hour epoch, device, queries, blocked) from the rollups: cheap for months of history."""
    sql = "SELECT hour * 3600, device, sum(queries), sum(blocked) FROM rollups WHERE hour >= ?"
    args: list = [int(since // 3600)]
    if until is not None:
        sql += " AND hour < ?"
        args.append(-int(-until // 3600))   # `until` is exclusive: up to the hour that contains it
    if device:
        sql += " AND device = ?"
        args.append(device)
    sql += " GROUP BY hour, device ORDER BY hour"
    return [tuple(row) for row in conn.execute(sql, args)]


def blocks_by_category(conn: sqlite3.Connection, since: float, device: str | None = None) -> list[tuple[str, int]]:
    sql = "SELECT category, sum(blocked) AS n FROM rollups WHERE hour >= ? AND category != ''"
    args: list = [int(since // 3600)]
    if device:
        sql += " AND device = ?"
        args.append(device)
    sql += " GROUP BY category HAVING n > 0 ORDER BY n DESC"
    return [(category, n) for category, n in conn.execute(sql, args)]


def totals(conn: sqlite3.Connection, since: float, device: str | None = None) -> tuple[int, int]:
    """(queries, blocked) since `since`, from the rollups."""
    sql = "SELECT coalesce(sum(queries), 0), coalesce(sum(blocked), 0) FROM rollups WHERE hour >= ?"
    args: list = [int(since // 3600)]
    if device:
        sql += " AND device = ?"
        args.append(device)
    return tuple(conn.execute(sql, args).fetchone())


@dataclass(frozen=True)
class SeenClient:
    client: str
    mac: str | None
    device: str | None
    hostname: str | None
    first_seen: float
    last_seen: float
    queries: int


def clients_seen(conn: sqlite3.Connection) -> list[SeenClient]:
    """Every address that asked: new, unnamed ones first, then the most recently active."""
    rows = conn.execute("SELECT client, mac, device, hostname, first_seen, last_seen, queries FROM clients_seen"
                        " ORDER BY device IS NOT NULL, last_seen DESC")
    return [SeenClient(*row) for row in rows]


def first_names(conn: sqlite3.Connection, client: str, since: float, scan: int = 300) -> list[str]:
    """The names an unnamed device asked for first, oldest first, without repeats: what helps a
    parent recognise it (time.apple.com, connectivitycheck.gstatic.com, roblox.com…). Reads at
    most `scan` of its rows, along the (device, ts) index."""
    rows = conn.execute("SELECT name FROM queries WHERE device IS NULL AND ts >= ? AND client = ? AND name IS NOT NULL"
                        " ORDER BY ts LIMIT ?", (since, client, scan))
    return list(dict.fromkeys(name for (name,) in rows))


def devices_active(conn: sqlite3.Connection, since: float) -> list[SeenClient]:
    return [c for c in clients_seen(conn) if c.last_seen >= since]


def queries_per_asker(db, since: float) -> dict[str, int]:
    """Queries since `since` per device name (or client address for unnamed devices)."""
    return {who: count for who, count in db.execute(
        "SELECT coalesce(device, client), count(*) FROM queries WHERE ts >= ? GROUP BY 1", (since,))}


def allowed_names_per_hour(db, device: str, since: float) -> list[tuple[int, str, int]]:
    """(hour index, name, queries) of a device's allowed names since `since`, from the hourly
    rollups (a busy tablet makes tens of thousands of queries a day: never the log itself)."""
    return db.execute("SELECT hour, name, queries FROM name_rollups WHERE blocked = 0 AND hour >= ? AND device = ?",
                      (int(since // 3600), device)).fetchall()


def time_of_row(db, row_id: int) -> float | None:
    """The time of the first logged query at or after `row_id` (how far back a search reached)."""
    found = db.execute("SELECT ts FROM queries WHERE id >= ? ORDER BY id LIMIT 1", (row_id,)).fetchone()
    return found[0] if found else None
