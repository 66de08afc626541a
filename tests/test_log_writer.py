"""The query log's writing side (`filterd/store/log_writer.py`): queue, batches, modes, rollups, retention.

Events are built the way the resolver builds them (the question key comes from a real query
packet parsed by `wire.parse_query`), written into a real temporary state.db, and read back
with plain SQL. The clock is injected: nothing here waits for wall time to pass.
"""
from __future__ import annotations

import sqlite3
import threading

from pathlib import Path

import pytest
from dnslib import DNSRecord

from conftest import wait_until

from filterd.store import log_writer, state
from filterd.dns import wire
from filterd.rules.policy import Decision
from filterd.rules.log_settings import LogConfig
from filterd.store.log_writer import QueryLog

DAY = 86400.0
NOW = 1_798_761_600.0   # 2027-01-01 00:00 UTC, on an hour boundary (a year past the clock floor)

ALLOWED = Decision("allow", "default", "allowed: no rule blocks it")
GAMBLING = Decision("block", "category", "category Gambling (list gambling, pokerstars.com)",
                    category="gambling", list_id="gambling", matched="pokerstars.com", ede=15)
OWN_BLOCK = Decision("block", "profile_block", "blocked by the kids profile's block list (example.org)",
                     matched="example.org", ede=17)
BYPASS = Decision("nxdomain", "bypass", "bypass protection: Firefox's DNS-over-HTTPS canary is turned off here",
                  matched="use-application-dns.net", ede=15)
CSAM = Decision("block", "csam", "blocked: known child sexual abuse material (protected category)",
                category="csam", ede=15)
SAFESEARCH = Decision("rewrite", "safesearch", "SafeSearch: answered with forcesafesearch.google.com",
                      target="forcesafesearch.google.com", matched="www.google.com")


class FakeClock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def question_key(name: str, qtype: str = "A", dnssec_ok: bool = False) -> tuple[bytes, int]:
    """The cache key and qtype the resolver would log for a query, from a real packet."""
    record = DNSRecord.question(name, qtype)
    if dnssec_ok:
        from dnslib import EDNS0
        record.add_ar(EDNS0(flags="do"))
    query = wire.parse_query(record.pack())
    return query.key, query.qtype


def event(name: str, decision: Decision = ALLOWED, ts: float = NOW, client: str = "192.168.1.10",
          device: str | None = "tablet", profile: str = "kids", qtype: str = "A", rcode: int = 0,
          latency_ms: float | None = None, mode: str = "full", dnssec_ok: bool = False) -> tuple:
    key, qtype_number = question_key(name, qtype, dnssec_ok)
    return (ts, client, device, profile, key, qtype_number, decision, rcode, latency_ms, mode)


@pytest.fixture
def db_file(tmp_path):
    path = state.db_path(tmp_path)
    state.connect(path).close()
    return path


@pytest.fixture
def conn(db_file):
    connection = state.connect(db_file)
    yield connection
    connection.close()


def rows(conn, where: str = "1") -> list[dict]:
    cursor = conn.execute(f"SELECT * FROM queries WHERE {where} ORDER BY id")
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def count(conn, table: str = "queries") -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# ---------------------------------------------------------------- rows


def test_flush_writes_each_event_as_a_row_with_its_decision(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.record(event("www.example.com", ALLOWED, ts=NOW + 1, qtype="AAAA", latency_ms=12.5))
    log.record(event("pokerstars.com", GAMBLING, ts=NOW + 2))
    log.record(event("nx.example.com", ALLOWED, ts=NOW + 3, rcode=3, latency_ms=3.0))
    assert log.flush(conn) == 3
    assert log.written == 3 and log.pending == []
    first, second, third = rows(conn)
    assert {k: first[k] for k in first if k != "id"} == {
        "ts": NOW + 1, "device": "tablet", "client": "192.168.1.10", "name": "www.example.com",
        "qtype": 28, "action": "allow", "rule": "default", "reason": "allowed: no rule blocks it",
        "category": None, "rcode": 0, "latency_ms": 12.5, "profile": "kids", "clock_doubtful": 0}
    assert (second["name"], second["action"], second["rule"], second["category"], second["reason"]) == \
        ("pokerstars.com", "block", "category", "gambling", GAMBLING.reason)
    assert second["latency_ms"] is None
    assert (third["name"], third["rcode"]) == ("nx.example.com", 3)
    assert first["id"] < second["id"] < third["id"]


def test_names_are_logged_lowercase_and_without_the_dnssec_flag(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.record(event("WWW.Example.COM", dnssec_ok=True))
    log.flush(conn)
    assert [r["name"] for r in rows(conn)] == ["www.example.com"]


def test_flush_with_nothing_queued_writes_nothing(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    assert log.flush(conn) == 0
    assert count(conn) == 0


def test_an_unknown_device_is_logged_by_its_address(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.record(event("example.com", client="192.168.1.77", device=None, profile="default"))
    log.flush(conn)
    assert [(r["device"], r["client"], r["profile"]) for r in rows(conn)] == [(None, "192.168.1.77", "default")]
    assert conn.execute("SELECT device FROM rollups").fetchall() == [("192.168.1.77",)]


# ---------------------------------------------------------------- modes


def test_anonymous_mode_keeps_the_row_and_counts_but_not_the_name(db_file, conn):
    log = QueryLog(db_file, LogConfig(mode="anonymous"))
    log.record(event("secret-hobby.example", ALLOWED, mode="anonymous"))
    log.record(event("example.org", OWN_BLOCK, mode="anonymous"))
    log.record(event("pokerstars.com", GAMBLING, mode="anonymous"))
    log.flush(conn)
    logged = rows(conn)
    assert [(r["name"], r["action"], r["rule"], r["category"], r["device"]) for r in logged] == [
        (None, "allow", "default", None, "tablet"),
        (None, "block", "profile_block", None, "tablet"),
        (None, "block", "category", "gambling", "tablet")]
    # the reason names the matched domain, so it goes too: only the rule is kept
    assert [r["reason"] for r in logged] == ["default", "profile_block", "category"]
    dump = "\n".join(conn.iterdump())
    for name in ("secret-hobby", "example.org", "pokerstars"):
        assert name not in dump
    assert conn.execute("SELECT sum(queries), sum(blocked) FROM rollups").fetchone() == (3, 2)
    assert conn.execute("SELECT queries FROM clients_seen").fetchone() == (3,)


def test_off_mode_writes_nothing_at_all(db_file, conn):
    log = QueryLog(db_file, LogConfig(mode="off"))
    log.record(event("example.com", mode="off"))
    log.record(event("pokerstars.com", GAMBLING, mode="off"))
    assert log.flush(conn) == 0
    assert (count(conn), count(conn, "rollups"), count(conn, "clients_seen")) == (0, 0, 0)


def test_each_event_carries_its_own_mode(db_file, conn):
    """A profile's `log` setting wins over the global one: the mode travels with the event."""
    log = QueryLog(db_file, LogConfig(mode="full"))
    log.record(event("kid.example", client="192.168.1.10", device="tablet", mode="full"))
    log.record(event("parent.example", client="192.168.1.20", device="phone", mode="off"))
    log.record(event("guest.example", client="192.168.1.30", device="guest", mode="anonymous"))
    log.flush(conn)
    assert [(r["device"], r["name"]) for r in rows(conn)] == [("tablet", "kid.example"), ("guest", None)]
    assert {row[0] for row in conn.execute("SELECT client FROM clients_seen")} == {"192.168.1.10", "192.168.1.30"}


def test_the_protected_category_is_logged_as_its_category_only(db_file, conn):
    log = QueryLog(db_file, LogConfig(mode="full"))
    log.record(event("bad.example", CSAM, mode="full"))
    log.record(event("www.bad.example", CSAM, mode="anonymous"))
    log.flush(conn)
    assert [(r["name"], r["action"], r["rule"], r["category"], r["reason"]) for r in rows(conn)] == \
        [(None, "block", "csam", "csam", CSAM.reason)] * 2
    assert "bad.example" not in "\n".join(conn.iterdump())
    assert conn.execute("SELECT category, queries, blocked FROM rollups").fetchall() == [("csam", 2, 2)]


# ---------------------------------------------------------------- rollups and clients seen


def test_rollups_count_queries_and_blocks_per_hour_device_and_category(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    hour = int(NOW // 3600)
    for i in range(3):
        log.record(event(f"site{i}.example", ALLOWED, ts=NOW + 10 + i))
    log.record(event("pokerstars.com", GAMBLING, ts=NOW + 20))
    log.record(event("use-application-dns.net", BYPASS, ts=NOW + 30))
    log.record(event("www.google.com", SAFESEARCH, ts=NOW + 40))
    log.record(event("later.example", ALLOWED, ts=NOW + 3600 + 5))
    log.record(event("phone.example", ALLOWED, ts=NOW + 50, client="192.168.1.20", device="phone"))
    log.flush(conn)
    # a second batch adds to the same hour instead of replacing it
    log.record(event("pokerstars.net", GAMBLING, ts=NOW + 60))
    log.flush(conn)
    assert conn.execute("SELECT hour, device, category, queries, blocked FROM rollups ORDER BY 1, 2, 3").fetchall() == [
        (hour, "phone", "", 1, 0),
        (hour, "tablet", "", 5, 1),          # 3 allowed, the bypass NXDOMAIN (blocked), the rewrite
        (hour, "tablet", "gambling", 2, 2),
        (hour + 1, "tablet", "", 1, 0),
    ]


def test_clients_seen_keeps_first_and_last_seen_counts_and_mac(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.neighbours = {"192.168.1.10": "aa:bb:cc:dd:ee:01"}
    log.record(event("a.example", ts=NOW + 1))
    log.record(event("b.example", ts=NOW + 2))
    log.record(event("c.example", ts=NOW + 3, client="192.168.1.77", device=None, profile="default"))
    log.flush(conn)
    log.neighbours = {}   # the neighbour table forgot it: the MAC already known is kept
    log.record(event("d.example", ts=NOW + 100))
    log.flush(conn)
    seen = {row[0]: row[1:] for row in conn.execute(
        "SELECT client, mac, device, first_seen, last_seen, queries FROM clients_seen")}
    assert seen == {
        "192.168.1.10": ("aa:bb:cc:dd:ee:01", "tablet", NOW + 1, NOW + 100, 3),
        "192.168.1.77": (None, None, NOW + 3, NOW + 3, 1),
    }


# ---------------------------------------------------------------- the queue


def test_a_full_queue_counts_drops_and_record_never_blocks(db_file, conn):
    log = QueryLog(db_file, LogConfig(queue_size=100))
    one = event("flood.example")
    for _ in range(250):
        assert log.record(one) is None
    assert len(log.pending) == 100
    assert log.dropped == 150
    assert log.flush(conn) == 100
    log.record(one)                    # room again once the writer has taken the batch
    assert len(log.pending) == 1 and log.dropped == 150


def test_record_does_not_wait_for_a_locked_db_and_the_events_arrive_after(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.start()
    blocker = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN EXCLUSIVE")      # e.g. the web UI holding a long write
        for i in range(6_000):                 # more than a batch: the writer is woken and waits
            log.record(event(f"n{i % 50}.example", ts=NOW + i))
        assert count(conn) == 0
        blocker.execute("COMMIT")
        wait_until(lambda: count(conn) == 6_000, timeout=10.0, message="the 6,000 queued events to be written")
    finally:
        blocker.close()
        log.stop()
    assert log.dropped == 0 and log.written == 6_000


def test_stop_writes_what_is_queued(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.start()
    for i in range(10):
        log.record(event(f"last{i}.example", ts=NOW + i))
    log.stop()
    assert count(conn) == 10


def test_a_failed_write_is_counted_as_dropped_and_the_writer_goes_on(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    readonly = state.connect(db_file, readonly=True)
    try:
        log.record(event("a.example"))
        log.record(event("b.example"))
        assert log.flush(readonly) == 0
    finally:
        readonly.close()
    assert log.dropped == 2 and log.written == 0
    log.record(event("c.example"))
    assert log.flush(conn) == 1
    assert [r["name"] for r in rows(conn)] == ["c.example"]


def test_the_writer_thread_writes_within_its_flush_interval(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.start()
    try:
        log.record(event("soon.example"))
        wait_until(lambda: count(conn) == 1, timeout=5 * log_writer.FLUSH_INTERVAL_S,
                   message="the writer's next flush")
    finally:
        log.stop()


def test_events_recorded_from_many_threads_are_all_written(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.start()
    per_thread, threads = 3_000, 4

    def produce(n: int) -> None:
        for i in range(per_thread):
            log.record(event(f"t{n}-{i % 100}.example", ts=NOW + i))

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        log.stop()
    assert log.dropped == 0
    assert count(conn) == per_thread * threads


# ---------------------------------------------------------------- retention


def fill_days_ago(log: QueryLog, conn, days: list[float]) -> None:
    for age in days:
        log.record(event(f"age{age}.example", ts=NOW - age * DAY))
    log.flush(conn)


def test_retention_deletes_rows_past_retention_days_and_keeps_rollups(db_file, conn):
    clock = FakeClock()
    # the monotonic clock runs with the wall clock: the 364 days below are no jump
    log = QueryLog(db_file, LogConfig(retention_days=30, rollup_days=365), clock=clock, monotonic=clock)
    fill_days_ago(log, conn, [0.5, 29.9, 30.1, 45, 364, 366])
    log.enforce_retention(conn)
    assert [r["name"] for r in rows(conn)] == ["age0.5.example", "age29.9.example"]
    hours = sorted(row[0] for row in conn.execute("SELECT hour FROM rollups"))
    assert hours == sorted(int((NOW - age * DAY) // 3600) for age in (0.5, 29.9, 30.1, 45, 364))
    # 364 days on, the rollups of all but the newest day are past rollup_days
    clock.now += 364 * DAY
    log.enforce_retention(conn)
    assert count(conn) == 0
    assert [row[0] for row in conn.execute("SELECT hour FROM rollups")] == [int((NOW - 0.5 * DAY) // 3600)]


def test_retention_deletes_in_chunks_until_done(db_file, conn, monkeypatch):
    monkeypatch.setattr(log_writer, "DELETE_CHUNK", 7)
    log = QueryLog(db_file, LogConfig(retention_days=1), clock=FakeClock())
    fill_days_ago(log, conn, [2] * 50 + [0.1] * 3)
    log.enforce_retention(conn)
    assert count(conn) == 3


def test_retention_forgets_overrides_that_ended_long_ago(db_file, conn):
    clock = FakeClock()
    log = QueryLog(db_file, LogConfig(retention_days=30), clock=clock)
    conn.executemany(
        "INSERT INTO overrides (kind, subject_kind, subject, created, until, ended) VALUES (?, ?, ?, ?, ?, ?)",
        [("pause", "device", "old-ended", NOW - 60 * DAY, None, NOW - 40 * DAY),
         ("allow", "device", "old-expired", NOW - 60 * DAY, NOW - 40 * DAY, None),
         ("pause", "device", "recent", NOW - 2 * DAY, NOW - DAY, None),
         ("pause", "profile", "until-resumed", NOW - 90 * DAY, None, None)])
    log.enforce_retention(conn)
    assert {row[0] for row in conn.execute("SELECT subject FROM overrides")} == {"recent", "until-resumed"}


def test_the_writer_enforces_retention_when_it_starts(db_file, conn):
    clock = FakeClock()
    log = QueryLog(db_file, LogConfig(retention_days=7), retention=True, clock=clock)
    fill_days_ago(log, conn, [10, 1])
    log.start()
    try:
        wait_until(lambda: count(conn) == 1, timeout=10.0, message="the old row to be deleted")
    finally:
        log.stop()
    assert [r["name"] for r in rows(conn)] == ["age1.example"]


def test_a_worker_without_retention_deletes_nothing(db_file, conn):
    log = QueryLog(db_file, LogConfig(retention_days=7), retention=False, clock=FakeClock())
    fill_days_ago(log, conn, [10])
    log.start()
    log.record(event("fresh.example"))
    log.stop()                         # the final flush has run: so would retention have
    assert count(conn) == 2


# ---------------------------------------------------------------- CPU budget


class FakeClocks:
    def __init__(self):
        self.wall = 100.0
        self.dns = 50.0


def test_the_writer_never_rests_while_the_dns_thread_has_time_to_spare():
    from filterd.store.log_writer import CpuBudget
    clocks = FakeClocks()
    budget = CpuBudget(dns_cpu=lambda: clocks.dns, clock=lambda: clocks.wall)
    for _ in range(5):          # a busy house: DNS thread 30 % of a core, the writer 30 %
        clocks.wall += 1.0
        clocks.dns += 0.3
        assert budget.rest_after(0.3) == 0.0


def test_a_saturated_dns_thread_makes_the_writer_keep_to_its_share():
    from filterd.store.log_writer import CpuBudget
    clocks = FakeClocks()
    budget = CpuBudget(dns_cpu=lambda: clocks.dns, share=0.1, clock=lambda: clocks.wall)
    clocks.wall += 1.0
    clocks.dns += 0.8           # a flood: DNS 80 %, and the writer's 20 % fills the core
    rest = budget.rest_after(0.2)
    assert rest == pytest.approx(0.2 * 9)   # 0.2 s of work, then rest: 10 % of the time
    clocks.wall += 0.05         # too short a window to judge: no rest, no verdict yet
    assert budget.rest_after(0.01) == 0.0


def test_the_writers_rest_is_bounded_so_it_still_flushes():
    from filterd.store.log_writer import CpuBudget
    clocks = FakeClocks()
    budget = CpuBudget(dns_cpu=lambda: clocks.dns, share=0.01, clock=lambda: clocks.wall)
    clocks.wall += 2.0
    clocks.dns += 1.9
    assert budget.rest_after(1.0) == 5.0


# ---------------------------------------------------------------- a clock not to be trusted


def test_a_clock_jumping_a_year_forward_deletes_nothing():
    clock, monotonic = FakeClock(), FakeClock(0.0)
    retention = log_writer.RetentionClock()
    assert retention.check(clock(), monotonic()) == (NOW, None)
    clock.now += 365 * DAY          # a bad NTP answer; the monotonic clock says an hour passed
    monotonic.now += 3600
    now, doubt = retention.check(clock(), monotonic())
    assert now is None and "jumped +365.0 days" in doubt
    clock.now += 3600
    monotonic.now += 3600
    # later passes age rows by the clock they were written with: nothing looks a year old
    assert retention.check(clock(), monotonic())[0] == NOW + 2 * 3600


def test_a_clock_before_filterd_existed_deletes_nothing():
    retention = log_writer.RetentionClock()
    assert retention.check(86_400.0, 5.0) == (None, "the clock reads 1970-01-02, before filterd existed")


def test_a_clock_set_from_1970_skips_one_pass_and_then_deletes_by_the_clock_it_was_set_to():
    retention = log_writer.RetentionClock()
    assert retention.check(10_800.0, 5.0)[0] is None          # booted at 1970
    now, doubt = retention.check(NOW, 65.0)                    # NTP set it a minute later
    assert now is None and "jumped" in doubt
    assert retention.check(NOW + 3600, 3665.0) == (NOW + 3600, None)   # not 57 years of rows kept


def test_the_log_survives_a_clock_jump_and_counts_the_skipped_pass(db_file, conn):
    clock, monotonic = FakeClock(), FakeClock(0.0)
    log = QueryLog(db_file, LogConfig(retention_days=30), clock=clock, monotonic=monotonic)
    fill_days_ago(log, conn, [0.5, 2, 29])
    log.enforce_retention(conn)
    clock.now += 400 * DAY
    monotonic.now += 3600
    log.enforce_retention(conn)
    clock.now += 3600
    monotonic.now += 3600
    log.enforce_retention(conn)

    assert count(conn) == 3 and log.retention_skipped == 1


def test_rows_logged_on_a_clock_before_filterd_existed_are_marked_and_kept_by_retention(db_file, conn):
    clock = FakeClock()
    log = QueryLog(db_file, LogConfig(retention_days=30), clock=clock, monotonic=clock)
    fill_days_ago(log, conn, [40])
    log.record(event("booted-in-1970.example", ts=120.0))
    fill_days_ago(log, conn, [1])
    log.enforce_retention(conn)
    assert [(r["name"], r["clock_doubtful"]) for r in rows(conn)] == [
        ("booted-in-1970.example", 1), ("age1.example", 0)]
    # once a row logged after it is past retention, the marked row goes too
    clock.now += 40 * DAY
    log.enforce_retention(conn)
    assert count(conn) == 0


# ---------------------------------------------------------------- losses are counted


def test_a_full_disk_is_counted_as_such(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    conn.execute("PRAGMA max_page_count = 1")   # SQLITE_FULL on the next page needed
    try:
        for i in range(200):
            log.record(event(f"full{i}.example"))
        assert log.flush(conn) == 0
    finally:
        conn.execute("PRAGMA max_page_count = 1073741823")
    assert log.dropped == 200 and log.write_failures == 1 and log.disk_full == 1
    assert "full" in log.last_error
    log.record(event("room-again.example"))
    assert log.flush(conn) == 1 and log.last_error is None


def test_a_deleted_state_db_is_reopened_and_written_into(db_file, conn):
    log = QueryLog(db_file, LogConfig())
    log.start()
    try:
        log.record(event("before.example"))
        wait_until(lambda: count(conn) == 1, message="the first row")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        log.record(event("after.example"))

        def written_into_the_new_file() -> bool:
            if not db_file.exists():
                return False
            try:
                fresh = state.connect(db_file, readonly=True)
            except state.StateError:
                return False
            try:
                return [r["name"] for r in rows(fresh)] == ["after.example"]
            except sqlite3.Error:   # created, not yet migrated
                return False
            finally:
                fresh.close()
        wait_until(written_into_the_new_file, message="the row in a new state DB")
    finally:
        log.stop()
    assert log.reopened == 1
