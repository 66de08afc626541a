"""When a schedule's window is on: bedtime, homework time, school nights.

`policy.decide` asks whether a window holds now and when it ends; bonus time
(`store/overrides.bonus`) lasts until the running window ends. Both read the same answer here.
"""
from __future__ import annotations

import datetime

from filterd.rules.model import Schedule


def window_end(schedule: Schedule, now: datetime.datetime) -> datetime.datetime | None:
    """The end of `schedule`'s window that contains `now`, or None when outside it.

    A window belongs to the day it starts (Friday 21:00–07:00 runs into Saturday morning)
    and is read in wall-clock time of the house's zone, so it stays right on DST days.
    """
    tz = now.tzinfo
    today = now.date()
    for days_back in (0, 1):
        day = today - datetime.timedelta(days=days_back)
        if day.weekday() not in schedule.days:
            continue
        start = datetime.datetime.combine(day, _clock(schedule.start), tzinfo=tz)
        if schedule.end == 1440:  # "24:00": the window ends at midnight
            end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(0), tzinfo=tz)
        else:
            end_day = day if schedule.end > schedule.start else day + datetime.timedelta(days=1)
            end = datetime.datetime.combine(end_day, _clock(schedule.end), tzinfo=tz)
        # Compare instants, not wall times: on DST days the same tzinfo would compare naively.
        if start.timestamp() <= now.timestamp() < end.timestamp():
            # An end inside the spring-forward gap (01:30 that night) is really an hour later:
            # say the time on the clock when it actually ends.
            return datetime.datetime.fromtimestamp(end.timestamp(), tz)
    return None


def next_start(schedule: Schedule, now: datetime.datetime) -> datetime.datetime | None:
    """When `schedule`'s next window starts after `now` (within a week), in the house's zone."""
    tz = now.tzinfo
    for days_ahead in range(8):
        day = now.date() + datetime.timedelta(days=days_ahead)
        if day.weekday() not in schedule.days:
            continue
        start = datetime.datetime.combine(day, _clock(schedule.start), tzinfo=tz)
        if start.timestamp() > now.timestamp():
            return datetime.datetime.fromtimestamp(start.timestamp(), tz)
    return None


def _clock(minutes: int) -> datetime.time:
    return datetime.time(minutes // 60, minutes % 60)
