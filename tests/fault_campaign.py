#!/usr/bin/env python3
"""The fault campaign: mutated queries over UDP and TCP, and hostile upstream answers.

Used twice: `tests/e2e/test_faults.py` runs a short campaign in `make test` (5,000 UDP and
1,000 TCP messages), and `make fuzz` runs this file for the long one and prints the figures
(`--udp 100000 --tcp 20000`). The seed is fixed, so a failure is reproduced by running again.

Every mutation starts from a well-formed query and breaks one thing the way real traffic
and attackers do: bit flips, truncation, bogus section counts, compression loops, bad EDNS
lengths, odd opcodes, classes and types; over TCP also bad length prefixes, writes split at
random places, and half-closed connections. A reply must carry the ID of a query we sent and,
when it has a question, exactly that query's question; after every 1,000 messages a normal
query must still be answered.
"""
from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dnslib import EDNS0, QTYPE, RR, A, DNSRecord  # noqa: E402

from standin import name_address  # noqa: E402

SEED = 20261205
NAMES = ["example.test", "www.shop.test", "a.b.c.d.e.deep.test", "x", "", "long-" + "l" * 50 + ".test",
         "UPPER.Case.Test", "cdn.video.test"]
QTYPES = [1, 28, 15, 16, 65, 64, 255, 2, 6, 12, 33, 257, 0, 65535, 41, 252, 251]


# ---------------------------------------------------------------- building and breaking queries


def base_query(rng: random.Random) -> bytes:
    """A well-formed query: a name, a type, sometimes EDNS with or without DO."""
    name = rng.choice(NAMES)
    if rng.random() < 0.5:
        name = f"f{rng.randrange(10**6)}.{name}" if name else f"f{rng.randrange(10**6)}"
    record = DNSRecord.question(name or ".", QTYPE.get(rng.choice(QTYPES[:7]), "A"))
    record.header.rd = rng.random() < 0.9
    if rng.random() < 0.5:
        record.add_ar(EDNS0(udp_len=rng.choice([512, 1232, 4096, 0, 65535]), flags="do" if rng.random() < 0.3 else ""))
    return bytes(record.pack())


def question_end(data: bytes) -> int | None:
    """Offset past the question if it is uncompressed and whole, else None."""
    i = 12
    try:
        while data[i]:
            if data[i] > 63:
                return None
            i += data[i] + 1
    except IndexError:
        return None
    return i + 5 if i + 5 <= len(data) else None


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One kind of damage, chosen at random."""
    data = bytearray(data)
    kind = rng.randrange(12)
    if kind == 0:      # bit flips anywhere
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:    # truncated anywhere
        data = data[:rng.randrange(len(data))]
    elif kind == 2:    # bogus counts
        struct.pack_into(">HHHH", data, 4, *(rng.choice([0, 1, 2, 255, 65535]) for _ in range(4)))
    elif kind == 3:    # a record whose name is a pointer to itself, or a loop of two
        here = len(data)
        if rng.random() < 0.5:
            data += struct.pack(">H", 0xC000 | here) + struct.pack(">HHIH", 1, 1, 0, 0)
        else:
            data += struct.pack(">HH", 0xC000 | here + 2, 0xC000 | here) + struct.pack(">HHIH", 1, 1, 0, 0)
        struct.pack_into(">H", data, 10, struct.unpack_from(">H", data, 10)[0] + 1)
    elif kind == 4:    # an OPT record whose lengths lie
        opt = bytearray(b"\x00" + struct.pack(">HHIH", 41, rng.choice([0, 512, 65535]), 0, 0))
        options = struct.pack(">HH", rng.choice([8, 10, 12, 15]), rng.choice([0, 4, 200])) + bytes(rng.randrange(8))
        struct.pack_into(">H", opt, 9, rng.choice([len(options), len(options) + 5, 0, 65535]))
        data += opt + options
        struct.pack_into(">H", data, 10, struct.unpack_from(">H", data, 10)[0] + 1)
    elif kind == 5:    # odd opcode and flags
        data[2] = rng.randrange(256) & 0x7F
        data[3] = rng.randrange(256)
    elif kind == 6:    # odd type and class
        end = question_end(bytes(data))
        if end:
            struct.pack_into(">HH", data, end - 4, rng.randrange(65536), rng.choice([0, 1, 3, 4, 254, 255, rng.randrange(65536)]))
    elif kind == 7:    # garbage after a header
        data = data[:12] + bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
    elif kind == 8:    # a label longer than 63, or a name over 255
        if rng.random() < 0.5:
            data = data[:12] + bytes([64 + rng.randrange(192)]) + b"a" * 70 + b"\x00\x00\x01\x00\x01"
        else:
            data = data[:12] + (b"\x3fa" + b"b" * 62) * 5 + b"\x00\x00\x01\x00\x01"
        struct.pack_into(">HHHH", data, 4, 1, 0, 0, 0)
    elif kind == 9:    # a compression pointer in the question
        data = data[:12] + b"\xc0\x0c\x00\x01\x00\x01"
    elif kind == 10:   # trailing junk
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    else:              # a response instead of a query
        data[2] |= 0x80
    return bytes(data)


def with_id(data: bytes, msg_id: int) -> bytes:
    if len(data) < 2:
        return data
    return struct.pack(">H", msg_id) + data[2:]


# ---------------------------------------------------------------- checking replies


@dataclass
class Figures:
    sent: int = 0
    replies: int = 0
    unparseable: int = 0
    wrong_id: int = 0
    wrong_question: int = 0
    health_checks: int = 0
    health_failures: int = 0
    problems: list[str] = field(default_factory=list)

    def check(self, reply: bytes, sent: dict[int, bytes]) -> None:
        """One reply against the queries it may answer (by ID)."""
        self.replies += 1
        if not well_formed(reply):
            self.unparseable += 1
            self._note(f"malformed reply {reply[:48].hex()}")
        if len(reply) < 12:
            self.wrong_id += 1
            return
        msg_id = struct.unpack(">H", reply[:2])[0]
        query = sent.get(msg_id)
        if query is None:
            self.wrong_id += 1
            self._note(f"reply with an ID never sent: {reply[:48].hex()}")
            return
        if reply[4:6] == b"\x00\x01":
            end = question_end(query)
            if end is None or reply[12:end] != query[12:end]:
                self.wrong_question += 1
                self._note(f"reply question differs: sent {query[:48].hex()} got {reply[:48].hex()}")

    def _note(self, problem: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(problem)


def well_formed(reply: bytes) -> bool:
    """A reply whose header, question and records can be walked to its last byte.

    Our own structural walk, not dnslib's: dnslib also refuses label bytes it cannot show
    (a client may ask for any bytes, and its question is echoed as it was sent)."""
    from filterd.dns import wire

    if len(reply) < 12 or not reply[2] & 0x80:
        return False
    if reply[4:12] == b"\0" * 8:
        return len(reply) == 12
    try:
        layout = wire.answer_layout(reply)
    except wire.WireError:
        return False
    counts = struct.unpack_from(">HHH", reply, 6)
    return layout.qend <= len(reply) and len(layout.ttl_offsets) + (layout.opt_start >= 0) == sum(counts)


def healthy(port: int, rng: random.Random, tcp: bool = False) -> bool:
    """A normal query for a new name is answered with the stand-in's address."""
    name = f"health{rng.randrange(10**9)}.test"
    packet = DNSRecord.question(name).pack()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if tcp:
                with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
                    sock.sendall(struct.pack(">H", len(packet)) + packet)
                    head = _recv_exact(sock, 2)
                    reply = _recv_exact(sock, struct.unpack(">H", head)[0]) if head else None
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(3)
                    sock.sendto(packet, ("127.0.0.1", port))
                    reply = sock.recv(65535)
        except OSError:
            reply = None
        if reply:
            parsed = DNSRecord.parse(reply)
            if parsed.header.id == DNSRecord.parse(packet).header.id and parsed.header.rcode == 0:
                return [str(rr.rdata) for rr in parsed.rr] == [name_address(name)]
    return False


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# ---------------------------------------------------------------- the two campaigns


def udp_campaign(port: int, count: int, seed: int = SEED, figures: Figures | None = None,
                 batch: int = 100) -> Figures:
    """`count` mutated datagrams in batches; replies checked; a health check every 1,000."""
    rng = random.Random(seed)
    figures = figures or Figures()
    next_id = 0
    sent: dict[int, bytes] = {}   # by ID; a late reply may answer an earlier batch
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        while figures.sent < count:
            for _ in range(min(batch, count - figures.sent)):
                packet = with_id(mutate(rng, base_query(rng)), next_id)
                if len(packet) >= 2:
                    sent[next_id] = packet
                next_id = (next_id + 1) & 0xFFFF
                sock.sendto(packet, ("127.0.0.1", port))
                figures.sent += 1
            sock.settimeout(0.3)   # quiet this long after the last reply: the batch is done
            while True:
                try:
                    figures.check(sock.recv(65535), sent)
                except socket.timeout:
                    break
            if figures.sent % 1000 == 0:
                figures.health_checks += 1
                if not healthy(port, rng):
                    figures.health_failures += 1
                    figures._note(f"no answer to a normal query after {figures.sent} datagrams")
    return figures


def tcp_campaign(port: int, count: int, seed: int = SEED + 1, figures: Figures | None = None,
                 per_connection: int = 20) -> Figures:
    """`count` mutated messages over connections of `per_connection` each: some with a bad
    length prefix, some written in pieces; every connection half-closed at the end, so the
    daemon answers what it owes and closes (RFC 7766)."""
    rng = random.Random(seed)
    figures = figures or Figures()
    next_id = 0
    while figures.sent < count:
        sent: dict[int, bytes] = {}
        stream = bytearray()
        for _ in range(min(per_connection, count - figures.sent)):
            packet = with_id(mutate(rng, base_query(rng)), next_id)
            sent[next_id] = packet
            next_id = (next_id + 1) & 0xFFFF
            figures.sent += 1
            roll = rng.random()
            if roll < 0.05:     # a length prefix of 0, or a runt (framed right: the stream stays in step)
                runt = packet[:rng.choice([0, 1, 2, 11])]
                stream += struct.pack(">H", len(runt)) + runt
            else:
                stream += struct.pack(">H", len(packet)) + packet
        if rng.random() < 0.1:  # a last message announced longer than it is: the daemon must not wait forever
            stream += struct.pack(">H", rng.choice([100, 65535])) + b"\x12\x34"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if rng.random() < 0.3:   # split writes at random places
                    at = 0
                    while at < len(stream):
                        step = rng.randint(1, 40)
                        sock.sendall(stream[at:at + step])
                        at += step
                else:
                    sock.sendall(stream)
                sock.shutdown(socket.SHUT_WR)
                while True:
                    head = _recv_exact(sock, 2)
                    if head is None:
                        break
                    reply = _recv_exact(sock, struct.unpack(">H", head)[0])
                    if reply is None:
                        break
                    figures.check(reply, sent)
        except (ConnectionError, socket.timeout) as exc:
            figures._note(f"TCP connection ended with {exc!r}")
        if figures.sent % 1000 < per_connection and figures.sent >= 1000:
            figures.health_checks += 1
            if not healthy(port, rng, tcp=True):
                figures.health_failures += 1
                figures._note(f"no answer to a normal TCP query after {figures.sent} messages")
    return figures


# ---------------------------------------------------------------- a hostile upstream


HOSTILE_MODES = ("honest", "garbage", "truncated", "wrong_id", "wrong_question", "pointer_loop",
                 "caa_not_utf8", "count_lies", "junk_record", "slow", "too_slow")


class HostileUpstream:
    """A UDP upstream that answers each question in the way `mode` says.

    Honest answers are A records with the stand-in's address for the name (and a CAA record
    for CAA questions); every other mode breaks that answer one way."""

    def __init__(self, timeout_s: float):
        self.mode = "honest"
        self.timeout_s = timeout_s
        self.questions: dict[str, int] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.rng = random.Random(SEED + 2)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            try:
                request = DNSRecord.parse(data)
            except Exception:
                continue
            name = str(request.q.qname).rstrip(".").lower()
            self.questions[name] = self.questions.get(name, 0) + 1
            mode = self.mode
            delay = {"slow": self.timeout_s / 4, "too_slow": self.timeout_s * 3}.get(mode, 0)
            threading.Thread(target=self._answer, args=(request, data, addr, mode, delay), daemon=True).start()

    def _answer(self, request: DNSRecord, data: bytes, addr, mode: str, delay: float) -> None:
        if delay:
            threading.Event().wait(delay)
        try:
            self.sock.sendto(self.answer(request, data, mode), addr)
        except OSError:
            pass

    def answer(self, request: DNSRecord, data: bytes, mode: str) -> bytes:
        name = str(request.q.qname).rstrip(".")
        reply = request.reply()
        if request.q.qtype == QTYPE.CAA:
            caa = b"\x00" + bytes([5]) + (b"\xff\xfe\xfd\xfc\xfb" if mode == "caa_not_utf8" else b"issue") + b"ca.test"
            rdata = struct.pack(">HHIH", QTYPE.CAA, 1, 300, len(caa)) + caa
            head = bytearray(reply.pack())
            struct.pack_into(">H", head, 6, 1)
            return bytes(head) + b"\xc0\x0c" + rdata
        reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=300, rdata=A(name_address(name))))
        if mode == "junk_record":
            reply.add_answer(RR("evil.example.", QTYPE.A, ttl=300, rdata=A("6.6.6.6")))
        packed = bytearray(reply.pack())
        end = question_end(bytes(packed))
        if mode == "garbage":
            return bytes(packed[:end]) + bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 80)))
        if mode == "truncated":
            return bytes(packed[:end + 7])
        if mode == "wrong_id":
            struct.pack_into(">H", packed, 0, struct.unpack_from(">H", packed, 0)[0] ^ 0xFFFF)
        elif mode == "wrong_question":
            other = DNSRecord.question("other.test").reply()
            other.header.id = request.header.id
            other.add_answer(RR("other.test.", QTYPE.A, ttl=300, rdata=A("6.6.6.6")))
            return bytes(other.pack())
        elif mode == "pointer_loop":
            here = end
            return bytes(packed[:end]) + struct.pack(">H", 0xC000 | here) + struct.pack(">HHIH", 1, 1, 300, 4) + b"\x06\x06\x06\x06"
        elif mode == "count_lies":
            struct.pack_into(">H", packed, 6, 5)
        return bytes(packed)


# ---------------------------------------------------------------- make fuzz


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (kB)."""
    total = 0
    for candidate in [pid, *_children(pid)]:
        try:
            for line in open(f"/proc/{candidate}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--udp", type=int, default=100_000)
    ap.add_argument("--tcp", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    import tempfile

    from conftest import Daemon
    from standin import StandIn

    upstream = StandIn()
    upstream_port = upstream.start()
    with tempfile.TemporaryDirectory() as folder:
        daemon = Daemon(Path(folder), {"upstreams": [f"udp://127.0.0.1:{upstream_port}"],
                                       "upstream_timeout": 1.0}).start()
        try:
            pid = daemon.process.pid
            before = rss_kb(pid)
            started = time.monotonic()
            udp = udp_campaign(daemon.port, args.udp, args.seed)
            tcp = tcp_campaign(daemon.port, args.tcp, args.seed + 1)
            elapsed = time.monotonic() - started
            after = rss_kb(pid)
            stderr = daemon.stderr()
            crashes = stderr.count("Traceback") + (0 if daemon.alive() else 1)
        finally:
            daemon.stop()
            upstream.stop()
    print(f"fault campaign, seed {args.seed}, {elapsed:.0f} s")
    for label, figures in (("UDP", udp), ("TCP", tcp)):
        print(f"  {label}: {figures.sent:,} sent, {figures.replies:,} replies, {figures.unparseable} unparseable,"
              f" {figures.wrong_id} wrong ID, {figures.wrong_question} wrong question,"
              f" {figures.health_failures}/{figures.health_checks} health checks failed")
        for problem in figures.problems:
            print(f"    {problem}")
    print(f"  crashes (tracebacks in the daemon's log, or the daemon gone): {crashes}")
    print(f"  RSS: {before / 1024:.1f} MB before, {after / 1024:.1f} MB after")
    bad = crashes + udp.unparseable + udp.wrong_id + udp.wrong_question + udp.health_failures \
        + tcp.unparseable + tcp.wrong_id + tcp.wrong_question + tcp.health_failures
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
