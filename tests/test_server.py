"""filterd.dns.server: sockets, connections and reloads, driven through the real daemon.

Each test starts `python -m filterd run` against a stand-in upstream and talks to it over real
UDP and TCP sockets on 127.0.0.1. Nothing here sleeps a fixed time: it polls with a deadline.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from dnslib import QTYPE, DNSRecord

from conftest import make_query, read_tcp_message, wait_until
from standin import name_address

NOERROR, SERVFAIL, REFUSED = 0, 2, 5


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def answered_correctly(reply: bytes | None, name: str) -> bool:
    if reply is None:
        return False
    parsed = DNSRecord.parse(reply)
    return parsed.header.rcode == NOERROR and addresses(parsed) == [name_address(name)]


class Asker(threading.Thread):
    """One client asking uncached names over UDP, one at a time, until told to stop; it
    counts what was answered correctly and what was not (lost, SERVFAIL, wrong address)."""

    def __init__(self, port: int, prefix: str):
        super().__init__(daemon=True)
        self.port = port
        self.prefix = prefix
        self.stop = threading.Event()
        self.answered = 0
        self.unanswered: list[str] = []

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            n = 0
            while not self.stop.is_set():
                name = f"{self.prefix}-{n}.reload.test"
                n += 1
                query = make_query(name)
                sock.sendto(query.pack(), ("127.0.0.1", self.port))
                reply = None
                deadline = time.monotonic() + 8.0
                while reply is None and time.monotonic() < deadline:
                    sock.settimeout(max(deadline - time.monotonic(), 0.01))
                    try:
                        data = sock.recv(65535)
                    except socket.timeout:
                        break
                    if data[:2] == query.pack()[:2]:
                        reply = data
                if answered_correctly(reply, name):
                    self.answered += 1
                else:
                    self.unanswered.append(name)


def reload_count(daemon) -> int:
    return daemon.stderr().count("rules reloaded from")


@pytest.mark.parametrize("upstream_scheme", ["tcp", "udp"])
def test_no_query_is_lost_across_reloads_under_load(daemons, standins, upstream_scheme):
    upstream, port = standins()
    upstream.delay_s = 0.3   # every uncached name is still waiting upstream when a reload lands
    url = f"{upstream_scheme}://127.0.0.1:{port}"
    daemon = daemons([url], upstream_timeout=3.0, extra={"profiles": {"kids": {"block": ["one.test"]}}})
    askers = [Asker(daemon.port, f"c{i}") for i in range(8)]
    for asker in askers:
        asker.start()
    try:
        wait_until(lambda: all(a.answered for a in askers), timeout=15, message="every client answered once")
        changes = [
            # the rules change (the policy is rebuilt, the upstreams are kept)
            {"dns": {"upstreams": [url], "upstream_timeout": 3.0}, "profiles": {"kids": {"block": ["two.test"]}}},
            {"dns": {"upstreams": [url], "upstream_timeout": 3.0}, "profiles": {"kids": {"block": ["three.test"]}}},
            # the upstream settings change (a new pool; the old one finishes its queries first)
            {"dns": {"upstreams": [url], "upstream_timeout": 2.5}, "profiles": {"kids": {"block": ["four.test"]}}},
            {"dns": {"upstreams": [url], "upstream_timeout": 3.0}, "profiles": {"kids": {"block": ["five.test"]}}},
        ]
        for number, change in enumerate(changes, 1):
            config = daemon.config_for(change["dns"], {"profiles": change["profiles"]})
            daemon.write_config(config)
            wait_until(lambda: reload_count(daemon) >= number, timeout=15, interval=0.05,
                       message=f"reload {number}")
            before = sum(a.answered for a in askers)
            wait_until(lambda: sum(a.answered for a in askers) >= before + 8, timeout=15,
                       message="queries answered after the reload")
        # and the overrides change: a parent pauses and resumes the kids' profile
        from filterd.rules.config import load_config
        from filterd.store import overrides, state
        config = load_config(daemon.config_path)
        conn = state.connect(state.db_path(daemon.folder / "var"))
        try:
            for change in (overrides.pause, overrides.resume):
                args = (3600,) if change is overrides.pause else ()
                with state.transaction(conn):
                    change(conn, config, "kids", *args, time.time())
                before = sum(a.answered for a in askers)
                wait_until(lambda: sum(a.answered for a in askers) >= before + 8, timeout=15,
                           message="queries answered after the override changed")
        finally:
            conn.close()
    finally:
        for asker in askers:
            asker.stop.set()
        for asker in askers:
            asker.join(timeout=15)

    lost = [name for asker in askers for name in asker.unanswered]
    assert reload_count(daemon) >= 4
    assert sum(a.answered for a in askers) > 40
    assert lost == []


def test_a_tcp_client_that_half_closes_gets_every_answer(daemons, standins):
    upstream, port = standins()
    upstream.delay_s = 0.2
    daemon = daemons([f"udp://127.0.0.1:{port}"])
    names = [f"half-close-{i}.test" for i in range(5)]
    queries = []
    for i, name in enumerate(names):
        query = make_query(name)
        query.header.id = 0x2000 + i
        queries.append(query)

    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(b"".join(struct.pack(">H", len(q.pack())) + q.pack() for q in queries))
        sock.shutdown(socket.SHUT_WR)   # RFC 7766 §6.2.4: "no more queries", not "no more answers"
        replies = [read_tcp_message(sock) for _ in queries]
        after = read_tcp_message(sock)

    assert all(reply is not None for reply in replies), replies
    by_id = {DNSRecord.parse(reply).header.id: DNSRecord.parse(reply) for reply in replies}
    assert sorted(by_id) == [q.header.id for q in queries]
    for query, name in zip(queries, names):
        assert addresses(by_id[query.header.id]) == [name_address(name)]
    assert after is None   # and then the daemon closes its side


# ---------------------------------------------------------------- the rate limit per transport


def test_over_the_rate_limit_tcp_gets_refused_never_silence(daemons, standin):
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"], rate_limit=10)
    queries = []
    for i in range(100):
        query = make_query(f"tcp-rate-{i}.test")
        query.header.id = i
        queries.append(query)

    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(b"".join(struct.pack(">H", len(q.pack())) + q.pack() for q in queries))
        replies = [read_tcp_message(sock) for _ in queries]

    assert all(reply is not None for reply in replies)   # 100 asked, 100 answered
    parsed = [DNSRecord.parse(reply) for reply in replies]
    assert sorted(r.header.id for r in parsed) == list(range(100))
    refused = [r for r in parsed if r.header.rcode == REFUSED]
    served = [r for r in parsed if r.header.rcode == NOERROR]
    assert len(refused) + len(served) == 100
    assert 1 <= len(served) <= 60 and len(refused) >= 40
    for reply in served:
        assert addresses(reply) == [name_address(str(reply.q.qname).rstrip("."))]
    # and the parents can see it: the status row counts what the limit turned away
    wait_until(lambda: status_rows(daemon, "rate_limited") and status_rows(daemon, "rate_limited")[0][0] >= 40,
               timeout=15, interval=0.1, message="the status row to count the refused queries")


def test_a_browser_opening_a_page_of_150_names_is_not_a_flood_at_the_default_limit(daemons, standin):
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"])
    daemon.config["dns"].pop("rate_limit")   # the shipped defaults (200/s; 2 s), not the tests' "off"
    daemon.config["dns"].pop("upstream_timeout")
    daemon.write_config(daemon.config)
    daemon.terminate()
    daemon.start()
    names = [f"asset{i}.busy-page.test" for i in range(150)]
    standin.add(*(f"{name}. 300 IN AAAA 2001:db8::1" for name in names))
    pending: dict[int, tuple[str, str]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        msg_id = 0
        for name in names:   # what Chrome asks for each name of a page: A, AAAA and HTTPS
            for qtype in ("A", "AAAA", "HTTPS"):
                query = make_query(name, qtype)
                query.header.id = msg_id
                pending[msg_id] = (name, qtype)
                sock.sendto(query.pack(), ("127.0.0.1", daemon.port))
                msg_id += 1
        replies = {}
        deadline = time.monotonic() + 10
        while len(replies) < len(pending) and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                reply = DNSRecord.parse(sock.recv(65535))
            except socket.timeout:
                break
            replies[reply.header.id] = reply

    assert len(pending) == 450
    missing = sorted(set(pending) - set(replies))
    assert missing == []
    assert not any(r.header.tc for r in replies.values())
    assert [r.header.rcode for r in replies.values() if r.header.rcode != NOERROR] == []


# ---------------------------------------------------------------- the status row and the state DB


def status_rows(daemon, columns: str = "pid, worker") -> list[tuple]:
    from filterd.store import state
    path = state.db_path(daemon.folder / "var")
    try:
        conn = state.connect(path, readonly=True)
    except Exception:   # gone, or not there yet
        return []
    try:
        return conn.execute(f"SELECT {columns} FROM daemon_status ORDER BY worker").fetchall()
    except Exception:   # created, not yet migrated
        return []
    finally:
        conn.close()


def worker_pids(supervisor: int) -> set[int]:
    import os
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == supervisor:
                        pids.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def test_a_killed_workers_status_row_does_not_stand_beside_its_replacement(daemons, standin):
    import os
    import signal
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"], workers=2)
    first = wait_until(lambda: len(worker_pids(daemon.process.pid)) == 2 and worker_pids(daemon.process.pid),
                       message="two workers")
    wait_until(lambda: {pid for pid, _ in status_rows(daemon)} == first, timeout=15,
               message="both workers' status rows")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int] | None:
        live = worker_pids(daemon.process.pid)
        return live if len(live) == 2 and victim not in live else None
    live = wait_until(replaced, timeout=10, message="the supervisor to restart the worker")
    wait_until(lambda: {pid for pid, _ in status_rows(daemon)} == live, timeout=15, interval=0.1,
               message="the dead worker's row to be replaced by the new worker's")
    assert sorted(worker for _, worker in status_rows(daemon)) == [0, 1]


def test_the_query_log_health_is_in_the_status_row(daemons, standin):
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"])
    for i in range(3):
        daemon.ask(f"health-{i}.test")
    columns = ("log_written, log_dropped, log_dropped_queue_full, log_write_failures, log_disk_full,"
               " log_last_error, db_reopened, clock_doubtful, retention_skipped, rate_limited, answers_scrubbed")
    row = wait_until(lambda: [r for r in status_rows(daemon, columns) if r[0] >= 3], timeout=15, interval=0.1,
                     message="the status row to count the written rows")[0]
    assert row[1:] == (0, 0, 0, 0, None, 0, 0, 0, 0, 0)


def test_a_state_db_deleted_while_running_is_made_again_and_said_once(daemons, standin):
    from pathlib import Path
    from filterd.store import state
    daemon = daemons([f"udp://127.0.0.1:{standin.port}"])
    path = state.db_path(daemon.folder / "var")
    daemon.ask("before-delete.test")
    wait_until(lambda: status_rows(daemon), timeout=15, message="the first status row")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    def logged_in_the_new_file() -> bool:
        daemon.ask("after-delete.test")
        try:
            conn = state.connect(path, readonly=True)
        except Exception:   # not there yet
            return False
        try:
            return bool(conn.execute("SELECT 1 FROM queries WHERE name = 'after-delete.test'").fetchone())
        except Exception:
            return False
        finally:
            conn.close()
    wait_until(logged_in_the_new_file, timeout=15, interval=0.2, message="the query log in a new state DB")
    wait_until(lambda: status_rows(daemon, "db_reopened") and status_rows(daemon, "db_reopened")[0][0] >= 1,
               timeout=15, interval=0.1, message="the status row to count the reopening")
    assert daemon.stderr().count("was deleted or replaced while running") == 1
