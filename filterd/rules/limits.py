"""Daily allowances in house time: which day a moment counts toward, how long that day's
allowance is, and when it starts again. Pure: the time is always passed in.

A limit's day starts at its `reset` time (00:00 unless set), read on the house's wall clock, so a
04:00 reset lets a Friday late night count toward Friday. Minutes are numbered from the day's
start by the real clock (a day with a DST change has 23 or 25 hours of minutes).
"""
from __future__ import annotations

import datetime

from filterd.rules.model import Limit

MAX_DAY_MINUTES = 25 * 60          # the longest day (autumn's DST change)


def day_start(limit: Limit, now: datetime.datetime) -> datetime.datetime:
    """The start of the limit's day that contains `now` (aware, in now's zone)."""
    tz = now.tzinfo
    reset = datetime.time(limit.reset // 60, limit.reset % 60)
    start = datetime.datetime.combine(now.date(), reset, tzinfo=tz)
    if start.timestamp() > now.timestamp():
        start = datetime.datetime.combine(now.date() - datetime.timedelta(days=1), reset, tzinfo=tz)
    return start


def next_reset(limit: Limit, now: datetime.datetime) -> datetime.datetime:
    """When the count starts again after `now`."""
    start = day_start(limit, now)
    reset = datetime.time(limit.reset // 60, limit.reset % 60)
    following = datetime.datetime.combine(start.date() + datetime.timedelta(days=1), reset, tzinfo=now.tzinfo)
    return datetime.datetime.fromtimestamp(following.timestamp(), now.tzinfo)


def day_key(limit: Limit, now: datetime.datetime) -> str:
    """The day `now` counts toward, as YYYY-MM-DD (the date the limit's day starts on)."""
    return day_start(limit, now).date().isoformat()


def allowance(limit: Limit, now: datetime.datetime) -> int | None:
    """Minutes allowed on the day containing `now`; None when the limit does not apply that day."""
    return limit.minutes[day_start(limit, now).weekday()]


def minute_index(limit: Limit, now: datetime.datetime) -> int:
    """Which minute of its day `now` falls in (0 at the reset time)."""
    elapsed = int(now.timestamp() - day_start(limit, now).timestamp()) // 60
    return max(0, min(elapsed, MAX_DAY_MINUTES - 1))


def subject_for(limit: Limit, device: str | None, profile: str) -> tuple[str, str] | None:
    """Whose allowance a query uses: the device's, or the profile's with `per: profile`.
    Unnamed devices are not counted per device (they have no name to keep a count under)."""
    if limit.per == "profile":
        return ("profile", profile)
    return ("device", device) if device else None
