"""Daily limits (`filterd/family/limits.py`, `rules/limits.py`, the `limits:` of a profile): the
config contract, minutes counted from queries with the session gap, one count shared by
workers and restarts, extensions, and the block when the day's allowance is used up."""
from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dnslib import QTYPE

from filterd.family import limits
from filterd.lists.index import DomainIndex
from filterd.rules import limits as limit_days
from filterd.rules.config import ConfigError, load_config, parse_config, read_yaml
from filterd.rules.explain import explain
from filterd.rules.model import Limit, parse_minutes
from filterd.rules.policy import Policy, decide, limits_counting
from filterd.store import state

ROOT = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Europe/London")
CONFIG = """
timezone: Europe/London
data_dir: {data_dir}
dns: {{upstreams: ["udp://127.0.0.1:1"]}}
profiles:
  kids:
    limits:
      - {{name: youtube, services: [youtube], daily: 2m}}
      - {{name: games, domains: [games.example], daily: 30m, weekends: 2h, sat: 1h30m, notify: true}}
      - {{name: online, all: true, daily: 3h, days: weekdays, reset: "04:00", per: profile}}
  adults: {{}}
devices:
  - {{name: Emma-Tablet, ip: 192.168.1.20, profile: kids}}
  - {{name: leo-console, ip: 192.168.1.21, profile: kids}}
  - {{name: dad, ip: 192.168.1.30, profile: adults}}
default_profile: adults
"""
MONDAY_NOON = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=TZ)


def make_config(tmp_path: Path, text: str = CONFIG):
    path = tmp_path / "filterd.yaml"
    path.write_text(text.format(data_dir=tmp_path / "var"))
    return load_config(path)


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def db(config):
    conn = state.connect(state.db_path(config.data_dir))
    yield conn
    conn.close()


def policy_for(config) -> Policy:
    return Policy(config.rules, config.catalog, DomainIndex.empty(), config.timezone)


# ---------------------------------------------------------------- the config contract


def test_a_limit_reads_its_allowance_per_day_of_the_week(config):
    games = next(l for l in config.rules.profiles["kids"].limits if l.name == "games")
    assert games.minutes == (30, 30, 30, 30, 30, 90, 120)        # sat overrides weekends
    online = next(l for l in config.rules.profiles["kids"].limits if l.name == "online")
    assert online.minutes == (180,) * 5 + (None, None) and online.per == "profile" and online.reset == 240


@pytest.mark.parametrize("text, minutes", [("30m", 30), ("1h", 60), ("1h30m", 90), ("2h 5m", 125), (45, 45),
                                           ("90min", 90), ("soon", None), ("", None), ("h", None), (True, None)])
def test_durations_are_written_as_people_say_them(text, minutes):
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize("limit, path, words", [
    ("{name: yt, services: [youtub], daily: 1h}", "profiles.kids.limits[0].services[0]", "not a known service"),
    ("{name: yt, services: [youtube], daily: 1 hour}", "profiles.kids.limits[0].daily", "not a duration"),
    ("{name: yt, services: [youtube]}", "profiles.kids.limits[0].daily", "is needed"),
    ("{name: yt, daily: 1h}", "profiles.kids.limits[0]", "needs what it counts"),
    ("{name: yt, all: true, daily: 1h, days: [funday]}", "profiles.kids.limits[0].days[0]", "not a day"),
    ("{name: yt, all: true, daily: 1h, per: house}", "profiles.kids.limits[0].per", "device or profile"),
    ("{name: yt, all: true, daily: 25h}", "profiles.kids.limits[0].daily", "from 0m to 24h"),
    ("{all: true, daily: 1h}", "profiles.kids.limits[0].name", "needs a short name"),
])
def test_filterd_check_refuses_a_bad_limit_naming_its_yaml_path(tmp_path, limit, path, words):
    text = f'dns: {{upstreams: ["udp://127.0.0.1:1"]}}\nprofiles:\n  kids:\n    limits:\n      - {limit}\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(*read_yaml(text))
    assert any(p.startswith(f"{path}: ") and words in p for p in caught.value.problems), caught.value.problems


def test_two_limits_of_a_profile_cannot_share_a_name():
    text = ('dns: {upstreams: ["udp://127.0.0.1:1"]}\nprofiles:\n  kids:\n    limits:\n'
            '      - {name: yt, all: true, daily: 1h}\n      - {name: yt, all: true, daily: 2h}\n')
    with pytest.raises(ConfigError, match=r"limits\[1\]\.name: \"yt\" is the name of another limit"):
        parse_config(*read_yaml(text))


# ---------------------------------------------------------------- the limit's day


def test_a_reset_at_four_counts_a_late_night_toward_the_day_before():
    limit = Limit("online", (60,) * 7, all=True, reset=240)
    friday_late = datetime.datetime(2026, 12, 5, 1, 30, tzinfo=TZ)      # Saturday 01:30
    assert limit_days.day_key(limit, friday_late) == "2026-12-04"
    assert limit_days.next_reset(limit, friday_late) == datetime.datetime(2026, 12, 5, 4, 0, tzinfo=TZ)
    assert limit_days.minute_index(limit, friday_late) == 21 * 60 + 30


def test_a_day_with_the_clocks_going_back_has_25_hours_of_minutes():
    limit = Limit("online", (60,) * 7, all=True)
    late = datetime.datetime(2026, 10, 25, 23, 59, tzinfo=TZ)
    assert limit_days.minute_index(limit, late) == 25 * 60 - 1


def test_a_limit_that_does_not_apply_today_has_no_allowance():
    limit = Limit("online", (180,) * 5 + (None, None), all=True)
    assert limit_days.allowance(limit, MONDAY_NOON) == 180
    assert limit_days.allowance(limit, MONDAY_NOON + datetime.timedelta(days=5)) is None


# ---------------------------------------------------------------- what counts


def test_only_names_in_a_limits_scope_count_and_connectivity_checks_never_do(config):
    policy = policy_for(config)
    assert set(limits_counting(policy, "kids", "www.youtube.com")) == {"youtube", "online"}
    assert set(limits_counting(policy, "kids", "eu.games.example")) == {"games", "online"}
    assert limits_counting(policy, "kids", "connectivitycheck.gstatic.com") == ()
    assert limits_counting(policy, "adults", "www.youtube.com") == ()


# ---------------------------------------------------------------- counting


def key(day="2026-11-30", subject="Emma-Tablet", name="youtube"):
    return (day, "device", subject, name)


def test_queries_less_than_the_gap_apart_count_every_minute_between(db):
    counter = limits.UsageCounter(gap_s=300)
    for minute in (600, 603, 607, 620):          # 600–607 one session (8 minutes), then a new one at 620
        counter.record(key(), minute)
    counter.flush(db, 0)
    assert db.execute("SELECT used FROM limit_usage").fetchone()[0] == 9


def test_two_workers_counting_the_same_minutes_do_not_count_them_twice(db):
    first, second = limits.UsageCounter(), limits.UsageCounter()
    for minute in range(600, 605):
        first.record(key(), minute)
        second.record(key(), minute)
    second.record(key(), 606)
    first.flush(db, 0)
    second.flush(db, 0)
    assert db.execute("SELECT used FROM limit_usage").fetchone()[0] == 7      # 600–606


def test_a_restart_keeps_the_minutes_already_counted(config, db):
    counter = limits.UsageCounter()
    counter.count([(config.rules.profiles["kids"].limits[0], ("device", "Emma-Tablet"))], MONDAY_NOON)
    counter.flush(db, MONDAY_NOON.timestamp())
    restarted = limits.UsageCounter()
    restarted.count([(config.rules.profiles["kids"].limits[0], ("device", "Emma-Tablet"))],
                    MONDAY_NOON + datetime.timedelta(seconds=20))
    restarted.flush(db, MONDAY_NOON.timestamp() + 20)
    used = limits.usage(db, config, "emma-tablet", MONDAY_NOON.timestamp() + 20)
    assert next(u for u in used if u.name == "youtube").used_minutes == 1


def test_marks_survive_a_flush_that_fails(db, tmp_path):
    counter = limits.UsageCounter()
    counter.record(key(), 600)
    broken = state.connect(tmp_path / "other.db")
    broken.execute("DROP TABLE limit_usage")
    with pytest.raises(Exception):
        counter.flush(broken, 0)
    counter.flush(db, 0)
    assert db.execute("SELECT used FROM limit_usage").fetchone()[0] == 1


# ---------------------------------------------------------------- spent, extended, explained


def use_minutes(config, db, device: str, limit_name: str, count: int, start: datetime.datetime):
    limit = next(l for l in config.rules.profiles[config.rules.profile_of(device)].limits if l.name == limit_name)
    counter = limits.UsageCounter(gap_s=60)
    for minute in range(count):
        counter.count([(limit, limits.subject_for(limit, device, config.rules.profile_of(device)))],
                      start + datetime.timedelta(minutes=minute))
    counter.flush(db, start.timestamp())


def test_a_used_up_allowance_blocks_that_device_only_until_the_reset(config, db):
    use_minutes(config, db, "Emma-Tablet", "youtube", 2, MONDAY_NOON)
    now = MONDAY_NOON + datetime.timedelta(minutes=3)
    active = limits.overrides_in_force(db, config, now.timestamp())
    policy = policy_for(config)
    blocked = decide(policy, "kids", "www.youtube.com", QTYPE.A, now, "Emma-Tablet", active)
    assert blocked.blocked and blocked.rule == "limit" and blocked.limit == "youtube"
    assert blocked.reason == "daily limit youtube: 2 of 2 minutes used; resets at 00:00"
    assert not decide(policy, "kids", "www.youtube.com", QTYPE.A, now, "leo-console", active).blocked
    assert not decide(policy, "kids", "www.wikipedia.org", QTYPE.A, now, "Emma-Tablet", active).blocked
    tomorrow = MONDAY_NOON + datetime.timedelta(hours=12, minutes=1)
    assert limits.spent_overrides(db, config, tomorrow.timestamp()) == ()


def test_minutes_added_by_a_parent_open_it_again_for_today(config, db):
    use_minutes(config, db, "Emma-Tablet", "youtube", 2, MONDAY_NOON)
    now = (MONDAY_NOON + datetime.timedelta(minutes=3)).timestamp()
    assert limits.spent_overrides(db, config, now)
    row = limits.extend(db, config, "emma-tablet", "YouTube", 1, now, source="web UI")
    assert (row.used_minutes, row.allowed_minutes + row.extra_minutes, row.remaining_minutes) == (2, 3, 1)
    assert limits.spent_overrides(db, config, now) == ()
    assert db.execute("SELECT actor, detail FROM audit").fetchall() == [("web UI", "youtube +1 min for device Emma-Tablet")]


def test_a_per_profile_limit_adds_the_devices_up(config, db):
    start = datetime.datetime(2026, 11, 30, 9, 0, tzinfo=TZ)
    use_minutes(config, db, "Emma-Tablet", "online", 100, start)
    use_minutes(config, db, "leo-console", "online", 80, start + datetime.timedelta(minutes=100))
    spent = limits.spent_overrides(db, config, (start + datetime.timedelta(hours=4)).timestamp())
    assert [(o.subject_kind, o.subject, o.value, o.minutes) for o in spent] == [("profile", "kids", "online", 180)]


def test_explain_names_the_spent_limit(config, db):
    use_minutes(config, db, "Emma-Tablet", "youtube", 2, MONDAY_NOON)
    now = MONDAY_NOON + datetime.timedelta(minutes=3)
    who, decision = explain(policy_for(config), "m.youtube.com", QTYPE.A, now,
                            limits.overrides_in_force(db, config, now.timestamp()), device="emma-tablet")
    assert who.device == "Emma-Tablet" and decision.rule == "limit"


def test_extending_an_unknown_limit_or_device_says_what_exists(config, db):
    with pytest.raises(limits.LimitError, match=r'has no limit "tiktok" \(limits: youtube, games, online\)'):
        limits.extend(db, config, "Emma-Tablet", "tiktok", 15)
    with pytest.raises(limits.LimitError, match=r'no device named "emma"'):
        limits.extend(db, config, "emma", "youtube", 15)


def test_the_cli_shows_what_is_left_and_extends(config, tmp_path):
    path = tmp_path / "filterd.yaml"
    run = [sys.executable, "-m", "filterd", "limits", "emma-tablet", "--config", str(path)]
    shown = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "youtube: 0 of 2 minutes used, 2 left · resets at" in shown.stdout
    extended = subprocess.run(run + ["--extend", "youtube=15m"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "youtube: 0 of 17 minutes used (+15 added today), 17 left" in extended.stdout
    wrong = subprocess.run(run + ["--extend", "youtube"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "write LIMIT=MINUTES" in wrong.stderr


def test_a_limit_with_notify_tells_the_parents_once_when_it_runs_out(tmp_path):
    from filterd.family import alerts, channels

    text = CONFIG.replace("daily: 2m}}", "daily: 2m, notify: true}}") + (
        "notify:\n  channels: {{hook: {{type: webhook, url: 'http://127.0.0.1:9/hook'}}}}\n"
        "  events: {{limit_spent: [hook]}}\n")
    config = make_config(tmp_path, text)
    db = state.connect(state.db_path(config.data_dir))
    use_minutes(config, db, "Emma-Tablet", "youtube", 2, MONDAY_NOON)
    now = (MONDAY_NOON + datetime.timedelta(minutes=3)).timestamp()
    assert alerts.run_detectors(db, config, now=now) == 1
    assert alerts.run_detectors(db, config, now=now + 60) == 0          # once, not every round
    import json
    event, payload = db.execute("SELECT event, payload FROM notifications").fetchone()
    message = channels.compose(event, json.loads(payload), "http://filter.home/", TZ)
    assert message.title == "Emma-Tablet: youtube limit used up"
    assert "has used today's 2 minutes of youtube. It opens again at 00:00." in message.text
    assert message.link == "http://filter.home/devices/Emma-Tablet#limits"


def test_a_category_counted_by_a_limit_brings_its_lists(tmp_path):
    from filterd.lists import sources

    text = CONFIG.replace("domains: [games.example], daily: 30m", "categories: [games], daily: 30m")
    config = make_config(tmp_path, text)
    assert "games" in sources.blocked_categories(config)


def test_the_weekly_summary_shows_minutes_per_limit_per_day(config, db):
    from filterd.family import summary

    use_minutes(config, db, "Emma-Tablet", "games", 20, MONDAY_NOON)
    use_minutes(config, db, "leo-console", "games", 15, MONDAY_NOON + datetime.timedelta(days=1))
    week = summary.weekly_summary(db, config, "kids", (MONDAY_NOON + datetime.timedelta(days=2)).timestamp())
    games = next(limit for limit in week["limits"] if limit["name"] == "games")
    by_day = {day["date"]: (day["used"], day["allowed"]) for day in games["days"]}
    assert by_day["2026-11-30"] == (20, 30) and by_day["2026-12-01"] == (15, 30)
    assert by_day["2026-11-28"] == (0, 90)                       # Saturday's allowance
    text = summary.render_text(week, TZ)
    assert "Daily limit games (minutes used, all devices): " in text and "Mon 20/30, Tue 15/30" in text
    assert "Daily limit games (minutes used)" in summary.render_html(week, "http://filter.home/summary/kids", TZ)
