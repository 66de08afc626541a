"""When the wall clock can be believed. A Raspberry Pi has no real-time clock: it boots at 1970
or at the time it last saved, and NTP sets it only once DNS — this filter — answers. A clock
that reads earlier than the day this version of filterd was released is wrong; until it is
set, schedules are not applied (`policy.decide`), retention deletes nothing and the query
log marks its rows (store/log_writer), encrypted upstreams whose certificates are "not yet
valid" are bridged by the plain ones (dns/upstream). Pure: the time is always passed in.
"""
from __future__ import annotations

import datetime

# The day this version was released: no clock reading earlier is right. Raised with each release.
RELEASED = datetime.date(2025, 6, 1)
CLOCK_FLOOR = datetime.datetime(RELEASED.year, RELEASED.month, RELEASED.day,
                                tzinfo=datetime.timezone.utc).timestamp()


def plausible(epoch: float, floor: float = CLOCK_FLOOR) -> bool:
    """Whether a clock reading `epoch` (seconds since 1970, UTC) may be right."""
    return epoch >= floor
