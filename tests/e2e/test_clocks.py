"""The clock campaign: the real daemon under libfaketime (Debian's `faketime`), its wall clock
read from a file the test rewrites while it runs (FAKETIME_TIMESTAMP_FILE, FAKETIME_NO_CACHE);
the monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC), or its timers would spin.

A Raspberry Pi has no real-time clock: it boots at 1970 (or its last saved time), and NTP needs
DNS — this filter — to set it. So the daemon must answer from its first second whatever the clock
reads; apply schedules only once the clock reads after the release day (rules/clock), while the
lists and the parents' own block list apply at once; never delete the log on a clock it doubts;
and when the clock is set, or jumps a day forward, switch schedules on the new time at once.

House: UTC; the kids' tablet 127.0.0.2 has bedtime Sun–Thu 21:00–07:00 and blocked.test on its
own block list. 1 Jan 1970 was a Thursday: 03:00 is inside Wednesday's bedtime.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from conftest import wait_until
from standin import name_address

from filterd.rules import clock

UTC = datetime.timezone.utc
LIBRARY = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), None)
TABLET = "127.0.0.2"
BLOCK_ADDRESS = "192.168.1.2"
BOOT = datetime.datetime(1970, 1, 1, 3, 0, tzinfo=UTC)                         # Thursday 03:00
RELEASE_NIGHT = datetime.datetime.combine(clock.RELEASED, datetime.time(22, 0), tzinfo=UTC)
OLD_ROWS = 50          # the log of a Pi that ran before its reboot, months before RELEASE_NIGHT

pytestmark = pytest.mark.skipif(LIBRARY is None, reason="needs libfaketime (Debian's faketime package)")


class FakeClock:
    """The daemon's wall clock, as the file libfaketime reads at every clock call."""

    def __init__(self, folder: Path):
        self.path = folder / "faketime"

    def set(self, moment: datetime.datetime) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(moment.astimezone(UTC).strftime("@%Y-%m-%d %H:%M:%S\n"))
        os.replace(temporary, self.path)

    def env(self) -> dict[str, str]:
        return {**os.environ, "LD_PRELOAD": str(LIBRARY), "FAKETIME_TIMESTAMP_FILE": str(self.path),
                "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "TZ": "UTC"}


def seed_old_log(data_dir: Path) -> None:
    from filterd.store import state
    conn = state.connect(state.db_path(data_dir))
    old = datetime.datetime.combine(clock.RELEASED, datetime.time(12), tzinfo=UTC) - datetime.timedelta(days=150)
    try:
        conn.executemany("INSERT INTO queries (ts, client, name, qtype, action) VALUES (?, '192.168.1.9', ?, 1, 'allow')",
                         [(old.timestamp() + i, f"old{i}.example") for i in range(OLD_ROWS)])
    finally:
        conn.close()


def db_read(daemon, sql: str):
    from filterd.store import state
    conn = state.connect(state.db_path(daemon.folder / "var"))
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def answer(daemon, name: str) -> list[str]:
    return [str(rr.rdata) for rr in daemon.ask(name, source=TABLET, timeout=3).rr]


def allowed(daemon, name: str) -> bool:
    return answer(daemon, name) == [name_address(name)]


def blocked(daemon, name: str) -> bool:
    return answer(daemon, name) == [BLOCK_ADDRESS]


@pytest.fixture
def booted_in_1970(daemons, standin, tmp_path):
    fake = FakeClock(tmp_path)
    fake.set(BOOT)
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"], start=False, extra={
        "web": {"address": BLOCK_ADDRESS},
        "profiles": {"kids": {"block": ["blocked.test"],
                              "schedules": [{"name": "bedtime", "days": ["sun", "mon", "tue", "wed", "thu"],
                                             "start": "21:00", "end": "07:00", "block": "all"}]},
                     "adults": {}},
        "devices": [{"name": "tablet", "ip": TABLET, "profile": "kids"}],
        "default_profile": "adults", "log": {"retention_days": 30}})
    seed_old_log(daemon.folder / "var")
    daemon.env = fake.env()
    daemon.start()
    daemon.clock = fake
    return daemon


def test_a_pi_booted_in_1970_is_answered_at_once_then_schedules_follow_the_clock_ntp_sets(booted_in_1970):
    daemon = booted_in_1970
    # 1970: answered from the start; bedtime waits for a believable clock, the block list does not.
    assert allowed(daemon, "news.example")
    assert blocked(daemon, "blocked.test")
    wait_until(lambda: db_read(daemon, "SELECT clock_doubtful, retention_skipped FROM daemon_status") == (1, 1),
               timeout=15, interval=0.2, message="the status row to say the clock is doubted")
    wait_until(lambda: db_read(daemon, "SELECT count(*) FROM queries WHERE clock_doubtful = 1")[0] >= 2,
               timeout=15, interval=0.2, message="the queries of 1970 to be logged, marked")
    assert db_read(daemon, "SELECT count(*) FROM queries WHERE ts < 86400 AND clock_doubtful = 0") == (0,)

    # NTP sets the clock: the release day, a Sunday night. Bedtime at once; the log is kept.
    daemon.clock.set(RELEASE_NIGHT)
    wait_until(lambda: blocked(daemon, "news.example"), timeout=5, interval=0.1,
               message="bedtime to apply once the clock is set")
    wait_until(lambda: db_read(daemon, "SELECT clock_doubtful, retention_skipped FROM daemon_status") == (0, 2),
               timeout=15, interval=0.2, message="the clock to be believed, the jump's retention pass skipped")
    assert db_read(daemon, "SELECT count(*) FROM queries WHERE name LIKE 'old%'") == (OLD_ROWS,)
    assert blocked(daemon, "blocked.test")

    # Thursday night (bedtime), then a jump of a day forward to Friday night (no bedtime).
    thursday = RELEASE_NIGHT + datetime.timedelta(days=(3 - RELEASE_NIGHT.weekday()) % 7)
    daemon.clock.set(thursday)
    wait_until(lambda: blocked(daemon, "thursday.example"), timeout=5, interval=0.1, message="Thursday's bedtime")
    daemon.clock.set(thursday + datetime.timedelta(days=1))
    wait_until(lambda: allowed(daemon, "friday.example"), timeout=5, interval=0.1,
               message="Friday night (no bedtime) after a jump of a day")
    assert allowed(daemon, "news.example")
    assert daemon.alive() and "Traceback" not in daemon.stderr()


# ---------------------------------------------------------------- DoT on a clock before its certificate


@pytest.fixture
def dot_and_plain(daemons, standins, standin, certificates, tmp_path):
    """A DoT stand-in whose certificate is valid from yesterday (real time), the plain stand-in
    after it in the list, and a daemon whose clock the test sets before starting it."""
    ca, cert, key = certificates
    dot, dot_port = standins(tls_cert=(cert, key))
    fake = FakeClock(tmp_path)

    def start(moment: datetime.datetime):
        fake.set(moment)
        daemon = daemons([f"tls://localhost:{dot_port}", f"udp://127.0.0.1:{standin.port}"], start=False,
                         tls_ca_file=str(ca))
        daemon.env = fake.env()
        daemon.clock = fake
        return daemon.start()
    return dot, start


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(UTC)


@pytest.mark.parametrize("boot", [BOOT, RELEASE_NIGHT], ids=["1970", "release-day"])
def test_dot_waits_for_the_clock_the_plain_upstream_bridges_and_the_log_says_so_once(dot_and_plain, standin, boot):
    """At 1970 the encrypted upstream is not even tried; on the release day (a believable clock,
    still before the certificate) it is refused once as not yet valid. Either way the plain
    upstream answers, the log says so once, and once NTP sets the clock DoT is asked again."""
    dot, start = dot_and_plain
    daemon = start(boot)
    names = [f"bridge{i}.{boot.year}.test" for i in range(5)]
    assert [answer(daemon, name) for name in names] == [[name_address(name)] for name in names]
    assert sum(dot.count(name) for name in names) == 0 and all(standin.count(name) == 1 for name in names)
    log = daemon.stderr()
    assert log.count("asking udp://127.0.0.1") == 1, log
    assert ("not set yet" in log) if boot.year == 1970 else ("certificate is not valid yet" in log), log

    daemon.clock.set(now_utc())
    tries = iter(range(1000))

    def asked_over_dot() -> bool:
        name = f"after-ntp{next(tries)}.{boot.year}.test"      # a new name each time: not from the cache
        return allowed(daemon, name) and dot.count(name) == 1
    wait_until(asked_over_dot, timeout=10, interval=0.2, message="the DoT upstream to be asked again once the clock is set")
    assert "asking the encrypted upstreams again" in daemon.stderr()
    assert daemon.alive() and "Traceback" not in daemon.stderr()
