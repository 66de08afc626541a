"""`filterd/store/status.py`: the daemon's status rows in a real, migrated state DB — what the
dashboard, the API and the parents' alerts read to say whether the filter is running."""
from __future__ import annotations

import dataclasses

import pytest

from filterd.store import state, status

NOW = 1_800_000_000.0


@pytest.fixture
def db(tmp_path):
    connection = state.connect(tmp_path / "state.db")
    yield connection
    connection.close()


def worker(pid: int = 4242, updated: float = NOW, **changes) -> status.WorkerStatus:
    row = status.WorkerStatus(pid=pid, worker=pid % 100, started=NOW - 600, updated=updated, config_mtime=NOW - 3600,
                              last_reload=NOW - 60, last_error=None, log_dropped=0, upstreams=2,
                              upstreams_failing=0)
    return dataclasses.replace(row, **changes)


def test_a_written_row_is_read_back_with_every_field(db):
    row = worker(last_error='profiles.kids: "x" is not a preset (line 3)', log_dropped=7, upstreams_failing=1)
    status.write(db, row)
    assert status.read_all(db) == [row]


def test_a_second_write_refreshes_the_row_but_keeps_when_the_worker_started(db):
    status.write(db, worker())
    status.write(db, worker(updated=NOW + 5, started=NOW, log_dropped=3, last_error="boom"))
    [row] = status.read_all(db)
    assert row.updated == NOW + 5 and row.log_dropped == 3 and row.last_error == "boom"
    assert row.started == NOW - 600          # the first report's start stays


def test_rows_are_read_most_recently_updated_first(db):
    status.write(db, worker(pid=1, updated=NOW - 10))
    status.write(db, worker(pid=2, updated=NOW))
    status.write(db, worker(pid=3, updated=NOW - 5))
    assert [r.pid for r in status.read_all(db)] == [2, 3, 1]


def test_a_worker_that_stops_cleanly_takes_its_row_with_it(db):
    status.write(db, worker(pid=1))
    status.write(db, worker(pid=2))
    status.remove(db, 1)
    assert [r.pid for r in status.read_all(db)] == [2]
    status.remove(db, 99)                     # an unknown pid: nothing happens
    assert len(status.read_all(db)) == 1


def test_rows_survive_a_new_connection(tmp_path):
    path = tmp_path / "state.db"
    first = state.connect(path)
    status.write(first, worker())
    first.close()
    second = state.connect(path)
    try:
        assert [r.pid for r in status.read_all(second)] == [4242]
    finally:
        second.close()


def test_a_stale_row_is_not_alive(db):
    status.write(db, worker(pid=1, updated=NOW - status.STALE_S - 1))     # stopped reporting
    status.write(db, worker(pid=2, updated=NOW - 1))
    assert [r.pid for r in status.alive(status.read_all(db), now=NOW)] == [2]
    assert status.alive(status.read_all(db), now=NOW + status.STALE_S) == []


def test_a_row_exactly_stale_s_old_is_no_longer_alive():
    assert status.alive([worker(updated=NOW - status.STALE_S)], now=NOW) == []
    assert status.alive([worker(updated=NOW - status.STALE_S + 0.5)], now=NOW) != []


def test_alive_reads_the_clock_when_no_time_is_given():
    import time
    assert status.alive([worker(updated=time.time())]) != []
    assert status.alive([worker(updated=time.time() - 3600)]) == []


@pytest.mark.parametrize("upstreams, failing, down", [
    (2, 0, False),
    (2, 1, False),       # one still answers: names resolve
    (2, 2, True),
    (1, 1, True),
    (0, 0, False),       # a worker that has no upstream count yet
])
def test_upstreams_are_down_only_when_every_one_fails(upstreams, failing, down):
    assert worker(upstreams=upstreams, upstreams_failing=failing).upstreams_down is down


def test_a_row_written_by_an_older_daemon_reads_with_defaults(db):
    """Older daemons wrote no upstream columns: the migration's defaults make them zero."""
    db.execute("INSERT INTO daemon_status (pid, worker, started, updated) VALUES (7, 0, ?, ?)", (NOW, NOW))
    [row] = status.read_all(db)
    assert (row.pid, row.upstreams, row.upstreams_failing, row.upstreams_down) == (7, 0, 0, False)


def test_a_restarted_workers_row_replaces_the_dead_ones_and_extra_workers_go(db):
    """kill -9 leaves a row behind; the worker started in its place (same index) takes it over,
    and rows of workers beyond the count the daemon now runs with go too."""
    status.write(db, worker(pid=1000, worker=0))
    status.write(db, worker(pid=1001, worker=1))
    status.write(db, worker(pid=1002, worker=2))
    status.write(db, worker(pid=2000, worker=0), workers=2)
    assert sorted((r.pid, r.worker) for r in status.read_all(db)) == [(1001, 1), (2000, 0)]


# ---------------------------------------------------------------- the counters per hour


def test_what_the_counters_grew_by_is_added_to_the_hour_every_worker_shares(db):
    hour = NOW // 3600 * 3600
    first = worker(pid=1, updated=hour + 10, log_dropped=5, log_disk_full=2)
    status.write(db, first)                                         # since it started: all of it
    status.write(db, worker(pid=1, updated=hour + 15, log_dropped=8, log_disk_full=2), previous=first)
    status.write(db, worker(pid=2, updated=hour + 20, log_dropped=1, rate_limited=40))
    counters = status.health_since(db, hour)
    assert counters["log_dropped"] == 9 and counters["log_disk_full"] == 2 and counters["rate_limited"] == 40
    assert status.health_since(db, hour + 3600)["log_dropped"] == 0   # a later hour: nothing yet


def test_a_failed_write_leaves_the_growth_to_the_next_one(db):
    hour = NOW // 3600 * 3600
    first = worker(updated=hour + 10, log_dropped=3)
    status.write(db, first)
    db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON daemon_status BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(Exception, match="disk full"):
        status.write(db, worker(updated=hour + 3700, log_dropped=10), previous=first)
    db.execute("DROP TRIGGER refuse")
    status.write(db, worker(updated=hour + 3705, log_dropped=12), previous=first)   # the caller kept `first`
    assert status.health_since(db, hour)["log_dropped"] == 12
    assert status.health_since(db, hour + 3600)["log_dropped"] == 9


def test_hours_older_than_kept_are_pruned(db):
    status.write(db, worker(updated=NOW - (status.HEALTH_KEPT_H + 2) * 3600, log_dropped=1))
    status.write(db, worker(pid=2, updated=NOW, log_dropped=1))
    assert db.execute("SELECT count(*) FROM daemon_health").fetchone()[0] == 1
