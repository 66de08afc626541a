"""filterd/rules/clock.py: which clock readings are believed."""
from __future__ import annotations

import datetime

from filterd.rules import clock


def test_a_pi_booted_at_1970_or_before_the_release_is_not_believed():
    assert not clock.plausible(0.0)
    assert not clock.plausible(clock.CLOCK_FLOOR - 1)


def test_the_release_day_and_after_are_believed():
    assert clock.plausible(clock.CLOCK_FLOOR)
    assert clock.plausible(datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc).timestamp())


def test_the_floor_is_midnight_utc_of_the_release_day():
    moment = datetime.datetime.fromtimestamp(clock.CLOCK_FLOOR, datetime.timezone.utc)
    assert moment.date() == clock.RELEASED and moment.time() == datetime.time(0, 0)
