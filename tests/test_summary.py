"""The weekly summary: its data per profile from a real state DB, its e-mail renderings, and
the notifier sending it once a week at the chosen local time (to a real SMTP server)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from test_notify import make_config, open_db, smtp  # noqa: F401  (smtp is a fixture)

from filterd.family import alerts, notify, summary

PARIS = ZoneInfo("Europe/Paris")
SUNDAY_1800 = datetime(2027, 1, 10, 18, 0, tzinfo=PARIS)      # the summary's moment
XSS = "<script>alert(1)</script>"


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    """A time in January 2027, Paris."""
    return datetime(2027, 1, day, hour, minute, second, tzinfo=PARIS).timestamp()


def query(db, ts: float, device: str, name: str = "example.com", action: str = "allow",
          category: str | None = None) -> None:
    db.execute("INSERT INTO queries (ts, device, client, name, qtype, action, rule, reason, category, rcode,"
               " latency_ms, profile) VALUES (?, ?, '192.168.1.23', ?, 1, ?, NULL, NULL, ?, 0, 1.0, 'kids')",
               (ts, device, name, action, category))


def rollup(db, ts: float, device: str, category: str, queries: int, blocked: int) -> None:
    db.execute("INSERT INTO rollups (hour, device, category, queries, blocked) VALUES (?, ?, ?, ?, ?)",
               (int(ts // 3600), device, category, queries, blocked))


def name_rollup(db, ts: float, device: str, name: str, queries: int, blocked: bool = False) -> None:
    db.execute("INSERT INTO name_rollups (blocked, hour, device, name, queries) VALUES (?, ?, ?, ?, ?)",
               (int(blocked), int(ts // 3600), device, name, queries))


def access_request(db, device: str, domain: str, created: float, status: str = "pending", answer: str = "",
                   until: float | None = None, message: str = "") -> None:
    db.execute("INSERT INTO access_requests (device, domain, reason, unblocks, message, created, updated, status,"
               " decided, until, answer) VALUES (?, ?, 'games are blocked', ?2, ?, ?, ?, ?, ?, ?, ?)",
               (device, domain, message, created, created, status, created + 60 if status != "pending" else None,
                until, answer))


def fill_week(db) -> None:
    # Monday: the tablet at 10:00-10:05 (three queries) and 10:07; the phone in the same first slot.
    for minute, second in ((0, 5), (1, 0), (4, 59), (7, 0)):
        query(db, at(4, 10, minute, second), "kids-tablet")
    query(db, at(4, 10, 2), "emma-phone")
    query(db, at(5, 23, 58), "emma-phone")                                  # Tuesday, one slot
    query(db, at(3, 12), "kids-tablet")                                     # Sunday before: outside
    query(db, at(6, 9), "dad-phone")                                        # another profile
    query(db, at(10, 18, 30), "kids-tablet")                                # after the moment
    rollup(db, at(4, 10), "kids-tablet", "", 40, 0)
    rollup(db, at(4, 10), "kids-tablet", "adult", 6, 6)
    rollup(db, at(5, 23), "emma-phone", "games", 4, 3)
    rollup(db, at(6, 9), "dad-phone", "gambling", 9, 9)                     # another profile
    name_rollup(db, at(4, 10), "kids-tablet", "khanacademy.org", 30)
    name_rollup(db, at(5, 23), "emma-phone", "khanacademy.org", 5)
    name_rollup(db, at(4, 10), "kids-tablet", XSS, 7)
    name_rollup(db, at(4, 10), "kids-tablet", "pornhub.com", 6, blocked=True)
    name_rollup(db, at(6, 9), "dad-phone", "news.example", 99)
    access_request(db, "kids-tablet", "roblox.com", at(7, 17), "approved", until=at(7, 18, 30))
    access_request(db, "emma-phone", "tiktok.com", at(8, 16), "declined", answer="after homework")
    access_request(db, "kids-tablet", "minecraft.net", at(9, 15), message=XSS)
    access_request(db, "dad-phone", "bet.com", at(8, 16), "approved")


def test_weekly_summary_counts_5_minute_slots_top_sites_blocks_and_requests(tmp_path):
    config = make_config(tmp_path, "")
    db = open_db(config)
    fill_week(db)
    data = summary.weekly_summary(db, config, "kids", SUNDAY_1800.timestamp())
    assert data["devices"] == ["kids-tablet", "emma-phone"]
    assert data["since"] == at(4, 0)
    assert [d["date"] for d in data["days"]] == [f"2027-01-{d:02d}" for d in range(4, 11)]
    assert data["days"][0]["label"] == "Mon 4 Jan"
    assert [d["minutes"] for d in data["days"]] == [10, 5, 0, 0, 0, 0, 0]
    assert data["minutes_total"] == 15
    assert (data["queries"], data["blocked"]) == (50, 9)
    assert data["top_sites"] == [["khanacademy.org", 35], [XSS, 7]]
    assert data["top_blocked"] == [["pornhub.com", 6]]
    assert data["blocked_by_category"] == [["Adult content", 6], ["Games", 3]]   # catalog names, not ids
    assert [r["domain"] for r in data["requests"]] == ["roblox.com", "tiktok.com", "minecraft.net"]
    assert data["requests_count"] == {"approved": 1, "declined": 1, "pending": 1}
    json.dumps(data)     # the outbox stores it as JSON


def test_request_outcomes_in_words():
    assert summary.request_outcome({"status": "approved", "until": at(7, 18, 30)}, PARIS) == "approved until Thu 18:30"
    assert summary.request_outcome({"status": "approved", "until": None}, PARIS) == "approved for good"
    assert summary.request_outcome({"status": "declined", "answer": "after homework"}, PARIS) == \
        "declined: after homework"
    assert summary.request_outcome({"status": "pending"}, PARIS) == "not answered yet"
    assert [summary.duration(m) for m in (0, 45, 60, 135)] == ["—", "45 min", "1 h", "2 h 15"]


def test_html_email_escapes_everything_from_the_network(tmp_path):
    config = make_config(tmp_path, "")
    db = open_db(config)
    fill_week(db)
    data = summary.weekly_summary(db, config, "kids", SUNDAY_1800.timestamp())
    page = summary.render_html(data, 'http://filter.home/summary/kids?"x', PARIS)
    assert XSS not in page and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="http://filter.home/summary/kids?&quot;x"' in page
    assert "after homework" in page and "approved until Thu 18:30" in page
    text = summary.render_text(data, PARIS)
    assert "Mon 4 Jan: 10 min" in text and "khanacademy.org (35)" in text


def test_weekly_summary_is_sent_once_a_week_at_the_chosen_local_time(tmp_path, smtp):  # noqa: F811
    config = make_config(tmp_path, f"""
notify:
  channels:
    mum: {{type: email, host: 127.0.0.1, port: {smtp.port}, username: parent, password: {smtp_password()},
          from: filter@example.com, to: [mum@example.com], ca_file: "{smtp.ca}"}}
  events: {{weekly_summary: [mum]}}
  weekly_summary: {{day: sunday, time: "18:00"}}
""")
    db = open_db(config)
    fill_week(db)
    moment = SUNDAY_1800.timestamp()
    assert SUNDAY_1800.weekday() == 6
    assert alerts.run_detectors(db, config, now=moment - 60) == 0          # Sunday 17:59: not yet
    assert alerts.run_detectors(db, config, now=moment) == 2               # kids and adults (both have devices)
    assert alerts.run_detectors(db, config, now=moment + 300) == 0         # once
    assert alerts.run_detectors(db, config, now=moment + 3 * 86400) == 0   # all week
    assert notify.send_due(db, config, now=moment + 5) == 2
    by_subject = {m["Subject"]: m for m in smtp.messages}
    kids = by_subject["Weekly summary for kids"]
    html = kids.get_body(("html",)).get_content()
    assert "khanacademy.org" in html and XSS not in html and "&lt;script&gt;" in html
    assert 'href="http://filter.home:8080/summary/kids"' in html
    assert "Mon 4 Jan: 10 min" in kids.get_body(("plain",)).get_content()
    next_week = (SUNDAY_1800 + timedelta(days=7)).timestamp()
    assert alerts.run_detectors(db, config, now=next_week + 120) == 2      # the next Sunday


def test_weekly_summary_more_than_a_day_late_is_skipped(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {weekly_summary: [hook]}
  weekly_summary: {day: sun, time: "18:00", profiles: [kids]}
""")
    db = open_db(config)
    assert alerts.run_detectors(db, config, now=SUNDAY_1800.timestamp() + 86400 + 60) == 0
    assert alerts.run_detectors(db, config, now=SUNDAY_1800.timestamp() + 3600) == 1   # only the chosen profile
    [(payload,)] = db.execute("SELECT payload FROM notifications").fetchall()
    assert json.loads(payload)["profile"] == "kids"


def test_last_weekly_moment_follows_the_house_time_zone(tmp_path):
    config = make_config(tmp_path, "notify:\n  weekly_summary: {day: monday, time: \"07:30\"}\n")
    monday = datetime(2027, 1, 11, 7, 30, tzinfo=PARIS)
    assert alerts.last_weekly_moment(config, monday.timestamp()) == monday
    assert alerts.last_weekly_moment(config, monday.timestamp() - 1) == monday - timedelta(days=7)
    assert alerts.last_weekly_moment(config, monday.timestamp() + 6 * 86400) == monday


def smtp_password() -> str:
    from test_notify import SMTP_PASSWORD
    return SMTP_PASSWORD
