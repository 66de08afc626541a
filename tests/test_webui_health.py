"""webui/health.py: the filter's health on the parents' home page, in plain words.

`notes` is tried alone; the page is fetched over real HTTP from the real web UI (waitress,
tests/webui_live.py) on a real state DB whose status rows and hourly counters are written by
store/status exactly as the daemon's workers write them.
"""
from __future__ import annotations

import html
import time

import pytest
from webui_fixtures import PASSWORD, Env, env  # noqa: F401
from webui_live import LiveUI

from filterd.store import status
from webui import health

PARENT = "127.0.0.3"
CALM = {c: 0 for c in status.HEALTH_COUNTERS}


def counters(**changes) -> dict[str, int]:
    return {**CALM, **changes}


def note_texts(found) -> list[str]:
    return [n.text for n in found]


# ---------------------------------------------------------------- the words


def test_all_well_says_nothing():
    assert health.notes(counters(log_written=5000, rate_limited=300, answers_scrubbed=2), "14:00", False,
                        "5 Dec 2026", 10 * 2**30, None, None) == ()


def test_entries_lost_on_a_full_disk_say_how_many_and_why():
    [note] = health.notes(counters(log_dropped=1240, log_write_failures=3, log_disk_full=3), "14:00", False,
                          "5 Dec 2026", 10 * 2**30, "database or disk is full", "14:05")
    assert note.level == "error"
    assert note.text == ("The activity log lost 1,240 entries since 14:00: the disk is full. Filtering goes on; "
                         "free some space on the filter's disk.")


def test_entries_lost_to_a_flood_are_told_as_such():
    [text] = note_texts(health.notes(counters(log_dropped=1, log_dropped_queue_full=1), "09:00", False, "", None,
                                     None, None))
    assert text.startswith("The activity log lost 1 entry since 09:00: more queries came than it could write down")


def test_a_write_error_going_on_is_told_with_its_words():
    [text] = note_texts(health.notes(CALM, "09:00", False, "", 10 * 2**30, "database is locked", "09:12"))
    assert text == "The activity log cannot be written since 09:12: database is locked. Filtering goes on."


def test_a_full_disk_is_told_before_anything_is_lost():
    [text] = note_texts(health.notes(CALM, "09:00", False, "", 300_000, None, None))
    assert text.startswith("The filter's disk is full (0.3 MB free): the activity log cannot be written.")


def test_a_clock_not_set_and_a_database_made_again_are_warnings():
    found = health.notes(counters(db_reopened=1, retention_skipped=2), "09:00", True, "1 Jan 1970", None, None, None)
    assert [n.level for n in found] == ["warn", "warn"]
    assert found[0].text == ("The filter's clock is not set (it reads 1 Jan 1970): schedules wait until it is, "
                             "and old activity entries are kept. It sets itself once it reaches the internet.")
    assert "database file disappeared since 09:00 and was made again" in found[1].text


# ---------------------------------------------------------------- the page, over HTTP


@pytest.fixture
def live(env):
    server = LiveUI(env.app)
    yield server
    server.close()


def daemon_writes(env: Env, rows: list[tuple[status.WorkerStatus, status.WorkerStatus | None]]) -> None:
    conn = env.db()
    try:
        for row, previous in rows:
            status.write(conn, row, 2, previous)
    finally:
        conn.close()


def worker(index: int, now: float, **counts) -> status.WorkerStatus:
    return status.WorkerStatus(pid=40_000 + index, worker=index, started=now - 7200, updated=now, config_mtime=None,
                               last_reload=None, last_error=None, log_dropped=counts.pop("log_dropped", 0),
                               upstreams=1, upstreams_failing=0, **counts)


def home(live) -> str:
    parent = live.client(PARENT)
    assert parent.login(PASSWORD).status == 302
    page = parent.get("/")
    assert page.status == 200
    return html.unescape(page.text)


def test_a_calm_filter_shows_no_warning_and_keeps_its_counters_folded(env, live):
    env.set_password()
    now = time.time()
    daemon_writes(env, [(worker(0, now, log_written=812, rate_limited=3), None), (worker(1, now, log_written=90), None)])
    text = home(live)
    assert "health-note" not in text and "activity log" not in text.lower()
    assert "<summary>Filter health</summary>" in text
    assert "Activity entries written</th><td class=\"num\">902</td>" in text
    assert "Clock</th><td>set</td>" in text


def test_entries_lost_to_a_full_disk_are_on_the_home_page_summed_over_workers(env, live):
    env.set_password()
    now = time.time()
    before = worker(0, now - 30, log_written=500, log_dropped=40, log_write_failures=1, log_disk_full=1)
    daemon_writes(env, [
        (before, None),
        (worker(0, now, log_written=500, log_dropped=1040, log_write_failures=4, log_disk_full=4,
                log_last_error="database or disk is full", log_last_error_at=now - 20), before),
        (worker(1, now, log_dropped=200, log_write_failures=1, log_disk_full=1), None)])
    text = home(live)
    assert "The activity log lost 1,240 entries since " in text
    assert ": the disk is full. Filtering goes on; free some space on the filter's disk." in text
    assert "Activity entries lost</th><td class=\"num\">1,240</td>" in text


def test_a_clock_not_set_is_said_once_in_plain_words(env, live):
    env.set_password()
    now = time.time()
    daemon_writes(env, [(worker(0, now, clock_doubtful=1, retention_skipped=1), None),
                        (worker(1, now, clock_doubtful=1), None)])
    text = home(live)
    assert text.count("The filter's clock is not set") == 1
    assert "schedules wait until it is, and old activity entries are kept" in text
