"""The real daemon (`python -m filterd run`) against stand-in upstreams, over real sockets.

One daemon per config: tests that share a config share a module-scoped daemon and use names of
their own, so the shared stand-in's question counts tell them apart.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from dnslib import CLASS, OPCODE, QTYPE, RCODE, RR, DNSRecord

from conftest import exchange, make_query, read_tcp_message, wait_seconds, wait_until
from standin import StandIn, free_port, name_address

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def udp_upstream(port: int) -> str:
    return f"udp://127.0.0.1:{port}"


def big_txt(name: str, strings: int) -> str:
    """A TXT record of `strings` strings of 255 bytes each, as a zone line."""
    parts = " ".join(f'"{chr(ord("a") + i) * 255}"' for i in range(strings))
    return f"{name}. 300 IN TXT {parts}"


def tcp_connect(port: int, source: str = "127.0.0.1", timeout: float = 3.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return sock


def tcp_ask(sock: socket.socket, name: str, qtype: str = "A") -> DNSRecord | None:
    query = make_query(name, qtype)
    sock.sendall(struct.pack(">H", len(query.pack())) + query.pack())
    data = read_tcp_message(sock)
    return DNSRecord.parse(data) if data is not None else None


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer has closed (EOF or reset); False while it is merely quiet."""
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionError:
        return True


# ---------------------------------------------------------------- the main daemon


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    """Forwards to the shared stand-in; no rate limit, so floods of test packets all arrive."""
    return module_daemons([udp_upstream(standin.port)], upstream_timeout=0.5)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_forwards_a_aaaa_mx_and_txt(daemon, standin, tcp):
    name = f"records-{'tcp' if tcp else 'udp'}.test"
    standin.add(f"{name}. 300 IN AAAA 2001:db8::53",
                f"{name}. 300 IN MX 10 mail.{name}.",
                f'{name}. 300 IN TXT "v=spf1 -all" "second string"')

    a = daemon.ask(name, "A", tcp=tcp)
    aaaa = daemon.ask(name, "AAAA", tcp=tcp)
    mx = daemon.ask(name, "MX", tcp=tcp)
    txt = daemon.ask(name, "TXT", tcp=tcp)

    assert [a.header.rcode, aaaa.header.rcode, mx.header.rcode, txt.header.rcode] == [NOERROR] * 4
    assert addresses(a) == [name_address(name)]
    assert [str(rr.rdata) for rr in aaaa.rr] == ["2001:db8::53"]
    assert [(rr.rdata.preference, str(rr.rdata.label)) for rr in mx.rr] == [(10, f"mail.{name}.")]
    assert [rr.rdata.data for rr in txt.rr] == [[b"v=spf1 -all", b"second string"]]
    assert a.header.qr and a.header.ra and a.header.rd


def test_tcp_answers_pipelined_queries_on_one_connection_matched_by_id(daemon, standin):
    names = [f"pipe{i}.test" for i in range(10)]
    standin.add(*(f"{name}. 300 IN TXT \"text of {name}\"" for name in names[5:]))
    queries = {}
    for i, name in enumerate(names):
        query = make_query(name, "A" if i < 5 else "TXT")
        query.header.id = 0x4000 + i
        queries[query.header.id] = query
    stream = b"".join(struct.pack(">H", len(q.pack())) + q.pack() for q in queries.values())

    with tcp_connect(daemon.port) as sock:
        sock.sendall(stream)  # all ten before reading any answer
        replies = [DNSRecord.parse(read_tcp_message(sock)) for _ in queries]

    assert sorted(r.header.id for r in replies) == sorted(queries)
    for reply in replies:
        query = queries[reply.header.id]
        name = str(query.q.qname).rstrip(".")
        assert reply.q == query.q
        if query.q.qtype == QTYPE.A:
            assert addresses(reply) == [name_address(name)]
        else:
            assert [rr.rdata.data for rr in reply.rr] == [[f"text of {name}".encode()]]


def test_letter_case_shares_one_cache_entry_and_is_echoed(daemon, standin):
    mixed = daemon.ask("ExAmPlE-Case.test")
    lower = daemon.ask("example-case.test")
    upper = daemon.ask("EXAMPLE-CASE.TEST")

    assert standin.count("example-case.test") == 1
    assert addresses(mixed) == addresses(lower) == addresses(upper) == [name_address("example-case.test")]
    # The question comes back exactly as the client wrote it (0x20 encoding relies on it).
    assert [mixed.q.qname.label, lower.q.qname.label, upper.q.qname.label] == [
        (b"ExAmPlE-Case", b"test"), (b"example-case", b"test"), (b"EXAMPLE-CASE", b"TEST")]


def test_cached_ttl_counts_down_without_asking_upstream_again(daemon, standin):
    first = daemon.ask("countdown.test")
    wait_seconds(2.0)
    second = daemon.ask("countdown.test")

    assert first.rr[0].ttl <= 300
    assert second.rr[0].ttl <= first.rr[0].ttl - 1
    assert standin.count("countdown.test") == 1


def test_nxdomain_is_cached_with_its_soa(daemon, standin):
    first = daemon.ask("nx.negative.test")
    second = daemon.ask("nx.negative.test")

    assert first.header.rcode == second.header.rcode == NXDOMAIN
    assert [rr.rtype for rr in second.auth] == [QTYPE.SOA]
    assert second.auth[0].ttl <= 120  # RFC 2308: min(SOA TTL, SOA minimum)
    assert standin.count("nx.negative.test") == 1


def test_nodata_is_cached_with_its_soa(daemon, standin):
    first = daemon.ask("nodata.negative.test", "A")
    second = daemon.ask("nodata.negative.test", "A")

    assert first.header.rcode == second.header.rcode == NOERROR
    assert second.rr == []
    assert [rr.rtype for rr in second.auth] == [QTYPE.SOA]
    assert standin.count("nodata.negative.test") == 1


def test_identical_queries_in_flight_are_asked_upstream_once(daemon, standin):
    packet = make_query("coalesce.test").pack()
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
    standin.delay_s = 0.3
    try:
        for sock in sockets:
            sock.sendto(packet, ("127.0.0.1", daemon.port))
        replies = []
        for sock in sockets:
            sock.settimeout(5)
            replies.append(DNSRecord.parse(sock.recv(65535)))
    finally:
        standin.delay_s = 0.0
        for sock in sockets:
            sock.close()

    assert all(addresses(r) == [name_address("coalesce.test")] for r in replies)
    assert standin.count("coalesce.test") == 1


# ---------------------------------------------------------------- sizes and EDNS


def test_large_answer_over_udp_without_edns_is_truncated(daemon, standin):
    standin.add(big_txt("big512.test", 4))  # about 1,070 bytes: over 512, under 1232

    reply = daemon.ask("big512.test", "TXT")

    assert reply.header.tc
    assert reply.header.rcode == NOERROR
    assert reply.rr == [] and reply.q.qname == "big512.test"


def test_large_answer_over_tcp_is_complete(daemon, standin):
    standin.add(big_txt("big512tcp.test", 4))

    reply = daemon.ask("big512tcp.test", "TXT", tcp=True)

    assert not reply.header.tc
    assert [len(s) for s in reply.rr[0].rdata.data] == [255] * 4


def test_edns_buffer_lets_an_answer_under_1232_bytes_through(daemon, standin):
    standin.add(big_txt("big1232.test", 4))

    reply = daemon.ask("big1232.test", "TXT", edns=4096)

    assert not reply.header.tc
    assert [len(s) for s in reply.rr[0].rdata.data] == [255] * 4


class TruncatingUpstream:
    """An upstream whose answers never fit UDP: TC over UDP, the full answer over TCP.

    (StandIn's own UDP truncation path raises TypeError on `DNSRecord.parse(data).q.pack()`,
    see the report; this one answers TC itself and serves TCP from a StandIn's zone.)
    """

    def __init__(self):
        self.zone = StandIn()
        self.port = free_port()
        self.udp_questions = 0
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            self.udp_questions += 1
            reply = DNSRecord.parse(data).reply()
            reply.header.tc = 1
            self.udp.sendto(reply.pack(), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        with conn:
            while (message := read_tcp_message(conn)) is not None:
                answer = self.zone.respond(message)
                conn.sendall(struct.pack(">H", len(answer)) + answer)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def truncating_upstream():
    upstream = TruncatingUpstream()
    yield upstream
    upstream.close()


def test_answer_over_1232_bytes_is_fetched_over_tcp_and_truncated_even_for_a_4096_buffer(
        daemons, truncating_upstream):
    truncating_upstream.zone.add(big_txt("big4096.test", 6))  # about 1,580 bytes
    daemon = daemons([udp_upstream(truncating_upstream.port)])

    udp = daemon.ask("big4096.test", "TXT", edns=4096)
    tcp = daemon.ask("big4096.test", "TXT", edns=4096, tcp=True)

    assert udp.header.rcode == NOERROR and udp.header.tc and udp.rr == []
    assert not tcp.header.tc and [len(s) for s in tcp.rr[0].rdata.data] == [255] * 6
    # Asked over UDP, told TC, asked again over TCP (RFC 7766); then cached.
    assert truncating_upstream.udp_questions == 1
    assert truncating_upstream.zone.count("big4096.test", "TXT") == 1


def test_query_with_opt_gets_our_opt_back(daemon):
    with_opt = daemon.ask("edns-yes.test", edns=4096)
    without = daemon.ask("edns-no.test")

    opts = [rr for rr in with_opt.ar if rr.rtype == QTYPE.OPT]
    assert len(opts) == 1 and opts[0].rclass == 1232
    assert [rr for rr in without.ar if rr.rtype == QTYPE.OPT] == []


def test_edns_version_1_gets_badvers(daemon, standin):
    reply = daemon.ask("badvers.test", edns=1232, edns_version=1)

    opt = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    assert len(opt) == 1
    assert opt[0].ttl >> 24 == 1 and reply.header.rcode == 0  # extended rcode 16 = BADVERS
    assert (opt[0].ttl >> 16) & 0xFF == 0  # we speak version 0
    assert reply.rr == []
    assert standin.count("badvers.test") == 0


# ISC's genreport (DNS-Compliance-Testing) EDNS checks, asked the way it asks them (flags,
# options and versions a server must ignore or answer, never drop): (test, build, check).
def _edns_query(name: str, version: int = 0, flags: int = 0, options=(), z: bool = False,
                qtype: str = "A") -> bytes:
    from dnslib import EDNS0, EDNSOption
    query = make_query(name, qtype)
    query.add_ar(EDNS0(udp_len=4096, version=version, flags="do" if flags & 0x8000 else "",
                       opts=[EDNSOption(code, data) for code, data in options]))
    packet = bytearray(query.pack())
    if flags & 0x7FFF:   # EDNS flags dnslib does not name: patch them into the OPT's TTL
        struct.pack_into(">H", packet, len(packet) - 4 - sum(4 + len(d) for _, d in options), flags)
    if z:
        packet[3] |= 0x40
    return bytes(packet)


GENREPORT = {
    "ednsopt": dict(options=[(100, b"")]),
    "ednsflags": dict(flags=0x0080),
    "zflag": dict(z=True),
    "do": dict(flags=0x8000),
    "optlist": dict(options=[(3, b""), (8, b"\x00\x01\x00\x00"), (9, b""), (10, bytes(range(1, 9)))]),
    "type666": dict(qtype="TYPE666"),
    "edns1opt": dict(version=1, options=[(100, b"")]),
}


@pytest.mark.parametrize("check", list(GENREPORT))
def test_genreport_edns_checks_are_answered_and_nothing_unknown_is_echoed(daemon, standin, check):
    name = f"genreport-{check}.test"
    reply = DNSRecord.parse(daemon.exchange(_edns_query(name, **GENREPORT[check])))
    opt = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]

    assert len(opt) == 1 and (opt[0].ttl >> 16) & 0xFF == 0      # our OPT, version 0
    assert opt[0].rdata == [] or all(o.code == 15 for o in opt[0].rdata)   # no option echoed
    assert reply.header.bitmap & 0x0040 == 0                     # Z is zero in every reply
    assert opt[0].ttl & 0x7FFF == 0                              # unknown EDNS flags not echoed
    assert bool(opt[0].ttl & 0x8000) == (check == "do")          # DO echoed
    if check == "edns1opt":
        assert opt[0].ttl >> 24 == 1 and reply.header.rcode == 0   # BADVERS
    else:
        assert opt[0].ttl >> 24 == 0 and reply.header.rcode == NOERROR and reply.q.qname == name


# ---------------------------------------------------------------- answered locally


@pytest.mark.parametrize("opcode", [OPCODE.STATUS, OPCODE.UPDATE], ids=["status", "update"])
def test_opcodes_other_than_query_get_notimp(daemon, opcode):
    query = make_query("opcode.test")
    query.header.opcode = opcode

    reply = DNSRecord.parse(daemon.exchange(query.pack()))

    assert reply.header.rcode == NOTIMP
    assert reply.header.id == query.header.id and reply.header.opcode == opcode and reply.header.qr


def test_any_is_answered_with_one_hinfo_without_asking_upstream(daemon, standin):
    reply = daemon.ask("any-query.test", "ANY")

    assert reply.header.rcode == NOERROR
    assert [rr.rtype for rr in reply.rr] == [QTYPE.HINFO]
    assert reply.rr[0].rdata.data == b"\x07RFC8482\x00"  # CPU "RFC8482", OS ""
    assert standin.count("any-query.test", "ANY") == 0


def test_chaos_class_is_refused(daemon, standin):
    reply = daemon.ask("version.bind", "TXT", qclass="CH")

    assert reply.header.rcode == REFUSED
    assert reply.q.qclass == CLASS.CH
    assert standin.count("version.bind", "TXT") == 0


def test_query_types_differing_only_in_a_letter_like_byte_are_cached_apart(daemon, standin):
    daemon.ask("typecase.test", "HTTPS")
    header = struct.pack(">HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0)
    type97 = header + b"\x08typecase\x04test\x00" + struct.pack(">HH", 97, 1)

    reply = DNSRecord.parse(daemon.exchange(type97))

    assert reply.q.qtype == 97
    assert standin.count("typecase.test", "97") == 1


# ---------------------------------------------------------------- malformed input


def _header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, msg_id: int = 0x1234, flags: int = 0x0100) -> bytes:
    return struct.pack(">HHHHHH", msg_id, flags, qd, an, ns, ar)


QUESTION = b"\x04fuzz\x04test\x00\x00\x01\x00\x01"


def malformed_queries() -> dict[str, bytes]:
    """Named malformed queries, each of which must get FORMERR with its ID echoed."""
    long_name = b"".join(b"\x3f" + b"x" * 63 for _ in range(4)) + b"\x00"  # 257 bytes
    return {
        "qdcount 0": _header(qd=0),
        "qdcount 2": _header(qd=2) + QUESTION + QUESTION,
        "label of 64": _header() + b"\x40" + b"a" * 64 + b"\x04test\x00\x00\x01\x00\x01",
        "name over 255 bytes": _header() + long_name + b"\x00\x01\x00\x01",
        "pointer loop in question": _header() + b"\xc0\x0c\x00\x01\x00\x01",
        "reserved label type": _header() + b"\x80abc\x00\x00\x01\x00\x01",
        "question without type": _header() + b"\x04fuzz\x04test\x00\x00",
        "opt rdlength past the end": _header(ar=1) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x64",
        "two opt records": _header(ar=2) + QUESTION + 2 * b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
        "opt in the answer section": _header(an=1) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
        "answer count without records": _header(an=3) + QUESTION,
        "additional record cut short": _header(ar=1) + QUESTION + b"\x00\x00\x01\x00",
    }


def collect_udp(sock: socket.socket, quiet_s: float = 0.5) -> list[bytes]:
    """Every datagram that arrives until the socket has been quiet for `quiet_s`."""
    replies = []
    sock.settimeout(quiet_s)
    while True:
        try:
            replies.append(sock.recv(65535))
        except socket.timeout:
            return replies


def test_malformed_queries_get_formerr_with_their_id(daemon):
    cases = malformed_queries()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for msg_id, packet in enumerate(cases.values(), start=0x7000):
            sock.sendto(struct.pack(">H", msg_id) + packet[2:], ("127.0.0.1", daemon.port))
        replies = {reply[:2]: reply for reply in collect_udp(sock)}

    for msg_id, case in enumerate(cases, start=0x7000):
        reply = replies.get(struct.pack(">H", msg_id))
        assert reply is not None, f"{case}: no answer"
        assert reply[2] & 0x80 and reply[3] & 0x0F == FORMERR, f"{case}: {reply.hex()}"
    assert daemon.alive()


def test_truncated_queries_get_formerr_at_every_length(daemon):
    plain = make_query("cut.test").pack()
    with_opt = make_query("cut.test", edns=1232, dnssec_ok=True).pack()
    expected = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet, first_id in ((plain, 0x6000), (with_opt, 0x6100)):
            for length in range(len(packet)):
                msg_id = struct.pack(">H", first_id + length)
                if length < 12:
                    msg_id = b"\xee\xee"  # runts have no header to answer: dropped
                else:
                    expected.add(msg_id)
                sock.sendto((msg_id + packet[2:])[:length], ("127.0.0.1", daemon.port))
        replies = collect_udp(sock)

    assert sorted(r[:2] for r in replies) == sorted(expected)
    assert all(r[3] & 0x0F == FORMERR for r in replies)


def test_responses_are_not_answered(daemon):
    response = make_query("reflect.test").reply().pack()  # QR set: never answer (no loops)

    assert daemon.exchange(response, timeout=0.5) is None
    assert daemon.ask("after-response.test").header.rcode == NOERROR


def test_pointer_loop_in_an_additional_record_gets_formerr(daemon):
    # The additional record's owner name is a pointer to itself (offset 12 + len(QUESTION)).
    loop = struct.pack(">H", 0xC000 | (12 + len(QUESTION)))
    packet = _header(ar=1) + QUESTION + loop + b"\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00"

    reply = daemon.exchange(packet)

    assert reply is not None and reply[3] & 0x0F == FORMERR


def _mutations(rng: random.Random, count: int) -> list[bytes]:
    """Random bytes, bit flips and truncations of valid queries, and valid headers on garbage."""
    seeds = [make_query("fuzz.test").pack(), make_query("fuzz.test", "TXT", edns=1232).pack(),
             *malformed_queries().values()]
    packets = []
    for i in range(count):
        kind = i % 4
        base = bytearray(rng.choice(seeds))
        if kind == 0:
            packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        elif kind == 1:
            for _ in range(rng.randrange(1, 8)):
                base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
            packet = bytes(base)
        elif kind == 2:
            packet = bytes(base[:rng.randrange(len(base) + 1)])
        else:
            packet = bytes(base[:12]) + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        packets.append(packet)
    return packets


def test_thousands_of_mutated_packets_leave_the_daemon_serving(daemon):
    rng = random.Random(20261125)
    packets = _mutations(rng, 3000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        for packet in packets:
            sock.sendto(packet, ("127.0.0.1", daemon.port))
        replies = collect_udp(sock, quiet_s=0.8)  # past the upstream timeout of the last ones

    assert replies, "not even the malformed ones with a header got FORMERR"
    for reply in replies:  # every reply is a response with a header (the question may be junk)
        assert len(reply) >= 12 and reply[2] & 0x80, reply.hex()
    assert daemon.ask("after-fuzz.test").header.rcode == NOERROR
    assert daemon.alive()
    assert "Traceback" not in daemon.stderr()


def test_malformed_messages_over_tcp_leave_the_connection_and_daemon_serving(daemon):
    cases = list(malformed_queries().values())
    good = make_query("after-tcp-fuzz.test")
    with tcp_connect(daemon.port) as sock:
        for msg_id, packet in enumerate(cases, start=0x7100):
            packet = struct.pack(">H", msg_id) + packet[2:]
            sock.sendall(struct.pack(">H", len(packet)) + packet)
        sock.sendall(b"\x00\x00")  # an empty message
        sock.sendall(struct.pack(">H", 5) + b"\x01\x02\x03\x04\x05")  # a runt
        sock.sendall(struct.pack(">H", len(good.pack())) + good.pack())
        replies = [DNSRecord.parse(read_tcp_message(sock)) for _ in range(len(cases) + 1)]

    assert sorted(r.header.id for r in replies) == sorted([*range(0x7100, 0x7100 + len(cases)), good.header.id])
    for reply in replies:
        if reply.header.id == good.header.id:
            assert addresses(reply) == [name_address("after-tcp-fuzz.test")]
        else:
            assert reply.header.rcode == FORMERR

    # A length prefix promising more than is ever sent, then the client hangs up.
    with tcp_connect(daemon.port) as sock:
        sock.sendall(struct.pack(">H", 400) + make_query("never-finished.test").pack())
    # Random garbage as a stream.
    rng = random.Random(7)
    with tcp_connect(daemon.port) as sock:
        sock.sendall(bytes(rng.getrandbits(8) for _ in range(3000)))

    assert daemon.ask("after-tcp-garbage.test", tcp=True).header.rcode == NOERROR
    assert daemon.alive()
    assert "Traceback" not in daemon.stderr()


# ---------------------------------------------------------------- upstream failures


def test_fails_over_past_a_closed_upstream_port(daemons, standin, closed_port):
    daemon = daemons([udp_upstream(closed_port), udp_upstream(standin.port)])

    reply = daemon.ask("failover-closed.test")

    assert addresses(reply) == [name_address("failover-closed.test")]
    assert standin.count("failover-closed.test") == 1


def test_an_upstream_that_keeps_failing_shows_in_the_daemons_status_row(daemons, closed_port):
    """What the dashboard and the parents' "no upstream answers" alert read."""
    from filterd.store import state

    daemon = daemons([udp_upstream(closed_port)])
    for i in range(4):
        assert daemon.ask(f"outage-{i}.test").header.rcode == RCODE.SERVFAIL

    def status():
        conn = state.connect(state.db_path(daemon.folder / "var"), readonly=True)
        try:
            return conn.execute("SELECT upstreams, upstreams_failing FROM daemon_status").fetchall()
        finally:
            conn.close()
    wait_until(lambda: status() == [(1, 1)], timeout=5, interval=0.1, message="the status row to show the outage")


def test_fails_over_past_a_silent_upstream_and_rests_it(daemons, standin, black_hole):
    daemon = daemons([udp_upstream(black_hole.port), udp_upstream(standin.port)], upstream_timeout=0.3)

    first = daemon.ask("blackhole-0.test")
    wait_until(lambda: black_hole.count() >= 1, message="the black hole to see the first query")
    later = [daemon.ask(f"blackhole-{i}.test") for i in range(1, 6)]

    assert addresses(first) == [name_address("blackhole-0.test")]
    assert all(addresses(r) == [name_address(f"blackhole-{i}.test")] for i, r in enumerate(later, 1))
    # The silent upstream is rested after its failure: the next queries go straight to the good one.
    assert black_hole.count() == 1


def test_fails_over_past_an_upstream_answering_servfail(daemons, standins, standin):
    failing, failing_port = standins(mode="servfail")
    daemon = daemons([udp_upstream(failing_port), udp_upstream(standin.port)])

    reply = daemon.ask("failover-servfail.test")

    assert reply.header.rcode == NOERROR
    assert addresses(reply) == [name_address("failover-servfail.test")]
    assert failing.count("failover-servfail.test") == 1


def test_servfail_when_every_upstream_is_dead_and_nothing_is_cached(daemons, closed_port, black_hole):
    daemon = daemons([udp_upstream(closed_port), udp_upstream(black_hole.port)], upstream_timeout=0.3)

    reply = daemon.ask("all-dead.test")
    with_opt = daemon.ask("all-dead-edns.test", edns=1232)

    assert reply.header.rcode == with_opt.header.rcode == SERVFAIL
    assert reply.rr == [] and reply.q.qname == "all-dead.test"
    assert daemon.alive()


@pytest.fixture(scope="module")
def stale_answers(module_daemons, module_standins):
    """(fresh, stale) replies: asked once, upstream stopped, asked again after expiry."""
    upstream, port = module_standins()
    upstream.authoritative = True
    daemon = module_daemons([udp_upstream(port)], upstream_timeout=0.3, cache={"max_ttl": 1})
    fresh = daemon.ask("stale.test")
    upstream.stop()
    wait_seconds(1.2)  # past the 1 s lifetime
    stale = daemon.ask("stale.test")
    return fresh, stale


def test_expired_answer_is_served_stale_when_upstreams_fail(stale_answers):
    fresh, stale = stale_answers

    assert fresh.rr[0].ttl <= 1
    assert stale.header.rcode == NOERROR
    assert addresses(stale) == addresses(fresh) == [name_address("stale.test")]


def test_stale_answer_has_ttl_30(stale_answers):
    _, stale = stale_answers

    assert [rr.ttl for rr in stale.rr] == [30]


def test_a_stale_answer_does_not_claim_authority(stale_answers):
    fresh, stale = stale_answers

    assert fresh.header.aa == 0 and stale.header.aa == 0


# ---------------------------------------------------------------- what an upstream answer may say


@pytest.fixture
def lying_upstream(standins, daemons):
    """(stand-in, daemon): a stand-in of the test's own, authoritative (AA set), and a daemon."""
    upstream, port = standins()
    upstream.authoritative = True
    return upstream, daemons([udp_upstream(port)])


def test_forwarded_and_cached_answers_clear_the_aa_bit(lying_upstream):
    upstream, daemon = lying_upstream
    forwarded = daemon.ask("authority.test")
    cached = daemon.ask("authority.test", tcp=True)

    assert upstream.count("authority.test") == 1
    assert forwarded.header.aa == 0 and cached.header.aa == 0
    assert addresses(forwarded) == addresses(cached) == [name_address("authority.test")]


def test_a_record_for_another_name_is_neither_served_nor_cached(lying_upstream):
    upstream, daemon = lying_upstream
    upstream.junk[("x.example.net", "A")] = RR.fromZone("evil.example. 300 IN A 6.6.6.6")

    first = daemon.ask("x.example.net")
    evil = daemon.ask("evil.example")
    again = daemon.ask("x.example.net")

    assert [str(rr.rname) for rr in first.rr] == ["x.example.net."] == [str(rr.rname) for rr in again.rr]
    assert addresses(first) == [name_address("x.example.net")]
    assert addresses(evil) == [name_address("evil.example")] and upstream.count("evil.example") == 1
    assert upstream.count("x.example.net") == 1   # the clean answer was cached


def test_an_answer_of_another_type_alone_is_a_servfail_and_is_not_cached(lying_upstream):
    upstream, daemon = lying_upstream
    upstream.records[("txt-for-a.test", "A")] = RR.fromZone('txt-for-a.test. 300 IN TXT "not an address"')

    first = daemon.ask("txt-for-a.test")
    second = daemon.ask("txt-for-a.test")

    assert first.header.rcode == second.header.rcode == SERVFAIL
    assert first.rr == [] and second.rr == []
    assert upstream.count("txt-for-a.test") == 2


class NotImplementedStandIn(StandIn):
    """An upstream that answers every question with NOTIMP (as some do for unknown types)."""

    def respond(self, data: bytes) -> bytes | None:
        request = DNSRecord.parse(data)
        with self.lock:
            self.questions[(str(request.q.qname).rstrip(".").lower(), QTYPE.get(request.q.qtype))] += 1
        reply = request.reply()
        reply.header.rcode = RCODE.NOTIMP
        return reply.pack()


def test_upstream_notimp_is_passed_on_to_the_client(daemons):
    upstream = NotImplementedStandIn()
    port = upstream.start()
    try:
        daemon = daemons([udp_upstream(port)])
        reply = daemon.ask("notimp-upstream.test")
    finally:
        upstream.stop()

    assert reply.header.rcode == NOTIMP
    assert "Traceback" not in daemon.stderr()


# ---------------------------------------------------------------- who may ask, and how fast


def test_source_outside_allow_networks_is_refused(daemons, standin):
    daemon = daemons([udp_upstream(standin.port)], allow_networks=["127.0.0.1/32"])

    outside_udp = daemon.ask("allowed.test", source="127.0.0.2")
    outside_tcp = daemon.ask("allowed.test", source="127.0.0.2", tcp=True)
    assert standin.count("allowed.test") == 0
    inside = daemon.ask("allowed.test", source="127.0.0.1")

    assert outside_udp.header.rcode == outside_tcp.header.rcode == REFUSED
    assert outside_udp.rr == [] and outside_udp.q.qname == "allowed.test"
    assert inside.header.rcode == NOERROR and addresses(inside) == [name_address("allowed.test")]


def test_rate_limit_drops_a_flood_from_one_source_only(daemons, standin):
    daemon = daemons([udp_upstream(standin.port)], rate_limit=10)
    query = make_query("flood.test")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for i in range(100):
            query.header.id = i
            sock.sendto(query.pack(), ("127.0.0.1", daemon.port))
        replies = [DNSRecord.parse(reply) for reply in collect_udp(sock)]
        other = daemon.ask("flood.test", source="127.0.0.3")

    answered = [r for r in replies if not r.header.tc]
    truncated = [r for r in replies if r.header.tc]
    assert 1 <= len(answered) <= 5 * 10 + 10  # the burst (five times the rate) and what trickles in meanwhile
    # Every 2nd dropped query slips through truncated, so a real client retries over TCP.
    assert 10 <= len(truncated) <= (100 - len(answered)) // 2 + 1
    assert all(r.rr == [] and r.q.qname == "flood.test" for r in truncated)
    assert other.header.rcode == NOERROR and addresses(other) == [name_address("flood.test")]
    # The flooding source is served again once its bucket refills.
    wait_until(lambda: exchange(make_query("flood.test").pack(), daemon.port, timeout=0.2),
               message="the flooding source to be answered again")


# ---------------------------------------------------------------- TCP connections


def test_third_tcp_connection_from_one_client_is_closed_at_once(daemons, standin):
    daemon = daemons([udp_upstream(standin.port)], tcp={"max_per_client": 2})
    first, second = tcp_connect(daemon.port), tcp_connect(daemon.port)
    try:
        assert tcp_ask(first, "tcp-limit-1.test") is not None  # both admitted
        assert tcp_ask(second, "tcp-limit-2.test") is not None
        with tcp_connect(daemon.port) as third:
            third.settimeout(3)
            try:
                data = third.recv(100)
            except ConnectionError:
                data = b""
            assert data == b""
        assert addresses(tcp_ask(first, "tcp-limit-3.test")) == [name_address("tcp-limit-3.test")]
        assert addresses(tcp_ask(second, "tcp-limit-4.test")) == [name_address("tcp-limit-4.test")]
    finally:
        first.close()

    def new_connection_served() -> bool:
        with tcp_connect(daemon.port) as sock:
            try:
                return tcp_ask(sock, "tcp-limit-5.test") is not None
            except ConnectionError:
                return False
    try:
        wait_until(new_connection_served, message="a freed slot to admit a new connection")
    finally:
        second.close()


def test_idle_tcp_connection_is_closed(daemons, standin):
    daemon = daemons([udp_upstream(standin.port)], tcp={"idle_timeout": 0.5})
    with tcp_connect(daemon.port) as sock:
        assert tcp_ask(sock, "idle.test") is not None
        wait_until(lambda: closed_by_peer(sock), message="the idle connection to be closed")


# ---------------------------------------------------------------- encrypted upstreams


def test_forwards_over_dns_over_tls(daemons, standins, certificates):
    ca, cert, key = certificates
    upstream, port = standins(tls_cert=(cert, key))
    daemon = daemons([f"tls://localhost:{port}"], tls_ca_file=str(ca))

    replies = [daemon.ask(f"dot{i}.test") for i in range(3)]

    assert [addresses(r) for r in replies] == [[name_address(f"dot{i}.test")] for i in range(3)]
    assert [upstream.count(f"dot{i}.test") for i in range(3)] == [1, 1, 1]


def test_forwards_over_dns_over_https(daemons, standins, certificates):
    ca, cert, key = certificates
    upstream, port = standins(tls_cert=(cert, key), doh=True)
    daemon = daemons([f"https://localhost:{port}/dns-query"], tls_ca_file=str(ca))
    upstream.add('doh-txt.test. 300 IN TXT "over https"')

    a = daemon.ask("doh.test")
    txt = daemon.ask("doh-txt.test", "TXT")

    assert addresses(a) == [name_address("doh.test")]
    assert a.header.id != 0 and txt.rr[0].rdata.data == [b"over https"]
    assert upstream.count("doh.test") == 1


def test_dot_upstream_with_unverifiable_certificate_fails_over(daemons, standins, standin, certificates):
    _, cert, key = certificates
    upstream, port = standins(tls_cert=(cert, key))
    # No tls_ca_file: the system's CAs do not know the test CA.
    daemon = daemons([f"tls://localhost:{port}", udp_upstream(standin.port)])

    reply = daemon.ask("dot-unverified.test")

    assert addresses(reply) == [name_address("dot-unverified.test")]
    assert upstream.count("dot-unverified.test") == 0
    assert standin.count("dot-unverified.test") == 1
    assert "CERTIFICATE_VERIFY_FAILED" in daemon.stderr()


# ---------------------------------------------------------------- filterd check


def filterd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "filterd", *args], capture_output=True, text=True,
                          timeout=30, cwd=cwd)


def test_check_accepts_a_good_config(tmp_path):
    config = tmp_path / "good.yaml"
    config.write_text('dns:\n  listen: ["127.0.0.1:5353"]\n  upstreams: ["udp://9.9.9.9", "tls://dns.quad9.net"]\n')

    result = filterd("check", "--config", str(config))

    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "2 upstreams" in result.stdout


def test_check_accepts_the_shipped_config():
    shipped = Path(__file__).parents[2] / "config" / "filterd.yaml"

    result = filterd("check", "--config", str(shipped))

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("text, message", [
    ('dns:\n  listen: ["127.0.0.1:99999"]\n  upstreams: ["udp://9.9.9.9"]\n',
     'dns.listen[0]: "127.0.0.1:99999" is not a valid port (line 2)'),
    ('dns:\n  upstreams: ["udp://9.9.9.9"]\n  colour: blue\n',
     "dns.colour: unknown key"),
    ('dns:\n  upstreams:\n    - udp://9.9.9.9\n    - ftp://9.9.9.9\n',
     'dns.upstreams[1]: "ftp://9.9.9.9" must start with udp://, tcp://, tls:// or https:// (line 4)'),
    ('dns:\n  upstreams: ["udp://9.9.9.9"]\n  allow_networks: ["192.168.0.0/33"]\n',
     'dns.allow_networks[0]: "192.168.0.0/33" is not a network'),
    ('dns:\n  upstreams: ["udp://9.9.9.9"\n  workers: 2\n',
     "not valid YAML (line 3"),
], ids=["port", "unknown-key", "scheme", "network", "yaml"])
def test_check_rejects_a_bad_config_naming_the_path(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)

    result = filterd("check", "--config", str(config))

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_a_bad_config_and_exits_2(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text('dns:\n  upstreams: ["9.9.9.9"]\n  rate_limit: fast\n')

    result = filterd("run", "--config", str(config))

    assert result.returncode == 2
    assert 'dns.rate_limit: "fast" must be a whole number' in result.stderr


# ---------------------------------------------------------------- the process


def test_reload_switches_upstreams_and_refuses_a_bad_file(daemons, standins, standin):
    daemon = daemons([udp_upstream(standin.port)])
    assert addresses(daemon.ask("reload-before.test")) == [name_address("reload-before.test")]
    assert standin.count("reload-before.test") == 1
    new_upstream, new_port = standins()

    daemon.write_config(daemon.config_for({"upstreams": [udp_upstream(new_port)]}))
    attempt = iter(range(10_000))

    def new_upstream_asked() -> bool:
        name = f"reload-{next(attempt)}.test"
        return daemon.ask(name).header.rcode == NOERROR and new_upstream.count(name) == 1
    wait_until(new_upstream_asked, timeout=10, interval=0.1, message="the new upstream to be used")

    daemon.write_config(daemon.config_for({"upstreams": ["ftp://192.0.2.1"]}))
    wait_until(lambda: "refused" in daemon.stderr(), timeout=10, message="the bad config to be refused")
    after = daemon.ask("reload-after.test")

    assert 'dns.upstreams[0]: "ftp://192.0.2.1" must start with' in daemon.stderr()
    assert addresses(after) == [name_address("reload-after.test")]
    assert new_upstream.count("reload-after.test") == 1
    assert daemon.alive()


def test_sigterm_stops_the_daemon_even_with_a_client_connected(daemons, standin):
    daemon = daemons([udp_upstream(standin.port)])
    daemon.ask("before-sigterm.test")
    with tcp_connect(daemon.port) as idle_client:
        assert tcp_ask(idle_client, "before-sigterm-tcp.test") is not None

        status = daemon.terminate(timeout=5)

    assert status == 0
    assert "Traceback" not in daemon.stderr()


def test_listens_on_every_configured_address_ipv4_and_ipv6(daemons, standin):
    port = free_port()
    daemon = daemons([udp_upstream(standin.port)], port=port, listen=[f"127.0.0.1:{port}", f"[::1]:{port}"])
    query = make_query("ipv6-listen.test")

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(query.pack(), ("::1", port))
        over_udp6 = DNSRecord.parse(sock.recv(65535))
    with socket.create_connection(("::1", port), timeout=3) as sock:
        sock.sendall(struct.pack(">H", len(query.pack())) + query.pack())
        over_tcp6 = DNSRecord.parse(read_tcp_message(sock))

    assert addresses(over_udp6) == addresses(over_tcp6) == [name_address("ipv6-listen.test")]
    assert addresses(daemon.ask("ipv6-listen.test")) == [name_address("ipv6-listen.test")]


def test_busy_port_makes_run_exit_1_naming_the_address(daemons, standin):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        daemon = daemons([udp_upstream(standin.port)], port=port, start=False).launch()

        status = daemon.process.wait(timeout=15)

    assert status == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in daemon.stderr()


def test_second_daemon_on_the_same_port_refuses_to_start(daemons, standin):
    first = daemons([udp_upstream(standin.port)])
    second = daemons([udp_upstream(standin.port)], port=first.port, start=False).launch()

    wait_until(lambda: not second.alive() or "answering DNS" in second.stderr(), timeout=15,
               message="the second daemon to exit or to serve")

    assert not second.alive() and second.process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.stderr()


def processes_in_group(group: int) -> list[tuple[int, str]]:
    """(pid, state) of every process in a process group, zombies excluded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state != "Z":
            found.append((int(entry.name), state))
    return found


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_two_workers_both_answer_and_all_stop_on_sigterm(daemons, standin):
    daemon = daemons([udp_upstream(standin.port)], workers=2)
    wait_until(lambda: len(children_of(daemon.process.pid)) == 2, message="two worker processes")

    # Each query from a new socket (a new source port): the kernel spreads them over the
    # workers, and each worker has its own cache, so the upstream hears the name once per worker.
    wait_until(lambda: addresses(daemon.ask("two-workers.test")) == [name_address("two-workers.test")]
               and standin.count("two-workers.test") == 2, timeout=10, message="both workers to answer")
    replies = [daemon.ask(f"two-workers-{i % 5}.test") for i in range(60)]
    assert all(addresses(r) == [name_address(f"two-workers-{i % 5}.test")] for i, r in enumerate(replies))
    assert standin.count("two-workers.test") == 2

    # A worker that dies is replaced.
    victim = children_of(daemon.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in children_of(daemon.process.pid)
               and len(children_of(daemon.process.pid)) == 2, message="the dead worker to be replaced")
    assert all(daemon.ask(f"after-restart-{i}.test").header.rcode == NOERROR for i in range(20))

    group = daemon.process.pid
    assert daemon.terminate(timeout=10) == 0
    wait_until(lambda: not processes_in_group(group), message="every worker to exit")
