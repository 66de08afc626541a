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


def recent_queries(conn: sqlite3.Connection, filters: QueryFilter = QueryFilter(), limit: int = 50,
                   before_id: int | None = None) -> list[QueryRow]:
    """Newest first; page on with `before_id` = the last row's id (stable while rows arrive)."""
    where, args = [], []
    if filters.device:
        where.append("(device = ? OR (device IS NULL AND client = ?))")
        args += [filters.device, filters.device]
    if filters.action == "blocked":
        where.append("action IN ('block', 'nxdomain')")
    elif filters.action:
        where.append("action = ?")
        args.append(filters.action)
    if filters.category:
        where.append("category = ?")
        args.append(filters.category)
    if filters.text:
        where.append("name LIKE ? ESCAPE '\\'")
        args.append("%" + filters.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if filters.since is not None:
        where.append("ts >= ?")
        args.append(filters.since)
    if filters.until is not None:
        where.append("ts < ?")
        args.append(filters.until)
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    # Fixed SQL fragments only; every value is a bound parameter.
    sql = ("SELECT id, ts, device, client, name, qtype, action, rule, reason, category, rcode, latency_ms, profile"
           " FROM queries" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")  # nosec B608
    args.append(max(1, min(limit, MAX_PAGE)))
    return [QueryRow(*row) for row in conn.execute(sql, args)]


def _first_id_since(conn: sqlite3.Connection, since: float) -> int:
    """Rows are appended in time order, so an id bound replaces a ts range on the big table."""
    row = conn.execute("SELECT min(id) FROM queries WHERE ts >= ?", (since,)).fetchone()
    return row[0] if row[0] is not None else (conn.execute("SELECT coalesce(max(id), 0) + 1 FROM queries").fetchone()[0])


def top_domains(conn: sqlite3.Connection, since: float, blocked: bool, limit: int = 10,
                device: str | None = None) -> list[tuple[str, int]]:
    """The most queried names since `since`, blocked or allowed ones."""
    actions = "('block', 'nxdomain')" if blocked else "('allow', 'rewrite')"
    # `actions` is one of two constants; every value is a bound parameter.
    sql = f"SELECT name, count(*) AS n FROM queries WHERE action IN {actions} AND id >= ? AND name IS NOT NULL"  # nosec B608
    args: list = [_first_id_since(conn, since)]
    if device:
        sql += " AND (device = ? OR (device IS NULL AND client = ?))"
        args += [device, device]
    sql += " GROUP BY name ORDER BY n DESC LIMIT ?"
    args.append(limit)
    return [(name, n) for name, n in conn.execute(sql, args)]


def activity_by_hour(conn: sqlite3.Connection, since: float, until: float | None = None,
                     device: str | None = None) -> list[tuple[int, str, int, int]]:
    """(hour epoch, device, queries, blocked) from the rollups: cheap for months of history."""
    sql = "SELECT hour * 3600, device, sum(queries), sum(blocked) FROM rollups WHERE hour >= ?"
    args: list = [int(since // 3600)]
    if until is not None:
        sql += " AND hour < ?"
        args.append(int(until // 3600) + 1)
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


def devices_active(conn: sqlite3.Connection, since: float) -> list[SeenClient]:
    return [c for c in clients_seen(conn) if c.last_seen >= since]
