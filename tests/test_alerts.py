"""`filterd/family/alerts.py`: the detectors that read a real state DB and queue what parents asked
to hear about — a new device, repeated blocked attempts, a problem with the filter, the weekly
summary at its local time — each once, even across a restart. Time is passed in (`now=`)."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from test_notify import BASE_CONFIG, make_config, open_db, write_config

from filterd.family import alerts, notify
from filterd.rules.config import load_config
from filterd.store import status as daemon_status

PARIS = ZoneInfo("Europe/Paris")
HOOK = """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {EVENTS}
"""


def hook_config(tmp_path, events: str, more: str = ""):
    return make_config(tmp_path, HOOK.replace("{EVENTS}", events) + more)


def insert_block(db, ts: float, device: str | None = "kids-tablet", name: str = "pornhub.com",
                 category: str = "adult", client: str = "192.168.1.23", action: str = "block") -> None:
    db.execute("INSERT INTO queries (ts, device, client, name, qtype, action, rule, reason, category, rcode,"
               " latency_ms, profile) VALUES (?, ?, ?, ?, 1, ?, 'category', 'test', ?, 0, 1.0, 'kids')",
               (ts, device, client, name, action, category))


def events_of(db, event: str) -> list[dict]:
    return [json.loads(p) for p, in db.execute("SELECT payload FROM notifications WHERE event = ? ORDER BY id",
                                                (event,))]


def test_repeated_attempts_alert_fires_once_per_window(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {repeated_attempts: [hook]}
  repeated_attempts: {categories: [adult], count: 5, window_minutes: 10}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    for i in range(4):
        insert_block(db, t0 + i)
    insert_block(db, t0 + 5, category="gambling", name="poker.com")        # another category: not counted
    insert_block(db, t0 + 6, action="allow", category="adult")             # allowed: not counted
    insert_block(db, t0 + 7, device="dad-phone", client="192.168.1.24")    # another device
    assert alerts.run_detectors(db, config, now=t0 + 10) == 0
    insert_block(db, t0 + 11, name="xvideos.com")
    assert alerts.run_detectors(db, config, now=t0 + 12) == 1
    [alert] = events_of(db, "repeated_attempts")
    assert alert["device"] == "kids-tablet" and alert["count"] == 5 and alert["window_minutes"] == 10
    assert alert["names"][0] == ["pornhub.com", 4]
    for i in range(10):                                                    # more in the same window: quiet
        insert_block(db, t0 + 20 + i)
    assert alerts.run_detectors(db, config, now=t0 + 40) == 0
    assert alerts.run_detectors(db, config, now=t0 + 12 + 599) == 0
    for i in range(5):                                                     # the next window: once more
        insert_block(db, t0 + 700 + i)
    assert alerts.run_detectors(db, config, now=t0 + 12 + 700) == 1
    assert alerts.run_detectors(db, config, now=t0 + 12 + 710) == 0
    assert len(events_of(db, "repeated_attempts")) == 2


def test_repeated_attempts_of_an_unnamed_client_use_its_address(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {repeated_attempts: [hook]}
  repeated_attempts: {categories: [gambling], count: 2, window_minutes: 1}
""")
    db = open_db(config)
    for i in range(2):
        insert_block(db, 1000.0 + i, device=None, client="192.168.1.99", category="gambling", name="bet.com")
    assert alerts.run_detectors(db, config, now=1010.0) == 1
    assert events_of(db, "repeated_attempts")[0]["device"] == "192.168.1.99"


def add_client(db, client: str, mac: str | None, first_seen: float, device: str | None = None,
               hostname: str | None = None) -> None:
    db.execute("INSERT INTO clients_seen (client, mac, device, hostname, first_seen, last_seen, queries)"
               " VALUES (?, ?, ?, ?, ?, ?, 1)", (client, mac, device, hostname, first_seen, first_seen))


def test_new_device_is_announced_once_with_the_private_mac_hint(tmp_path, receiver):
    config = make_config(tmp_path, f"""
notify:
  channels: {{phone: {{type: ntfy, url: "{receiver.url('/t')}"}}}}
  events: {{new_device: [phone]}}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    add_client(db, "192.168.1.40", "00:11:22:33:44:55", t0 - 86400)     # an old device
    assert alerts.run_detectors(db, config, now=t0) == 0                # first round: the starting point
    add_client(db, "192.168.1.41", "3a:bb:cc:dd:ee:01", t0 + 3)          # 2nd hex digit A: private
    add_client(db, "192.168.1.42", "00:1b:63:00:00:02", t0 + 4)          # a vendor (global) address
    add_client(db, "192.168.1.23", "00:1b:63:00:00:03", t0 + 4, device="kids-tablet")   # named already
    assert alerts.run_detectors(db, config, now=t0 + 5) == 2
    assert alerts.run_detectors(db, config, now=t0 + 10) == 0           # once
    announced = {e["client"]: e for e in events_of(db, "new_device")}
    assert set(announced) == {"192.168.1.41", "192.168.1.42"}
    assert announced["192.168.1.41"]["private_mac"] is True
    assert announced["192.168.1.42"]["private_mac"] is False
    # A row committed late (its first query before the last round) is still announced.
    add_client(db, "192.168.1.43", None, t0 + 4.5)
    assert alerts.run_detectors(db, config, now=t0 + 15) == 1
    # The same MAC under a new address is no new device.
    add_client(db, "192.168.1.44", "00:11:22:33:44:55", t0 + 14)
    assert alerts.run_detectors(db, config, now=t0 + 20) == 0
    assert notify.send_due(db, config, now=t0 + 20) == 3
    bodies = {body.decode() for _, _, body in receiver.received}
    hinted = [b for b in bodies if "192.168.1.41" in b]
    assert hinted and "private (random)" in hinted[0]
    assert not any("private (random)" in b for b in bodies if "192.168.1.42" in b)


def test_daemon_problems_are_announced_once_and_again_when_they_return(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {daemon_problem: [hook]}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    status = ("INSERT OR REPLACE INTO daemon_status (pid, worker, started, updated, last_error)"
              " VALUES (4242, 0, ?, ?, ?)")
    db.execute(status, (t0 - 100, t0, None))
    assert alerts.run_detectors(db, config, now=t0, running_since=t0 - 1000) == 0
    error = "profiles.kids.schedules[0].start: \"25:00\" is not a time (line 12)"
    db.execute(status, (t0 - 100, t0 + 5, error))
    assert alerts.run_detectors(db, config, now=t0 + 6, running_since=t0 - 1000) == 1
    assert alerts.run_detectors(db, config, now=t0 + 11, running_since=t0 - 1000) == 0
    [problem] = events_of(db, "daemon_problem")
    assert problem["summary"] == "a change to the rules was refused" and error in problem["detail"]
    db.execute(status, (t0 - 100, t0 + 15, None))                        # fixed…
    assert alerts.run_detectors(db, config, now=t0 + 16, running_since=t0 - 1000) == 0
    db.execute(status, (t0 - 100, t0 + 20, error))                       # …and broken again
    assert alerts.run_detectors(db, config, now=t0 + 21, running_since=t0 - 1000) == 1

    # The daemon stops reporting: announced once it has been quiet for DAEMON_DOWN_S.
    later = t0 + 20 + daemon_status.STALE_S + 1
    assert alerts.run_detectors(db, config, now=later, running_since=t0 - 1000) == 0
    down_at = t0 + 20 + alerts.DAEMON_DOWN_S
    assert alerts.run_detectors(db, config, now=down_at, running_since=t0 - 1000) == 1
    assert events_of(db, "daemon_problem")[-1]["summary"] == "the filter is not running"
    assert alerts.run_detectors(db, config, now=down_at + 5, running_since=t0 - 1000) == 0
    # …but not right after the web UI itself started (the daemon may be starting too).
    db.execute("DELETE FROM notify_marks WHERE key = 'problem:daemon-down'")
    assert alerts.run_detectors(db, config, now=down_at + 10, running_since=down_at) == 0


def test_every_upstream_failing_is_a_daemon_problem_until_one_answers_again(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {daemon_problem: [hook]}
""")
    db = open_db(config)
    t0 = 1_800_000_000.0
    status = ("INSERT OR REPLACE INTO daemon_status (pid, worker, started, updated, upstreams, upstreams_failing)"
              " VALUES (4242, 0, ?, ?, 2, ?)")
    db.execute(status, (t0 - 100, t0, 1))                   # one of two failing: DNS still works
    assert alerts.run_detectors(db, config, now=t0, running_since=t0 - 1000) == 0
    db.execute(status, (t0 - 100, t0 + 5, 2))
    assert alerts.run_detectors(db, config, now=t0 + 6, running_since=t0 - 1000) == 1
    assert alerts.run_detectors(db, config, now=t0 + 11, running_since=t0 - 1000) == 0
    assert events_of(db, "daemon_problem")[-1]["summary"] == "no upstream resolver answers"


def test_list_that_never_updates_is_a_daemon_problem(tmp_path):
    path = write_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {daemon_problem: [hook]}
lists:
  - {id: remote-adult, url: "https://lists.example.com/adult.txt", category: adult}
""")
    config = load_config(path)
    db = open_db(config)
    assert alerts.run_detectors(db, config, now=time.time()) == 1
    [problem] = events_of(db, "daemon_problem")
    assert problem["problem"] == "list:remote-adult" and "never been downloaded" in problem["detail"]


def test_detectors_without_a_channel_do_nothing(tmp_path):
    config = make_config(tmp_path, """
notify:
  channels: {hook: {type: webhook, url: "http://127.0.0.1:1/"}}
  events: {access_request: [hook]}
""")
    db = open_db(config)
    for i in range(10):
        insert_block(db, 1000.0 + i)
    add_client(db, "192.168.1.41", "3a:bb:cc:dd:ee:01", 1000.0)
    assert alerts.run_detectors(db, config, now=1010.0) == 0
    assert db.execute("SELECT count(*) FROM notify_marks").fetchone()[0] == 0


def test_a_restart_announces_nothing_twice(tmp_path):
    """What was announced is remembered in the DB: a new process with a new connection stays quiet."""
    path = write_config(tmp_path, HOOK.replace("{EVENTS}", "{daemon_problem: [hook], repeated_attempts: [hook]}")
                        + "lists:\n  - {id: remote-adult, url: 'https://lists.example.com/a.txt', category: adult}\n")
    config = load_config(path)
    db = open_db(config)
    now = time.time()
    for i in range(5):
        insert_block(db, now - 10 + i)
    assert alerts.run_detectors(db, config, now=now) == 2            # a list problem and the attempts
    db.close()
    config = load_config(path)
    db = open_db(config)
    assert alerts.run_detectors(db, config, now=now + 5) == 0
    assert len(events_of(db, "daemon_problem")) == len(events_of(db, "repeated_attempts")) == 1


def test_a_failing_detector_is_logged_and_the_others_still_run(tmp_path, monkeypatch, caplog):
    config = hook_config(tmp_path, "{new_device: [hook], repeated_attempts: [hook]}")
    db = open_db(config)

    def broken(db, config, now):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(alerts, "detect_new_devices", broken)
    for i in range(5):
        insert_block(db, 1000.0 + i)
    with caplog.at_level(logging.ERROR, logger="filterd.notify"):
        assert alerts.run_detectors(db, config, now=1010.0) == 1
    assert "notification detector new_device failed" in caplog.text and "disk on fire" in caplog.text


def test_a_device_first_seen_before_filterd_watched_is_not_new(tmp_path):
    config = hook_config(tmp_path, "{new_device: [hook]}")
    db = open_db(config)
    t0 = 1_800_000_000.0
    for i in range(20):                                                  # the house's existing devices
        add_client(db, f"192.168.1.{100 + i}", f"00:1b:63:00:01:{i:02x}", t0 - 86400 * (i + 1))
    assert alerts.run_detectors(db, config, now=t0) == 0
    assert alerts.run_detectors(db, config, now=t0 + 300) == 0
    assert events_of(db, "new_device") == []


# ---------------------------------------------------------------- the weekly summary's moment


def test_the_weekly_moment_keeps_its_local_time_across_the_spring_clock_change(tmp_path):
    """Paris goes from CET to CEST on Sunday 29 March 2026: 18:00 stays 18:00 on the clock."""
    config = make_config(tmp_path, "notify:\n  weekly_summary: {day: sunday, time: '18:00'}\n")
    after_change = datetime(2026, 3, 29, 18, 0, tzinfo=PARIS)
    moment = alerts.last_weekly_moment(config, after_change.timestamp() + 60)
    assert (moment.hour, moment.minute) == (18, 0) and moment.utcoffset() == timedelta(hours=2)
    before = alerts.last_weekly_moment(config, after_change.timestamp() - 60)
    assert before == datetime(2026, 3, 22, 18, 0, tzinfo=PARIS) and before.utcoffset() == timedelta(hours=1)
    assert moment.timestamp() - before.timestamp() == 7 * 86400 - 3600     # that week is an hour shorter


def test_a_weekly_summary_late_by_up_to_a_day_is_still_sent_once(tmp_path):
    config = hook_config(tmp_path, "{weekly_summary: [hook]}", "  weekly_summary: {day: sun, time: '18:00'}\n")
    db = open_db(config)
    moment = datetime(2026, 3, 29, 18, 0, tzinfo=PARIS).timestamp()
    assert alerts.run_detectors(db, config, now=moment + alerts.WEEKLY_LATE_S) == 2     # kids and adults
    assert alerts.run_detectors(db, config, now=moment + alerts.WEEKLY_LATE_S + 1) == 0
    assert sorted(e["profile"] for e in events_of(db, "weekly_summary")) == ["adults", "kids"]


def test_summaries_go_to_the_chosen_profiles_else_to_every_profile_with_a_device(tmp_path):
    assert alerts.summary_profiles(make_config(tmp_path, "")) == ["kids", "adults"]
    with_guests = BASE_CONFIG.replace("  adults: {{preset: adult}}", "  adults: {{preset: adult}}\n  guests: {{}}")
    path = tmp_path / "guests.yaml"
    path.write_text(with_guests.format(data_dir=tmp_path / "var"))
    assert alerts.summary_profiles(load_config(path)) == ["kids", "adults"]          # guests has no device
    chosen = make_config(tmp_path, "notify:\n  weekly_summary: {profiles: [adults]}\n")
    assert alerts.summary_profiles(chosen) == ["adults"]
    nobody = make_config(tmp_path, "notify:\n  weekly_summary: {profiles: []}\n")
    assert alerts.summary_profiles(nobody) == []


def test_a_failed_list_update_is_a_daemon_problem_while_a_fresh_copy_is_not(tmp_path):
    path = write_config(tmp_path, HOOK.replace("{EVENTS}", "{daemon_problem: [hook]}")
                        + "lists:\n  - {id: remote-adult, url: 'https://lists.example.com/a.txt', category: adult}\n")
    config = load_config(path)
    folder = config.data_dir / "lists"
    folder.mkdir(parents=True)
    (folder / "remote-adult.txt").write_text("adult.example\n")            # the last good copy, fresh
    (folder / "update-status.json").write_text(json.dumps({
        "pid": 1, "started": 1000.0, "finished": 1010.0, "error": None,
        "lists": [{"id": "remote-adult", "state": "error",
                   "message": "remote-adult: HTTP 404 from https://lists.example.com/a.txt"}]}))
    db = open_db(config)
    assert alerts.run_detectors(db, config, now=time.time()) == 1
    [problem] = events_of(db, "daemon_problem")
    assert problem["problem"] == "list-failed:remote-adult"
    assert "HTTP 404" in problem["detail"] and "last good copy keeps filtering" in problem["detail"]
