"""The weekly summary of one child (one profile): the data, and its e-mail renderings.

The same data feeds the e-mail (sent by the notifier each week) and the web UI's
/summary/<profile> page. It covers the profile's named devices over seven local days: the
six days before the summary's day and that day up to the summary's time.

"Time online" is defined plainly: a 5-minute slot counts when at least one of the profile's
devices asked for at least one name in it, so it is an upper bound (apps chat in the
background) and two devices online at once count once.
"""
from __future__ import annotations

import html
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from filterd.family import limits
from filterd.store import log_reader

SLOT_S = 300
TOP_SITES = 10
TOP_BLOCKED = 5


def window(until: float, tz: ZoneInfo) -> tuple[float, list[date]]:
    """(start, the seven local dates): from local midnight six days before `until`'s date."""
    last = datetime.fromtimestamp(until, tz).date()
    first = last - timedelta(days=6)
    start = datetime(first.year, first.month, first.day, tzinfo=tz).timestamp()
    return start, [first + timedelta(days=i) for i in range(7)]


def profile_devices(config, profile: str) -> list[str]:
    return [d.name for d in config.rules.devices if d.profile == profile]


def weekly_summary(db, config, profile: str, until: float) -> dict:
    """The summary of `profile` for the seven local days ending at `until` (plain JSON data)."""
    tz = ZoneInfo(config.timezone)
    since, days = window(until, tz)
    devices = profile_devices(config, profile)
    slots_by_day = {day: 0 for day in days}
    for slot in online_slots(db, devices, since, until):
        day = datetime.fromtimestamp(slot * SLOT_S, tz).date()
        if day in slots_by_day:
            slots_by_day[day] += 1
    queries = blocked = 0
    for device in devices:
        for _hour, _device, count, blocked_count in log_reader.activity_by_hour(db, since, until, device):
            queries += count
            blocked += blocked_count
    categories = config.catalog.categories if config.catalog else {}
    by_category = [[categories[c].name if c in categories else c, n]
                   for c, n in blocked_by_category(db, devices, since, until)]
    requests = access_requests(db, devices, since, until)
    return {
        "profile": profile,
        "devices": devices,
        "timezone": config.timezone,
        "since": since,
        "until": until,
        "days": [{"date": day.isoformat(), "label": f"{day:%a} {day.day} {day:%b}",
                  "minutes": slots_by_day[day] * SLOT_S // 60} for day in days],
        "minutes_total": sum(slots_by_day.values()) * SLOT_S // 60,
        "queries": queries,
        "blocked": blocked,
        "top_sites": [list(row) for row in top_names(db, devices, since, until, blocked=False, limit=TOP_SITES)],
        "top_blocked": [list(row) for row in top_names(db, devices, since, until, blocked=True, limit=TOP_BLOCKED)],
        "blocked_by_category": by_category,
        "requests": requests,
        "requests_count": {status: sum(1 for r in requests if r["status"] == status)
                           for status in ("approved", "declined", "pending")},
        "limits": limits.week_of_profile(db, config, profile, [day.isoformat() for day in days]),
    }


def _marks(items: list) -> str:
    return ",".join("?" * len(items))


def first_id_since(db, ts: float) -> int:
    """Rows are appended in time order: a time bound becomes an id bound (one ts-index probe)."""
    row = db.execute("SELECT id FROM queries WHERE ts >= ? ORDER BY ts LIMIT 1", (ts,)).fetchone()
    if row is not None:
        return row[0]
    return db.execute("SELECT coalesce(max(id), 0) + 1 FROM queries").fetchone()[0]


def online_slots(db, devices: list[str], since: float, until: float) -> list[int]:
    """The 5-minute slots (epoch // 300) in which any of `devices` asked anything."""
    if not devices:
        return []
    low, high = first_id_since(db, since), first_id_since(db, until)
    rows = db.execute(
        f"SELECT DISTINCT CAST(ts / {SLOT_S} AS INTEGER) FROM queries WHERE device IN ({_marks(devices)})"  # nosec B608
        " AND id >= ? AND id < ?", (*devices, low, high))
    return sorted(row[0] for row in rows)


def top_names(db, devices: list[str], since: float, until: float, blocked: bool, limit: int) -> list[tuple[str, int]]:
    """The most asked names, from the per-name hourly rollups (whole hours)."""
    if not devices:
        return []
    rows = db.execute(
        "SELECT name, sum(queries) AS n FROM name_rollups WHERE blocked = ? AND hour >= ? AND hour < ?"
        f" AND device IN ({_marks(devices)}) GROUP BY name ORDER BY n DESC, name LIMIT ?",  # nosec B608
        (int(blocked), int(since // 3600), -int(-until // 3600), *devices, limit))
    return [(name, n) for name, n in rows]


def blocked_by_category(db, devices: list[str], since: float, until: float) -> list[tuple[str, int]]:
    if not devices:
        return []
    rows = db.execute(
        "SELECT category, sum(blocked) AS n FROM rollups WHERE hour >= ? AND hour < ? AND category != ''"
        f" AND device IN ({_marks(devices)}) GROUP BY category HAVING n > 0 ORDER BY n DESC, category",  # nosec B608
        (int(since // 3600), -int(-until // 3600), *devices))
    return [(category, n) for category, n in rows]


def access_requests(db, devices: list[str], since: float, until: float) -> list[dict]:
    if not devices:
        return []
    rows = db.execute(
        "SELECT id, device, domain, message, status, answer, created, decided, until, asks FROM access_requests"
        f" WHERE device IN ({_marks(devices)}) AND created >= ? AND created < ? ORDER BY created",  # nosec B608
        (*devices, since, until))
    keys = ("id", "device", "domain", "message", "status", "answer", "created", "decided", "until", "asks")
    return [dict(zip(keys, row)) for row in rows]


# ---------------------------------------------------------------- words


def duration(minutes: int) -> str:
    if not minutes:
        return "—"
    hours, rest = divmod(int(minutes), 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest:02d}" if rest else f"{hours} h"


def request_outcome(request: dict, tz: ZoneInfo) -> str:
    """What became of a request, in words: "approved until Tue 18:30", "declined: after homework"."""
    if request["status"] == "approved":
        if request.get("until"):
            return f"approved until {datetime.fromtimestamp(request['until'], tz):%a %H:%M}"
        return "approved for good"
    if request["status"] == "declined":
        return "declined" + (f": {request['answer']}" if request.get("answer") else "")
    return "not answered yet"


def period(summary: dict, tz: ZoneInfo) -> str:
    start = datetime.fromtimestamp(summary["since"], tz)
    end = datetime.fromtimestamp(summary["until"], tz)
    return f"{start:%a} {start.day} {start:%b} – {end:%a} {end.day} {end:%b} {end:%H:%M}"


def render_text(summary: dict, tz: ZoneInfo) -> str:
    """The plain-text version (e-mail alternative, ntfy, webhook `text`)."""
    lines = [f"{summary['profile']}: {period(summary, tz)}",
             f"Devices: {', '.join(summary['devices']) or 'none named'}", "",
             f"Time online (5-minute slots with activity): {duration(summary['minutes_total'])}"]
    lines += [f"  {day['label']}: {duration(day['minutes'])}" for day in summary["days"]]
    lines += ["", f"Queries: {summary['queries']}, blocked: {summary['blocked']}"]
    if summary["blocked_by_category"]:
        lines.append("Blocked by category: " + ", ".join(f"{c} {n}" for c, n in summary["blocked_by_category"]))
    if summary["top_sites"]:
        lines.append("Top sites: " + ", ".join(f"{name} ({n})" for name, n in summary["top_sites"]))
    if summary["top_blocked"]:
        lines.append("Most blocked: " + ", ".join(f"{name} ({n})" for name, n in summary["top_blocked"]))
    for limit in summary.get("limits", []):
        lines.append(f"Daily limit {limit['name']} (minutes used"
                     + (", all devices" if limit["per"] == "device" and len(summary["devices"]) > 1 else "") + "): "
                     + ", ".join(f"{_weekday(day['date'])} {day['used']}" + (f"/{day['allowed']}" if day["allowed"]
                                                                            is not None else "")
                                 for day in limit["days"]))
    counts = summary["requests_count"]
    lines.append(f"Requests: {len(summary['requests'])} ({counts['approved']} approved, "
                 f"{counts['declined']} declined, {counts['pending']} waiting)")
    for request in summary["requests"]:
        lines.append(f"  {request['device']} asked for {request['domain']}: {request_outcome(request, tz)}")
    return "\n".join(lines)


_TD = "padding:4px 8px;border-bottom:1px solid #d9dde3;text-align:left;vertical-align:top"
_H2 = "font-size:16px;margin:20px 0 6px"


def render_html(summary: dict, link: str, tz: ZoneInfo) -> str:
    """The HTML e-mail: tables and inline styles (what mail clients render), everything escaped."""
    e = _escape
    peak = max((day["minutes"] for day in summary["days"]), default=0) or 1
    out = ['<!doctype html><html><body style="margin:0;padding:16px;font:15px/1.5 system-ui,sans-serif;'
           'color:#1d2330;background:#f6f7f9"><div style="max-width:600px;margin:0 auto;background:#fff;'
           'border:1px solid #d9dde3;border-radius:12px;padding:16px">',
           f'<h1 style="font-size:20px;margin:0 0 4px">Weekly summary for {e(summary["profile"])}</h1>',
           f'<p style="color:#5b6473;margin:0">{e(period(summary, tz))} · devices: '
           f'{e(", ".join(summary["devices"]) or "none named")}</p>',
           f'<h2 style="{_H2}">Time online: {e(duration(summary["minutes_total"]))}</h2>',
           '<table style="border-collapse:collapse;width:100%">']
    for day in summary["days"]:
        width = round(100 * day["minutes"] / peak)
        out.append(f'<tr><td style="{_TD};width:110px">{e(day["label"])}</td><td style="{_TD}">'
                   f'<div style="background:#2453b8;height:10px;width:{width}%"></div></td>'
                   f'<td style="{_TD};width:70px;text-align:right">{e(duration(day["minutes"]))}</td></tr>')
    out.append('</table><p style="color:#5b6473;font-size:13px">A 5-minute slot counts when a device asked '
               'for any name in it.</p>')
    out.append(f'<h2 style="{_H2}">Blocked: {summary["blocked"]:,} of {summary["queries"]:,} queries</h2>')
    out.append(_table([(c, n) for c, n in summary["blocked_by_category"]], "Nothing blocked."))
    out.append(f'<h2 style="{_H2}">Top sites</h2>')
    out.append(_table(summary["top_sites"], "No sites visited."))
    if summary["top_blocked"]:
        out.append(f'<h2 style="{_H2}">Most blocked</h2>')
        out.append(_table(summary["top_blocked"], ""))
    for limit in summary.get("limits", []):
        out.append(f'<h2 style="{_H2}">Daily limit {e(limit["name"])} (minutes used)</h2>')
        out.append(_table([(_weekday(day["date"]), f'{day["used"]}' + (f' of {day["allowed"]}'
                            if day["allowed"] is not None else "")) for day in limit["days"]], ""))
    out.append(f'<h2 style="{_H2}">Requests</h2>')
    out.append(_table([(f'{r["device"]}: {r["domain"]}' + (f' — "{r["message"]}"' if r.get("message") else ""),
                        request_outcome(r, tz)) for r in summary["requests"]], "No requests."))
    out.append(f'<p style="margin-top:20px"><a href="{e(link)}" style="color:#2453b8">Open this summary in filterd'
               '</a></p></div></body></html>')
    return "".join(out)


def _weekday(day: str) -> str:
    return f"{date.fromisoformat(day):%a}"


def _table(rows, empty: str) -> str:
    if not rows:
        return f'<p style="color:#5b6473">{_escape(empty)}</p>'
    cells = "".join(f'<tr><td style="{_TD}">{_escape(a)}</td><td style="{_TD};text-align:right">{_escape(b)}</td></tr>'
                    for a, b in rows)
    return f'<table style="border-collapse:collapse;width:100%">{cells}</table>'


def _escape(value) -> str:
    return html.escape(str(value), quote=True)
