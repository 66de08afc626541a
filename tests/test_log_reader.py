"""The query log's reading side (`filterd/store/log_reader.py`) and `filterd stats` (`filterd/cli.py`).

The history is written the way the daemon writes it (events through `QueryLog.flush` into a
real temporary state.db), then read back through the functions the web UI and the CLI call.
"""
from __future__ import annotations

import time

import pytest
import yaml

from filterd import cli
from filterd.store import log_reader
from filterd.store.log_reader import QueryFilter
from filterd.rules.policy import Decision
from filterd.rules.log_settings import LogConfig
from filterd.store.log_writer import QueryLog

from test_log_writer import ALLOWED, BYPASS, CSAM, GAMBLING, SAFESEARCH, conn, db_file, event  # noqa: F401

HOUR = 3600.0
DAY = 86400.0
T0 = 1_767_225_600.0    # 2026-01-01 00:00 UTC, on an hour boundary

ADULT = Decision("block", "category", "category Adult (list adult, adult.example)", category="adult",
                 list_id="adult", matched="adult.example", ede=15)
SOCIAL = Decision("block", "service", "service TikTok (tiktok.com)", service="tiktok", matched="tiktok.com", ede=15)
LOCAL = Decision("local", "filter_host", "filter.home is this filter's own web page")


def write(db_file, conn, events: list[tuple]) -> None:
    log = QueryLog(db_file, LogConfig())
    for item in events:
        log.record(item)
    log.flush(conn)


@pytest.fixture
def house(db_file, conn):
    """A small day of history: a tablet, a phone, an unknown laptop, in time order."""
    events = [
        event("www.example.com", ALLOWED, ts=T0 + 1 * HOUR + 10, latency_ms=20.0),          # 1
        event("pokerstars.com", GAMBLING, ts=T0 + 1 * HOUR + 20),                            # 2
        event("www.example.com", ALLOWED, ts=T0 + 1 * HOUR + 30),                            # 3
        event("nx.example.net", ALLOWED, ts=T0 + 2 * HOUR + 5, rcode=3, latency_ms=4.0),     # 4
        event("use-application-dns.net", BYPASS, ts=T0 + 2 * HOUR + 10),                    # 5
        event("adult.example", ADULT, ts=T0 + 2 * HOUR + 20),                                # 6
        event("www.tiktok.com", SOCIAL, ts=T0 + 3 * HOUR, client="192.168.1.20", device="phone"),   # 7
        event("pokerstars.com", GAMBLING, ts=T0 + 3 * HOUR + 1, client="192.168.1.20", device="phone"),  # 8
        event("news.example", ALLOWED, ts=T0 + 3 * HOUR + 2, client="192.168.1.20", device="phone"),  # 9
        event("pokerstars.com", GAMBLING, ts=T0 + 4 * HOUR, client="192.168.1.99", device=None,
              profile="default"),                                                            # 10
        event("www.google.com", SAFESEARCH, ts=T0 + 4 * HOUR + 1),                           # 11
        event("filter.home", LOCAL, ts=T0 + 4 * HOUR + 2),                                   # 12
        event("bad.example", CSAM, ts=T0 + 4 * HOUR + 3),                                    # 13
        event("quiet.example", ALLOWED, ts=T0 + 4 * HOUR + 4, mode="anonymous"),             # 14
    ]
    write(db_file, conn, events)
    return conn


def names(result) -> list:
    return [row.name for row in result]


def ids(result) -> list[int]:
    return [row.id for row in result]


# ---------------------------------------------------------------- recent_queries


def test_recent_queries_newest_first_with_every_field(house):
    result = log_reader.recent_queries(house, limit=3)
    assert ids(result) == [14, 13, 12]
    latest_full = log_reader.recent_queries(house, QueryFilter(text="nx.example"))[0]
    assert latest_full == log_reader.QueryRow(
        id=4, ts=T0 + 2 * HOUR + 5, device="tablet", client="192.168.1.10", name="nx.example.net", qtype=1,
        action="allow", rule="default", reason="allowed: no rule blocks it", category=None, rcode=3,
        latency_ms=4.0, profile="kids")


def test_recent_queries_page_size_is_bounded(db_file, conn):
    write(db_file, conn, [event(f"n{i}.example", ts=T0 + i) for i in range(log_reader.MAX_PAGE + 20)])
    assert len(log_reader.recent_queries(conn, limit=10_000)) == log_reader.MAX_PAGE
    assert len(log_reader.recent_queries(conn, limit=0)) == 1


def test_recent_queries_by_device_name_or_by_address_for_unknown_devices(house):
    assert ids(log_reader.recent_queries(house, QueryFilter(device="phone"))) == [9, 8, 7]
    assert ids(log_reader.recent_queries(house, QueryFilter(device="192.168.1.99"))) == [10]
    # a named device is found by its name, not by its address
    assert log_reader.recent_queries(house, QueryFilter(device="192.168.1.20")) == []


def test_recent_queries_by_action_where_blocked_means_block_and_nxdomain(house):
    assert ids(log_reader.recent_queries(house, QueryFilter(action="blocked"))) == [13, 10, 8, 7, 6, 5, 2]
    assert ids(log_reader.recent_queries(house, QueryFilter(action="nxdomain"))) == [5]
    assert ids(log_reader.recent_queries(house, QueryFilter(action="rewrite"))) == [11]
    assert ids(log_reader.recent_queries(house, QueryFilter(action="allow"))) == [14, 9, 4, 3, 1]


def test_recent_queries_by_category_combined_with_device(house):
    assert ids(log_reader.recent_queries(house, QueryFilter(category="gambling"))) == [10, 8, 2]
    assert ids(log_reader.recent_queries(house, QueryFilter(category="gambling", device="tablet"))) == [2]
    assert ids(log_reader.recent_queries(house, QueryFilter(category="csam"))) == [13]
    assert log_reader.recent_queries(house, QueryFilter(category="csam"))[0].name is None


def test_recent_queries_text_is_a_case_insensitive_substring(house):
    assert ids(log_reader.recent_queries(house, QueryFilter(text="POKER"))) == [10, 8, 2]
    assert ids(log_reader.recent_queries(house, QueryFilter(text="example.com"))) == [3, 1]


def test_recent_queries_text_matches_percent_underscore_and_backslash_literally(db_file, conn):
    write(db_file, conn, [event(n, ts=T0 + i) for i, n in enumerate(
        ["a_b.example", "axb.example", "50%off.example", "50xxoff.example", "back\\slash.example",
         "backxslash.example"])])
    assert names(log_reader.recent_queries(conn, QueryFilter(text="a_b"))) == ["a_b.example"]
    assert names(log_reader.recent_queries(conn, QueryFilter(text="50%off"))) == ["50%off.example"]
    assert names(log_reader.recent_queries(conn, QueryFilter(text="%"))) == ["50%off.example"]
    assert names(log_reader.recent_queries(conn, QueryFilter(text="_"))) == ["a_b.example"]
    assert names(log_reader.recent_queries(conn, QueryFilter(text="k\\s"))) == ["back\\slash.example"]


def test_a_text_search_reads_a_bounded_stretch_of_the_log_and_goes_on_from_its_floor(house, monkeypatch):
    monkeypatch.setattr(log_reader, "TEXT_SCAN_ROWS", 5)
    search = QueryFilter(text="poker")
    floor = log_reader.text_scan_floor(house, search)
    assert floor == 15 - 5                                  # 14 rows: ids 10..14 read first
    assert ids(log_reader.recent_queries(house, search, floor=floor)) == [10]
    floor = log_reader.text_scan_floor(house, search, before_id=10)
    assert floor == 5
    assert ids(log_reader.recent_queries(house, search, before_id=10, floor=floor)) == [8]
    assert log_reader.text_scan_floor(house, search, before_id=5) is None   # the rest is small: no floor
    assert ids(log_reader.recent_queries(house, search, before_id=5)) == [2]
    assert log_reader.text_scan_floor(house, QueryFilter(device="phone")) is None   # indexed filters need none


def test_recent_queries_by_time_range_since_inclusive_until_exclusive(house):
    window = QueryFilter(since=T0 + 2 * HOUR + 5, until=T0 + 3 * HOUR + 1)
    assert ids(log_reader.recent_queries(house, window)) == [7, 6, 5, 4]


def test_paging_with_before_id_is_stable_while_new_rows_arrive(db_file, house):
    first = log_reader.recent_queries(house, limit=5)
    write(db_file, house, [event(f"new{i}.example", ts=T0 + 5 * HOUR + i) for i in range(7)])
    second = log_reader.recent_queries(house, limit=5, before_id=first[-1].id)
    third = log_reader.recent_queries(house, limit=5, before_id=second[-1].id)
    assert ids(first) + ids(second) + ids(third) == list(range(14, 0, -1))
    assert log_reader.recent_queries(house, limit=5, before_id=1) == []
    # a filtered page goes on the same way
    blocked = log_reader.recent_queries(house, QueryFilter(action="blocked"), limit=3)
    rest = log_reader.recent_queries(house, QueryFilter(action="blocked"), limit=3, before_id=blocked[-1].id)
    assert ids(blocked) + ids(rest) == [13, 10, 8, 7, 6, 5]


# ---------------------------------------------------------------- top domains


def by_count(pairs) -> list:
    """Ties in count come in no set order: compare counts descending, names within a tie."""
    return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))


def test_top_domains_blocked_and_allowed_since(house):
    top_blocked = log_reader.top_domains(house, T0, blocked=True)
    assert top_blocked[0] == ("pokerstars.com", 3)
    assert by_count(top_blocked) == [("pokerstars.com", 3), ("adult.example", 1), ("use-application-dns.net", 1),
                                     ("www.tiktok.com", 1)]   # the csam row has no name: never listed
    top_allowed = log_reader.top_domains(house, T0, blocked=False)
    assert top_allowed[0] == ("www.example.com", 2)
    assert by_count(top_allowed) == [("www.example.com", 2), ("news.example", 1), ("nx.example.net", 1),
                                     ("www.google.com", 1)]   # rewrites count as allowed, local answers not


def test_top_domains_since_a_moment_device_and_limit(house):
    assert by_count(log_reader.top_domains(house, T0 + 3 * HOUR, blocked=True)) == \
        [("pokerstars.com", 2), ("www.tiktok.com", 1)]
    assert by_count(log_reader.top_domains(house, T0, blocked=True, device="phone")) == \
        [("pokerstars.com", 1), ("www.tiktok.com", 1)]
    assert log_reader.top_domains(house, T0, blocked=True, device="192.168.1.99") == [("pokerstars.com", 1)]
    assert log_reader.top_domains(house, T0, blocked=True, limit=1) == [("pokerstars.com", 3)]
    assert log_reader.top_domains(house, T0 + 10 * HOUR, blocked=True) == []


def test_top_domains_on_an_empty_log(conn):
    assert log_reader.top_domains(conn, T0, blocked=False) == []


# ---------------------------------------------------------------- charts from the rollups


def test_activity_by_hour_per_device(house):
    hour = lambda n: int(T0 + n * HOUR)   # noqa: E731
    assert log_reader.activity_by_hour(house, T0) == [
        (hour(1), "tablet", 3, 1),
        (hour(2), "tablet", 3, 2),
        (hour(3), "phone", 3, 2),
        (hour(4), "192.168.1.99", 1, 1),
        (hour(4), "tablet", 4, 1),
    ]
    assert log_reader.activity_by_hour(house, T0, device="phone") == [(hour(3), "phone", 3, 2)]
    assert [row[0] for row in log_reader.activity_by_hour(house, T0 + 2 * HOUR + 1800, until=T0 + 3 * HOUR + 1)] == \
        [hour(2), hour(3)]


def test_activity_by_hour_until_an_hour_boundary_excludes_that_hour(house):
    assert [row[0] for row in log_reader.activity_by_hour(house, T0 + HOUR, until=T0 + 3 * HOUR)] == \
        [int(T0 + HOUR), int(T0 + 2 * HOUR)]


def test_blocks_by_category(house):
    assert by_count(log_reader.blocks_by_category(house, T0)) == [("gambling", 3), ("adult", 1), ("csam", 1)]
    assert log_reader.blocks_by_category(house, T0)[0] == ("gambling", 3)
    assert log_reader.blocks_by_category(house, T0, device="phone") == [("gambling", 1)]
    assert by_count(log_reader.blocks_by_category(house, T0 + 4 * HOUR)) == [("csam", 1), ("gambling", 1)]


def test_totals_whole_and_per_device(house):
    assert log_reader.totals(house, T0) == (14, 7)
    assert log_reader.totals(house, T0, device="tablet") == (10, 4)
    assert log_reader.totals(house, T0, device="192.168.1.99") == (1, 1)
    assert log_reader.totals(house, T0 + 3 * HOUR) == (8, 4)
    assert log_reader.totals(house, T0 + 10 * HOUR) == (0, 0)


# ---------------------------------------------------------------- clients seen


def test_clients_seen_unnamed_devices_first_then_most_recently_active(db_file, conn):
    write(db_file, conn, [
        event("a.example", ts=T0 + 10, client="192.168.1.10", device="tablet"),
        event("b.example", ts=T0 + 50, client="192.168.1.20", device="phone"),
        event("c.example", ts=T0 + 20, client="192.168.1.99", device=None, profile="default"),
        event("d.example", ts=T0 + 5, client="192.168.1.98", device=None, profile="default"),
        event("e.example", ts=T0 + 30, client="192.168.1.10", device="tablet"),
    ])
    seen = log_reader.clients_seen(conn)
    assert [(c.client, c.device) for c in seen] == [
        ("192.168.1.99", None), ("192.168.1.98", None), ("192.168.1.20", "phone"), ("192.168.1.10", "tablet")]
    tablet = seen[-1]
    assert (tablet.first_seen, tablet.last_seen, tablet.queries) == (T0 + 10, T0 + 30, 2)
    assert [c.client for c in log_reader.devices_active(conn, T0 + 20)] == ["192.168.1.99", "192.168.1.20",
                                                                         "192.168.1.10"]


# ---------------------------------------------------------------- filterd stats


@pytest.fixture
def stats_config(tmp_path, db_file):
    """A config whose data_dir holds db_file, with the tablet and phone of the history above."""
    config = {
        "timezone": "UTC", "data_dir": str(db_file.parent),
        "dns": {"upstreams": ["udp://127.0.0.1:1"]},
        "profiles": {"kids": {"preset": "child"}},
        "devices": [{"name": "tablet", "ip": "192.168.1.10", "profile": "kids"},
                    {"name": "phone", "ip": "192.168.1.20", "profile": "kids"}],
    }
    path = tmp_path / "filterd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def recent_house(db_file, conn):
    """History around now (stats reads relative to the clock): 3 days ago, then 2 h ago (rows are
    written in time order, as the daemon writes them)."""
    now = time.time()
    write(db_file, conn, [
        event("casino.example", GAMBLING, ts=now - 3 * DAY, client="192.168.1.20", device="phone"),
        event("www.example.com", ALLOWED, ts=now - 2 * HOUR),
        event("pokerstars.com", GAMBLING, ts=now - 2 * HOUR + 1),
        event("pokerstars.com", GAMBLING, ts=now - 2 * HOUR + 2),
        event("adult.example", ADULT, ts=now - 2 * HOUR + 3),
        event("www.tiktok.com", SOCIAL, ts=now - 2 * HOUR + 4, client="192.168.1.20", device="phone"),
        event("news.example", ALLOWED, ts=now - 2 * HOUR + 5, client="192.168.1.20", device="phone"),
    ])
    return now


def run_stats(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["stats", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_prints_totals_and_each_device(capsys, stats_config, recent_house):
    code, out, _ = run_stats(capsys, "--config", str(stats_config))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "since 24h ago:"
    assert lines[1] == "  6 queries, 4 blocked (66.7%)"
    assert "phone: 2 queries, 1 blocked (50.0%)" in lines
    assert "tablet: 4 queries, 3 blocked (75.0%)" in lines
    tablet = out[out.index("tablet:"):]
    assert "  top blocked: pokerstars.com (2), adult.example (1)" in tablet
    assert "  blocked by category: Gambling (2), Adult" in tablet
    assert "casino.example" not in out     # three days ago: outside the last 24 hours


def test_stats_for_one_device_over_a_longer_span(capsys, stats_config, recent_house):
    code, out, _ = run_stats(capsys, "--config", str(stats_config), "--device", "phone", "--since", "7d")
    assert code == 0
    assert out.splitlines()[:2] == ["since 7d ago:", "  3 queries, 2 blocked (66.7%)"]
    assert "tablet" not in out
    assert "phone: 3 queries, 2 blocked (66.7%)" in out
    assert "casino.example (1)" in out and "www.tiktok.com (1)" in out


def test_stats_for_a_device_nobody_named_or_saw_says_so_instead_of_printing_zeros(capsys, stats_config,
                                                                                   recent_house):
    code, out, err = run_stats(capsys, "--config", str(stats_config), "--device", "fone")
    assert code == 2 and out == ""
    assert err.startswith("filterd: no device named or seen as 'fone'")
    code, out, _ = run_stats(capsys, "--config", str(stats_config), "--device", "192.168.1.20")
    assert code == 0                      # an address the daemon has seen is fine


def test_stats_with_a_bad_since_says_how_to_write_it(capsys, stats_config, recent_house):
    code, out, err = run_stats(capsys, "--config", str(stats_config), "--since", "yesterday")
    assert code == 2
    assert err.startswith("filterd: --since ") and "30m, 1h" in err


def test_stats_without_a_query_log_yet(capsys, tmp_path):
    config = tmp_path / "filterd.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "empty"), "dns": {"upstreams": ["udp://127.0.0.1:1"]}}))
    code, out, _ = run_stats(capsys, "--config", str(config))
    assert code == 0
    assert out.startswith("no query log yet (") and "is the daemon running?" in out


def test_stats_on_an_empty_log(capsys, stats_config, db_file):
    code, out, _ = run_stats(capsys, "--config", str(stats_config))
    assert code == 0
    assert out.splitlines() == ["since 24h ago:", "  0 queries, 0 blocked (–)"]


def test_the_pages_read_the_log_through_the_reader_and_write_no_sql_of_their_own():
    """The web UI's blueprints go through log_reader (and the other store modules) for what the
    log says: a page's own SELECT on the log tables would drift from the reader's."""
    import re
    from pathlib import Path

    webui = Path(__file__).resolve().parent.parent / "webui"
    offenders = [f"{path.name}: {match}" for path in sorted(webui.glob("*.py"))
                 for match in re.findall(r"FROM (?:queries|name_rollups|rollups)\b", path.read_text())]
    assert offenders == []
