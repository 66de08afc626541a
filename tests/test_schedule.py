"""`filterd/rules/schedule.py`: whether a schedule's window holds at a moment, and when it ends —
the answer the policy and bonus time both read. Wall-clock times in Europe/London, including the
two daylight-saving days of 2026 (29 March: 01:00 GMT → 02:00 BST; 25 October: 02:00 BST → 01:00 GMT)."""
from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from filterd.rules.model import Schedule
from filterd.rules.schedule import window_end

LONDON = ZoneInfo("Europe/London")
UTC = datetime.UTC
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def schedule(days, start: str, end: str) -> Schedule:
    def minutes(text: str) -> int:
        hours, mins = text.split(":")
        return int(hours) * 60 + int(mins)
    return Schedule(name="test", days=frozenset(days), start=minutes(start), end=minutes(end), block_all=True,
                    block=(), allow=())


def at(text: str, fold: int = 0) -> datetime.datetime:
    """'2026-03-03 12:00' as a London wall-clock time (fold=1: the second of a repeated time)."""
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=LONDON, fold=fold)


HOMEWORK = schedule({MON, TUE, WED, THU, FRI}, "16:00", "18:00")
BEDTIME = schedule({SUN, MON, TUE, WED, THU}, "21:00", "07:00")       # school nights
FRIDAY_LATE = schedule({FRI}, "23:00", "06:00")
EVENING = schedule({SAT}, "20:00", "24:00")


def test_the_dates_fall_on_the_days_the_tests_say():
    assert [f"{at(d):%a}" for d in ("2026-03-02 00:00", "2026-03-06 00:00", "2026-03-07 00:00",
                                    "2026-03-28 00:00", "2026-10-24 00:00")] == ["Mon", "Fri", "Sat", "Sat", "Sat"]


@pytest.mark.parametrize("moment, end", [
    ("2026-03-03 15:59", None),                   # Tuesday, before homework
    ("2026-03-03 16:00", "2026-03-03 18:00"),     # the start is inside
    ("2026-03-03 17:59", "2026-03-03 18:00"),
    ("2026-03-03 18:00", None),                   # the end is outside
    ("2026-03-07 17:00", None),                   # Saturday: not a homework day
])
def test_a_daytime_window_holds_from_its_start_up_to_its_end(moment, end):
    assert window_end(HOMEWORK, at(moment)) == (at(end) if end else None)


@pytest.mark.parametrize("moment, end", [
    ("2026-03-01 21:30", "2026-03-02 07:00"),     # Sunday evening: Sunday's bedtime
    ("2026-03-02 03:00", "2026-03-02 07:00"),     # Monday 03:00: still Sunday's window
    ("2026-03-06 03:00", "2026-03-06 07:00"),     # Friday 03:00: Thursday's window
    ("2026-03-07 03:00", None),                   # Saturday 03:00: Friday has no bedtime
    ("2026-03-06 21:30", None),                   # Friday evening: not a school night
    ("2026-03-02 07:00", None),
])
def test_a_window_crossing_midnight_belongs_to_the_day_it_starts(moment, end):
    assert window_end(BEDTIME, at(moment)) == (at(end) if end else None)


def test_friday_late_runs_into_saturday_morning_but_not_from_saturday_night():
    assert window_end(FRIDAY_LATE, at("2026-03-07 05:59")) == at("2026-03-07 06:00")
    assert window_end(FRIDAY_LATE, at("2026-03-07 23:30")) is None          # Saturday's own night


def test_a_window_ending_at_2400_ends_at_midnight():
    assert window_end(EVENING, at("2026-03-07 23:59")) == at("2026-03-08 00:00")
    assert window_end(EVENING, at("2026-03-07 20:00")) == at("2026-03-08 00:00")
    assert window_end(EVENING, at("2026-03-08 00:00")) is None
    assert window_end(EVENING, at("2026-03-07 19:59")) is None


def test_the_end_is_in_the_zone_of_the_moment_asked_about():
    end = window_end(HOMEWORK, at("2026-03-03 17:00"))
    assert end.tzinfo is LONDON


# ---------------------------------------------------------------- daylight-saving days


SATURDAY_NIGHT = schedule({SAT}, "21:00", "07:00")
LATE_FILM = schedule({SAT}, "23:30", "01:30")


def test_spring_forward_night_ends_at_0700_bst_nine_hours_after_it_started():
    end = window_end(SATURDAY_NIGHT, at("2026-03-29 03:00"))
    assert end == at("2026-03-29 07:00")
    assert end.astimezone(UTC) == datetime.datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    assert end.timestamp() - at("2026-03-28 21:00").timestamp() == 9 * 3600


def test_fall_back_night_ends_at_0700_gmt_eleven_hours_after_it_started():
    for fold in (0, 1):                              # both 01:30s are inside
        end = window_end(SATURDAY_NIGHT, at("2026-10-25 01:30", fold))
        assert end.astimezone(UTC) == datetime.datetime(2026, 10, 25, 7, 0, tzinfo=UTC)
    assert end.timestamp() - at("2026-10-24 21:00").timestamp() == 11 * 3600


@pytest.mark.parametrize("moment, inside", [
    ("2026-03-28 20:59", False),
    ("2026-03-28 21:00", True),
    ("2026-03-29 00:59", True),      # the last GMT minute
    ("2026-03-29 02:00", True),      # the first BST minute
    ("2026-03-29 06:59", True),
    ("2026-03-29 07:00", False),
])
def test_the_window_follows_the_wall_clock_across_the_spring_change(moment, inside):
    assert (window_end(SATURDAY_NIGHT, at(moment)) is not None) is inside


def test_a_window_ending_in_the_repeated_hour_ends_at_its_first_occurrence():
    end = window_end(LATE_FILM, at("2026-10-25 00:30"))
    assert end.astimezone(UTC) == datetime.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)     # 01:30 BST
    assert window_end(LATE_FILM, at("2026-10-25 01:30", fold=1)) is None               # the second 01:30


def test_a_window_ending_in_the_spring_forward_gap_says_the_time_on_the_clock_when_it_ends():
    """01:30 does not exist on 29 March: the window really ends at 01:30 GMT, shown as 02:30 BST."""
    end = window_end(LATE_FILM, at("2026-03-29 00:45"))
    assert end.astimezone(UTC) == datetime.datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert (end.hour, end.minute) == (2, 30)
    assert window_end(LATE_FILM, at("2026-03-29 02:31")) is None
