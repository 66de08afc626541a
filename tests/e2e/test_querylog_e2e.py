"""The query log end to end: the real daemon (`python -m filterd run`) answers real DNS queries
from a stand-in upstream, and what it logged is read back from `data_dir/state.db`.

Devices are told apart by their loopback source address (127.0.0.1, .2, .3 all reach the
daemon). The writer flushes about once a second, so every check polls the DB with a deadline.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from conftest import wait_until as poll_until

from filterd.store import state

LOG_DEADLINE_S = 15.0
READY_PROBE = "ready.probe.invalid"     # the conftest's readiness probe (ANY), logged like any query


# ---------------------------------------------------------------- helpers


def wait_until(predicate, timeout: float = LOG_DEADLINE_S, message: str = "condition"):
    """conftest's poller with the log's deadline (the writer commits about once a second)."""
    return poll_until(predicate, timeout=timeout, interval=0.05, message=message)


def udp_upstream(port: int) -> str:
    return f"udp://127.0.0.1:{port}"


def db_of(daemon) -> Path:
    return state.db_path(Path(daemon.config["data_dir"]))


def query_db(daemon, sql: str, args=()) -> list[tuple]:
    """Read the daemon's state.db as the web UI would, while the daemon writes it."""
    path = db_of(daemon)
    if not path.exists():
        return []
    conn = state.connect(path, readonly=True)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:   # the daemon has not created its tables yet
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def logged(daemon, where: str, args=()) -> list[dict]:
    path = db_of(daemon)
    if not path.exists():
        return []
    conn = state.connect(path, readonly=True)
    try:
        cursor = conn.execute(f"SELECT * FROM queries WHERE {where} ORDER BY id", args)
        columns = [c[0] for c in cursor.description]
        return [dict(zip(columns, row)) for row in cursor]
    finally:
        conn.close()


def wait_for_rows(daemon, where: str, args=(), at_least: int = 1, message: str | None = None) -> list[dict]:
    return wait_until(lambda: (rows := logged(daemon, where, args)) and len(rows) >= at_least and rows,
                      message=message or f"{at_least} logged row(s) where {where} {args}")


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype in (QTYPE.A, QTYPE.AAAA)]


# ---------------------------------------------------------------- the house daemon: full log


@pytest.fixture(scope="module")
def csam_list(tmp_path_factory) -> Path:
    """A hashed list for the protected category, as the IWF publishes them: no names in clear."""
    path = tmp_path_factory.mktemp("lists") / "iwf.sha256"
    path.write_text("# test list\n" + hashlib.sha256(b"bad.example").hexdigest() + "\n")
    return path


@pytest.fixture(scope="module")
def house(module_daemons, standin, csam_list):
    """The kids' tablet at 127.0.0.1 with the child preset; every query logged in full."""
    return module_daemons([udp_upstream(standin.port)], extra={
        "profiles": {"kids": {"preset": "child"}},
        "devices": [{"name": "tablet", "ip": "127.0.0.1", "profile": "kids"}],
        "lists": [{"id": "iwf", "path": str(csam_list), "category": "csam", "format": "sha256"}],
        "log": {"mode": "full"},
    })


def test_an_allowed_query_is_logged_with_its_device_decision_and_upstream_latency(house, standin):
    reply = house.ask("allowed-log.test")
    assert reply.header.rcode == RCODE.NOERROR and addresses(reply)
    again = house.ask("allowed-log.test")         # from the cache this time
    assert addresses(again) == addresses(reply)
    house.ask("allowed-log.test", "AAAA")
    rows = wait_for_rows(house, "name = ?", ("allowed-log.test",), at_least=3)
    first, cached, aaaa = rows
    assert {k: first[k] for k in ("device", "client", "name", "qtype", "action", "rule", "reason", "category",
                                  "rcode", "profile")} == {
        "device": "tablet", "client": "127.0.0.1", "name": "allowed-log.test", "qtype": 1, "action": "allow",
        "rule": "default", "reason": "allowed: no rule blocks it", "category": None, "rcode": 0,
        "profile": "kids"}
    assert first["latency_ms"] is not None and first["latency_ms"] >= 0    # went upstream
    assert cached["latency_ms"] is None                                    # answered from the cache
    assert aaaa["qtype"] == 28 and aaaa["latency_ms"] is not None
    assert abs(first["ts"] - time.time()) < 600
    assert standin.count("allowed-log.test") == 1


def test_a_category_blocked_query_is_logged_with_its_category_and_reason(house, standin):
    reply = house.ask("pokerstars.com")
    assert reply.header.rcode == RCODE.NOERROR      # blockpage mode: answered, not with the real address
    house.ask("www.pokerstars.com", "AAAA")
    rows = wait_for_rows(house, "name IN ('pokerstars.com', 'www.pokerstars.com')", at_least=2)
    for row in rows:
        assert (row["device"], row["client"], row["action"], row["rule"], row["category"], row["profile"]) == \
            ("tablet", "127.0.0.1", "block", "category", "gambling", "kids")
        assert row["reason"].startswith("category Gambling")
        assert row["latency_ms"] is None and row["rcode"] == 0
    assert [row["qtype"] for row in rows] == [1, 28]
    assert standin.count("pokerstars.com") == 0       # never asked upstream
    blocked = query_db(house, "SELECT sum(blocked) FROM rollups WHERE device = 'tablet' AND category = 'gambling'")
    assert blocked[0][0] >= 2


def test_an_upstream_nxdomain_is_logged_with_its_rcode(house):
    reply = house.ask("nx.logged.test")
    assert reply.header.rcode == RCODE.NXDOMAIN
    (row,) = wait_for_rows(house, "name = ?", ("nx.logged.test",))
    assert (row["action"], row["rule"], row["rcode"]) == ("allow", "default", 3)


def test_a_bypass_canary_is_logged_as_nxdomain(house):
    reply = house.ask("use-application-dns.net")
    assert reply.header.rcode == RCODE.NXDOMAIN
    (row,) = wait_for_rows(house, "name = ?", ("use-application-dns.net",))
    assert (row["action"], row["rule"], row["rcode"]) == ("nxdomain", "bypass", 3)


def test_the_tablet_is_in_clients_seen_and_the_hourly_rollups(house):
    house.ask("seen-check.test")
    wait_for_rows(house, "name = ?", ("seen-check.test",))
    seen = query_db(house, "SELECT device, queries, first_seen <= last_seen FROM clients_seen WHERE client = '127.0.0.1'")
    assert seen and seen[0][0] == "tablet" and seen[0][1] >= 1 and seen[0][2] == 1
    conn = state.connect(db_of(house), readonly=True)
    try:
        conn.execute("BEGIN")          # one snapshot: rows and rollups are written in one transaction
        rows = conn.execute("SELECT count(*) FROM queries WHERE device = 'tablet'").fetchone()[0]
        rollup = conn.execute("SELECT sum(queries) FROM rollups WHERE device = 'tablet'").fetchone()[0]
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert rollup == rows > 0


def test_the_protected_category_is_blocked_and_logged_without_its_name(house, standin):
    for name, qtype in (("bad.example", "A"), ("www.bad.example", "A"), ("bad.example", "AAAA")):
        reply = house.ask(name, qtype)
        assert not any(a.startswith("198.18.") for a in addresses(reply))
    rows = wait_for_rows(house, "rule = 'csam'", at_least=3)
    for row in rows:
        assert (row["name"], row["action"], row["category"], row["device"]) == (None, "block", "csam", "tablet")
        assert "bad.example" not in (row["reason"] or "")
    assert standin.count("bad.example") == 0 and standin.count("www.bad.example") == 0
    conn = state.connect(db_of(house), readonly=True)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert "bad.example" not in dump
    assert "bad.example" not in house.stderr()     # nor in the daemon's own (debug) log


def test_a_cname_cloaked_block_is_logged_as_blocked(house, standin):
    standin.add("cloaked-log.test. 300 IN CNAME pokerstars.com.")
    reply = house.ask("cloaked-log.test")
    assert "198.18." not in " ".join(addresses(reply))   # answered blocked (README: CNAME cloaking)
    house.ask("cloaked-log.test")                        # and again from the cache
    rows = wait_for_rows(house, "name = ?", ("cloaked-log.test",), at_least=2)
    assert [(r["action"], r["category"]) for r in rows] == [("block", "gambling")] * 2


# ---------------------------------------------------------------- modes: global and per profile


def test_anonymous_globally_off_and_full_per_profile(daemons, standin):
    daemon = daemons([udp_upstream(standin.port)], extra={
        "log": {"mode": "anonymous"},
        "profiles": {"kids": {"preset": "child"},                     # inherits anonymous
                     "parents": {"preset": "adult", "log": "off"},
                     "guests": {"preset": "teen", "log": "full"}},
        "devices": [{"name": "tablet", "ip": "127.0.0.1", "profile": "kids"},
                    {"name": "parent-phone", "ip": "127.0.0.2", "profile": "parents"},
                    {"name": "guest-laptop", "ip": "127.0.0.3", "profile": "guests"}],
    })
    # The parent first: once the guest's later queries are in the DB, the parent's would be too.
    daemon.ask("parent-private.test", source="127.0.0.2")
    daemon.ask("pokerstars.com", source="127.0.0.2")
    daemon.ask("kid-private.test", source="127.0.0.1")
    daemon.ask("pokerstars.com", source="127.0.0.1")
    daemon.ask("guest-visible.test", source="127.0.0.3")
    guest = wait_for_rows(daemon, "client = '127.0.0.3'")
    assert [(r["device"], r["name"], r["profile"]) for r in guest] == [("guest-laptop", "guest-visible.test", "guests")]

    tablet = [r for r in logged(daemon, "client = '127.0.0.1'") if r["action"] != "local" and r["qtype"] != 255]
    assert [(r["device"], r["name"], r["action"], r["rule"], r["reason"], r["category"]) for r in tablet] == [
        ("tablet", None, "allow", "default", "default", None),
        ("tablet", None, "block", "category", "category", "gambling")]
    assert logged(daemon, "client = '127.0.0.2'") == []
    assert query_db(daemon, "SELECT * FROM clients_seen WHERE client = '127.0.0.2'") == []
    assert query_db(daemon, "SELECT * FROM rollups WHERE device = 'parent-phone'") == []
    assert query_db(daemon, "SELECT sum(blocked) FROM rollups WHERE device = 'tablet'")[0][0] == 1

    # a clean stop writes what is queued: every answered query of the guest is there
    for i in range(20):
        daemon.ask(f"guest-{i}.test", source="127.0.0.3")
    assert daemon.terminate() == 0
    assert len(logged(daemon, "client = '127.0.0.3'")) == 21
    assert logged(daemon, "client = '127.0.0.2'") == []
    conn = sqlite3.connect(db_of(daemon))
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    for private in ("parent-private", "kid-private"):
        assert private not in dump


def test_off_globally_writes_nothing_for_devices_that_inherit_it(daemons, standin):
    daemon = daemons([udp_upstream(standin.port)], extra={
        "log": {"mode": "off"},
        "profiles": {"kids": {"preset": "child"},
                     "teens": {"preset": "teen", "log": "anonymous"},
                     "guests": {"preset": "teen", "log": "full"}},
        "devices": [{"name": "tablet", "ip": "127.0.0.1", "profile": "kids"},
                    {"name": "teen-phone", "ip": "127.0.0.2", "profile": "teens"},
                    {"name": "guest-laptop", "ip": "127.0.0.3", "profile": "guests"}],
    })
    daemon.ask("off-allowed.test", source="127.0.0.1")
    daemon.ask("pokerstars.com", source="127.0.0.1")
    daemon.ask("teen-anonymous.test", source="127.0.0.2")
    daemon.ask("off-guest.test", source="127.0.0.3")
    wait_for_rows(daemon, "client = '127.0.0.3'")
    assert daemon.terminate() == 0
    assert logged(daemon, "client = '127.0.0.1'") == []
    assert [(r["device"], r["name"], r["action"]) for r in logged(daemon, "client = '127.0.0.2'")] == \
        [("teen-phone", None, "allow")]
    assert [(r["device"], r["name"]) for r in logged(daemon, "client = '127.0.0.3'")] == \
        [("guest-laptop", "off-guest.test")]
    assert sorted(row[0] for row in query_db(daemon, "SELECT client FROM clients_seen")) == ["127.0.0.2", "127.0.0.3"]
    assert sorted(row[0] for row in query_db(daemon, "SELECT DISTINCT device FROM rollups")) == \
        ["guest-laptop", "teen-phone"]


# ---------------------------------------------------------------- crash safety


class Burst:
    """A thread asking the daemon over UDP in a loop, one query at a time, until told to stop."""

    def __init__(self, port: int, prefix: str, limit: int = 50_000):
        self.port = port
        self.prefix = prefix
        self.limit = limit
        self.answered = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            for i in range(self.limit):
                if self.stopped.is_set():
                    return
                packet = DNSRecord.question(f"n{i % 400}.{self.prefix}.test").pack()
                try:
                    sock.sendto(packet, ("127.0.0.1", self.port))
                    while sock.recv(4096)[:2] != packet[:2]:
                        pass
                    self.answered += 1
                except OSError:        # no answer (the daemon is gone): go on until stopped
                    continue

    def __enter__(self) -> "Burst":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def count_rows(path: Path, suffix: str = "") -> int:
    """Rows whose name ends with `suffix` (all rows when empty); 0 before the DB exists."""
    if not path.exists():
        return 0
    conn = state.connect(path, readonly=True)
    try:
        return conn.execute("SELECT count(*) FROM queries WHERE name LIKE ?", (f"%{suffix}",)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_kill_9_mid_burst_leaves_an_intact_db_with_rows(daemons, standin, tmp_path):
    seed = int.from_bytes(os.urandom(4), "big")
    chance = random.Random(seed)
    data_dir = tmp_path / "shared-var"       # every round's daemon logs into the same state.db
    path = state.db_path(data_dir)
    before = 0
    for round_number in range(3):
        daemon = daemons([udp_upstream(standin.port)], extra={"data_dir": str(data_dir)})
        kill_after = chance.randint(200, 4_000)
        with Burst(daemon.port, f"crash{round_number}") as burst:
            wait_until(lambda: count_rows(path, f".crash{round_number}.test") and burst.answered >= kill_after,
                       message=f"this round's first rows and {kill_after} answers (seed {seed})")
            os.kill(daemon.process.pid, signal.SIGKILL)
            daemon.terminate()                     # reap it
        assert daemon.process.returncode == -signal.SIGKILL
        conn = sqlite3.connect(path)               # what the next daemon, or the web UI, would open
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"seed {seed}"
            after = conn.execute("SELECT count(*) FROM queries").fetchone()[0]
            this_round = conn.execute("SELECT count(*) FROM queries WHERE name LIKE ?",
                                      (f"%.crash{round_number}.test",)).fetchone()[0]
        finally:
            conn.close()
        assert this_round > 0 and after >= before + this_round, f"seed {seed}"
        before = after
