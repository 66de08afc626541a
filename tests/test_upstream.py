"""filterd.dns.upstream: answer matching, health and ordering, and real exchanges with stand-ins."""
from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest
from dnslib import QTYPE, RR, DNSRecord

from filterd.dns import wire
from filterd.rules.config import parse_upstream
from filterd.dns.upstream import Upstream, UpstreamError, UpstreamPool, _matches
from standin import name_address


def question(name: str, qtype: int = wire.TYPE_A) -> bytes:
    return wire.encode_name(name) + struct.pack(">HH", qtype, wire.CLASS_IN)


def pool_of(*urls: str, timeout: float = 1.0, ca: str | None = None) -> UpstreamPool:
    return UpstreamPool(tuple(parse_upstream(u) for u in urls), timeout, ca)


def exchange(pool: UpstreamPool, name: str, qtype: int = wire.TYPE_A) -> DNSRecord:
    async def run() -> bytes:
        try:
            return await pool.exchange(question(name, qtype), False)
        finally:
            pool.close()
    return DNSRecord.parse(asyncio.run(run()))


# ---------------------------------------------------------------- _matches


QUERY = wire.build_query(question("Example.test"), False, 0x1234)


def answer_to(query: bytes, msg_id: bytes | None = None, name: bytes | None = None, qr: bool = True) -> bytes:
    head = bytearray(query[:12])
    if msg_id is not None:
        head[:2] = msg_id
    head[2] = head[2] | 0x80 if qr else head[2] & 0x7F
    qend = wire.skip_name(query, 12) + 4
    return bytes(head) + (name if name is not None else query[12:qend])


def test_matches_an_answer_with_the_same_id_and_question():
    assert _matches(QUERY, answer_to(QUERY))


def test_matches_ignores_letter_case_in_the_question():
    assert _matches(QUERY, answer_to(QUERY, name=question("EXAMPLE.TEST")))


@pytest.mark.parametrize("answer", [
    answer_to(QUERY, msg_id=b"\x43\x21"),                      # another ID: a spoofing attempt
    answer_to(QUERY, name=question("example.evil")),           # another question
    answer_to(QUERY, name=question("example.test", wire.TYPE_AAAA)),
    answer_to(QUERY, qr=False),                                # a query, not an answer
    answer_to(QUERY)[:11],                                     # shorter than a header
], ids=["id", "name", "type", "not-a-response", "runt"])
def test_matches_refuses(answer):
    assert not _matches(QUERY, answer)


def test_matches_without_id_check_for_doh():
    assert _matches(QUERY, answer_to(QUERY, msg_id=b"\0\0"), check_id=False)
    assert not _matches(QUERY, answer_to(QUERY, msg_id=b"\0\0"))


# ---------------------------------------------------------------- health and order


def names(upstreams) -> list[str]:
    return [u.name for u in upstreams]


def test_healthy_upstreams_keep_config_order():
    pool = pool_of("udp://192.0.2.1", "udp://192.0.2.2", "udp://192.0.2.3")

    assert names(pool.ordered(100.0)) == ["udp://192.0.2.1", "udp://192.0.2.2", "udp://192.0.2.3"]


def test_a_failed_upstream_rests_at_the_end_then_comes_back():
    pool = pool_of("udp://192.0.2.1", "udp://192.0.2.2", "udp://192.0.2.3")
    first = pool.upstreams[0]

    first.failed(100.0)

    assert names(pool.ordered(100.5)) == ["udp://192.0.2.2", "udp://192.0.2.3", "udp://192.0.2.1"]
    assert names(pool.ordered(101.0))[0] == "udp://192.0.2.1"  # rested one second after one failure


def test_resting_upstreams_are_ordered_by_when_they_come_back():
    pool = pool_of("udp://192.0.2.1", "udp://192.0.2.2", "udp://192.0.2.3")
    first, second, _ = pool.upstreams
    first.failed(100.0)
    first.failed(100.0)   # two failures: resting 2 s
    second.failed(100.0)  # one failure: resting 1 s

    assert names(pool.ordered(100.5)) == ["udp://192.0.2.3", "udp://192.0.2.2", "udp://192.0.2.1"]


def test_rest_doubles_with_each_failure_up_to_a_minute():
    upstream = pool_of("udp://192.0.2.1").upstreams[0]
    rests = []
    for _ in range(9):
        upstream.failed(1000.0)
        rests.append(upstream.down_until - 1000.0)

    assert rests == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_success_ends_the_rest():
    pool = pool_of("udp://192.0.2.1", "udp://192.0.2.2")
    first = pool.upstreams[0]
    first.failed(100.0)
    first.failed(100.0)

    first.succeeded()

    assert first.failures == 0
    assert names(pool.ordered(100.1))[0] == "udp://192.0.2.1"


# ---------------------------------------------------------------- real exchanges


def test_udp_exchange(standin):
    reply = exchange(pool_of(f"udp://127.0.0.1:{standin.port}"), "unit-udp.test")

    assert [str(rr.rdata) for rr in reply.rr] == [name_address("unit-udp.test")]
    assert standin.count("unit-udp.test") == 1


def test_tcp_exchange(standin):
    standin.add('unit-tcp.test. 300 IN TXT "over tcp"')

    reply = exchange(pool_of(f"tcp://127.0.0.1:{standin.port}"), "unit-tcp.test", wire.TYPE_TXT)

    assert reply.rr[0].rdata.data == [b"over tcp"]


def test_tcp_connection_carries_concurrent_queries(standin):
    pool = pool_of(f"tcp://127.0.0.1:{standin.port}")

    async def run() -> list[bytes]:
        try:
            return await asyncio.gather(*(pool.exchange(question(f"unit-tcp{i}.test"), False) for i in range(20)))
        finally:
            pool.close()
    replies = [DNSRecord.parse(r) for r in asyncio.run(run())]

    assert [str(r.rr[0].rdata) for r in replies] == [name_address(f"unit-tcp{i}.test") for i in range(20)]


def test_dot_and_doh_exchanges(standins, certificates):
    ca, cert, key = certificates
    dot, dot_port = standins(tls_cert=(cert, key))
    doh, doh_port = standins(tls_cert=(cert, key), doh=True)

    over_tls = exchange(pool_of(f"tls://localhost:{dot_port}", ca=str(ca)), "unit-dot.test")
    over_https = exchange(pool_of(f"https://localhost:{doh_port}/dns-query", ca=str(ca)), "unit-doh.test")

    assert str(over_tls.rr[0].rdata) == name_address("unit-dot.test")
    assert str(over_https.rr[0].rdata) == name_address("unit-doh.test")
    assert dot.count("unit-dot.test") == doh.count("unit-doh.test") == 1


def test_fails_over_to_the_next_upstream_and_rests_the_failed_one(standin, standins, closed_port):
    failing, failing_port = standins(mode="servfail")
    pool = pool_of(f"udp://127.0.0.1:{closed_port}", f"udp://127.0.0.1:{failing_port}",
                   f"udp://127.0.0.1:{standin.port}")

    reply = exchange(pool, "unit-failover.test")

    assert reply.header.rcode == wire.NOERROR
    assert failing.count("unit-failover.test") == 1
    assert [u.failures for u in pool.upstreams] == [1, 1, 0]
    assert names(pool.ordered(0.0))[0] == f"udp://127.0.0.1:{standin.port}"


def test_every_upstream_failing_is_an_upstream_error(standins, closed_port):
    _, refusing_port = standins(mode="refused")
    pool = pool_of(f"udp://127.0.0.1:{closed_port}", f"udp://127.0.0.1:{refusing_port}")

    with pytest.raises(UpstreamError, match="answered REFUSED"):
        exchange(pool, "unit-dead.test")


def test_silent_upstream_times_out(black_hole):
    pool = pool_of(f"udp://127.0.0.1:{black_hole.port}", timeout=0.2)

    with pytest.raises(UpstreamError, match="timed out"):
        exchange(pool, "unit-silent.test")


def test_dot_with_an_unknown_ca_fails(standins, certificates):
    _, cert, key = certificates
    _, port = standins(tls_cert=(cert, key))

    with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
        exchange(pool_of(f"tls://localhost:{port}"), "unit-untrusted.test")


@pytest.fixture
def spoofing_server():
    """Answers each query first with a wrong ID, then a wrong question, then correctly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:
                return
            request = DNSRecord.parse(data)
            good = request.reply()
            good.add_answer(*RR.fromZone(f"{request.q.qname} 60 IN A 192.0.2.99"))
            wrong_id = request.reply()
            wrong_id.header.id ^= 0xFFFF
            wrong_id.add_answer(*RR.fromZone(f"{request.q.qname} 60 IN A 203.0.113.66"))
            wrong_name = DNSRecord.question("evil.test").reply()
            wrong_name.header.id = request.header.id
            wrong_name.add_answer(*RR.fromZone("evil.test. 60 IN A 203.0.113.66"))
            for reply in (wrong_id, wrong_name, good):
                sock.sendto(reply.pack(), peer)

    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1]
    sock.close()


def test_udp_answers_with_a_wrong_id_or_question_are_ignored(spoofing_server):
    reply = exchange(pool_of(f"udp://127.0.0.1:{spoofing_server}"), "unit-spoof.test")

    assert [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A] == ["192.0.2.99"]


def test_each_udp_query_uses_a_fresh_source_port_and_id():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    seen = []

    def listen():
        for _ in range(3):
            data, peer = sock.recvfrom(65535)
            seen.append((peer[1], data[:2]))
            reply = DNSRecord.parse(data).reply()
            sock.sendto(reply.pack(), peer)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        for i in range(3):
            exchange(pool_of(f"udp://127.0.0.1:{sock.getsockname()[1]}"), f"unit-port{i}.test")
        listener.join(5)
    finally:
        sock.close()

    assert len({port for port, _ in seen}) == 3
    assert len({msg_id for _, msg_id in seen}) > 1  # random: all three equal once in 2**32


def test_upstream_address_of_a_literal_needs_no_lookup():
    upstream = Upstream(parse_upstream("tls://192.0.2.7"))

    assert asyncio.run(upstream.address()) == "192.0.2.7"


def test_a_closed_connection_hands_its_waiting_query_to_a_fresh_one_at_once(standins):
    upstream, port = standins()
    upstream.delay_s = 0.3
    pool = pool_of(f"tcp://127.0.0.1:{port}", timeout=5.0)

    async def run() -> tuple[bytes, float]:
        task = asyncio.ensure_future(pool.exchange(question("handed-over.test"), False))
        while upstream.count("handed-over.test") == 0:   # the question is on the first connection
            await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        pool.close()                                      # what a reload did under waiting queries
        try:
            return await task, asyncio.get_running_loop().time() - started
        finally:
            pool.close()
    answer, waited = asyncio.run(run())

    assert [str(rr.rdata) for rr in DNSRecord.parse(answer).rr] == [name_address("handed-over.test")]
    assert upstream.count("handed-over.test") == 2
    assert waited < 4.0   # asked again at once, not after the 5 s timeout


# ---------------------------------------------------------------- a clock not set yet


def test_while_the_clock_reads_1970_the_plain_upstreams_stand_in_for_the_encrypted_ones():
    specs = (parse_upstream("tls://dns.example:853"), parse_upstream("udp://127.0.0.1:5300"))
    wall = [0.0]
    pool = UpstreamPool(specs, 1.0, wall=lambda: wall[0])
    assert [u.name for u in pool.candidates(100.0)] == ["udp://127.0.0.1:5300"]
    wall[0] = 1_800_000_000.0                      # NTP set it
    assert [u.name for u in pool.candidates(101.0)] == ["tls://dns.example:853", "udp://127.0.0.1:5300"]
    assert pool.bridging is None


def test_with_no_plain_upstream_the_bootstrap_servers_stand_in():
    pool = UpstreamPool((parse_upstream("https://dns.example/dns-query"),), 1.0, bootstrap=("192.0.2.53",),
                        wall=lambda: 0.0)
    assert [u.name for u in pool.candidates(100.0)] == ["udp://192.0.2.53"]


def test_with_nothing_plain_at_all_the_encrypted_upstreams_are_still_asked():
    pool = UpstreamPool((parse_upstream("tls://dns.example:853"),), 1.0, wall=lambda: 0.0)
    assert [u.name for u in pool.candidates(100.0)] == ["tls://dns.example:853"]
