"""DNS wire format on the hot path: parse a query's header and question by hand, build small replies.

dnslib parses a packet in tens of microseconds; a cache hit must cost a few. So the daemon reads
only what it needs from the bytes here and keeps dnslib for full parsing off the hot path
(upstream answers, see `answer.py`).
"""
from __future__ import annotations

import struct

# Header flag bits (second and third header bytes as one 16-bit word).
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_PTR, TYPE_MX, TYPE_TXT = 1, 2, 5, 6, 12, 15, 16
TYPE_AAAA, TYPE_OPT, TYPE_SVCB, TYPE_HTTPS, TYPE_ANY, TYPE_HINFO = 28, 41, 64, 65, 255, 13
CLASS_IN = 1

# What we advertise and accept over UDP: the DNS Flag Day 2020 size, safe from fragmentation.
OUR_UDP_SIZE = 1232
PLAIN_UDP_SIZE = 512
MAX_NAME_WIRE = 255


_HEADER = struct.Struct(">HHHHH")       # flags and the four counts, after the ID
_TYPE_CLASS = struct.Struct(">HH")


class WireError(Exception):
    """A query we cannot serve; `rcode` is what to answer (None: drop it silently)."""

    def __init__(self, rcode: int | None, why: str):
        super().__init__(why)
        self.rcode = rcode


class Query:
    """The parts of a client's query the daemon needs, read straight from its bytes."""

    __slots__ = ("data", "qend", "key", "qtype", "qclass", "has_opt", "udp_size", "do", "rd",
                 "opt_version", "client_subnet")

    def __init__(self, data: bytes, qend: int, key: bytes, qtype: int, qclass: int, has_opt: bool,
                 udp_size: int, do: bool, rd: bool, opt_version: int = 0):
        self.data = data
        self.qend = qend            # offset just past the question (name, type, class)
        self.key = key              # lowercased question bytes (+ b"D" when DO is set): the cache key
        self.qtype = qtype
        self.qclass = qclass
        self.has_opt = has_opt
        self.udp_size = udp_size    # the most we may send back over UDP
        self.do = do
        self.rd = rd
        self.opt_version = opt_version

    @property
    def id(self) -> bytes:
        return self.data[:2]

    @property
    def name(self) -> str:
        """The query name, lowercased, without trailing dot ('' for the root)."""
        return name_from_question(self.key)

    @property
    def question(self) -> bytes:
        return self.data[12:self.qend]

    def variant(self, has_opt: bool) -> "Query":
        """The same question asked with or without EDNS: to build both variants of a reply
        the daemon makes itself, from one parse."""
        return Query(self.data[:self.qend], self.qend, self.key, self.qtype, self.qclass, has_opt,
                     self.udp_size, self.do, self.rd, self.opt_version)


def name_from_question(question: bytes) -> str:
    """Decode an uncompressed wire name (as at the start of a question) to 'a.b.c'."""
    labels = []
    i = 0
    length = question[0]
    while length:
        labels.append(question[i + 1:i + 1 + length].decode("latin-1"))
        i += length + 1
        length = question[i]
    return ".".join(labels)


def encode_name(name: str) -> bytes:
    """'a.b.c' → wire form; raises ValueError on a label over 63 bytes or a name over 255."""
    out = bytearray()
    for label in name.strip(".").split("."):
        if not label:
            continue
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise ValueError(f"label too long: {label[:20]}…")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME_WIRE:
        raise ValueError("name too long")
    return bytes(out)


def skip_name(data: bytes, i: int) -> int:
    """Offset just past a (possibly compressed) name starting at i; raises IndexError/WireError.

    A compression pointer must point before the name it ends (RFC 1035 §4.1.4: "a prior
    occurrence"), which also rules out loops.
    """
    start = i
    hops = 0
    while True:
        length = data[i]
        if length == 0:
            return i + 1
        if length & 0xC0 == 0xC0:
            if ((length & 0x3F) << 8 | data[i + 1]) >= start:
                raise WireError(FORMERR, "compression pointer does not point backwards")
            return i + 2
        if length & 0xC0:
            raise WireError(FORMERR, "reserved label type")
        i += length + 1
        hops += 1
        if hops > 127:
            raise WireError(FORMERR, "name too long")


def parse_query(data: bytes) -> Query:
    """Read header, question and EDNS OPT of a client query.

    Raises WireError(rcode) for anything we will not serve: FORMERR for malformed queries,
    NOTIMP for opcodes other than QUERY, None (drop) for responses and runts.
    """
    if len(data) < 12:
        raise WireError(None, "shorter than a header")
    flags, qdcount, ancount, nscount, additional = _HEADER.unpack_from(data, 2)
    if flags & 0x8000:
        raise WireError(None, "a response, not a query")
    if flags & 0x7800:
        raise WireError(NOTIMP, "opcode other than QUERY")
    if qdcount != 1:
        raise WireError(FORMERR, "question count is not 1")
    # The question name: uncompressed labels only (nothing precedes it to point to).
    i = 12
    end = len(data)
    try:
        length = data[i]
        while length:
            if length > 63:
                raise WireError(FORMERR, "compressed or oversized label in question")
            i += length + 1
            length = data[i]
        if i > 266:   # 12 + 255 - 1: the name's wire form is at most 255 bytes
            raise WireError(FORMERR, "name over 255 bytes")
        qend = i + 5
        if qend > end:
            raise WireError(FORMERR, "question cut short")
        qtype, qclass = _TYPE_CLASS.unpack_from(data, i + 1)
        has_opt = False
        udp_size = PLAIN_UDP_SIZE
        do = False
        version = 0
        other_records = ancount + nscount
        if not other_records and additional == 1 and end == qend + 11 + ((data[qend + 9] << 8) | data[qend + 10]) \
                and data[qend] == 0 and data[qend + 1] == 0 and data[qend + 2] == TYPE_OPT:
            # The usual shape: the question, then one OPT record and nothing else.
            has_opt = True
            udp_size = max(PLAIN_UDP_SIZE, min((data[qend + 3] << 8) | data[qend + 4], OUR_UDP_SIZE))
            version = data[qend + 6]
            do = data[qend + 7] >= 0x80
        elif other_records or additional:
            j = qend
            for n in range(other_records + additional):
                start = j
                j = skip_name(data, j)
                if j + 10 > end:
                    raise WireError(FORMERR, "record cut short")
                rtype = (data[j] << 8) | data[j + 1]
                if rtype == TYPE_OPT:
                    if has_opt or n < other_records or j != start + 1:
                        raise WireError(FORMERR, "misplaced or repeated OPT record")
                    has_opt = True
                    udp_size = max(PLAIN_UDP_SIZE, min((data[j + 2] << 8) | data[j + 3], OUR_UDP_SIZE))
                    version = data[j + 5]
                    do = bool(data[j + 6] & 0x80)
                rdlength = (data[j + 8] << 8) | data[j + 9]
                j += 10 + rdlength
                if j > end:
                    raise WireError(FORMERR, "record data cut short")
    except IndexError:
        raise WireError(FORMERR, "packet cut short") from None
    question = data[12:i].lower() + data[i:qend]  # names are case-insensitive, types are not
    return Query(data, qend, question + b"D" if do else question, qtype, qclass, has_opt,
                 udp_size, do, flags & 0x0100 != 0, version)


# ---------------------------------------------------------------- building replies


def opt_record(do: bool = False, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """Our OPT pseudo-record: root owner, our UDP size, version 0, DO echoed."""
    return struct.pack(">BHHBBBBH", 0, TYPE_OPT, OUR_UDP_SIZE, ext_rcode, 0, 0x80 if do else 0, 0,
                       len(options)) + options


def ede_option(code: int, text: str = "") -> bytes:
    """An Extended DNS Error option (RFC 8914) for an OPT record."""
    payload = struct.pack(">H", code) + text.encode("utf-8")
    return struct.pack(">HH", 15, len(payload)) + payload


def reply_header(query: Query, rcode: int, an: int = 0, ns: int = 0, ar: int = 0, aa: bool = False) -> bytes:
    flags = QR | RA | (query.data[2] << 8 & 0x7800) | (RD if query.rd else 0) | (AA if aa else 0) | (rcode & 0xF)
    return query.data[:2] + struct.pack(">HHHHH", flags, 1, an, ns, ar)


def error_reply(query: Query, rcode: int, ede: bytes = b"") -> bytes:
    """A reply with no records and the given rcode, echoing the question (and OPT if sent)."""
    if query.has_opt:
        return (reply_header(query, rcode, ar=1) + query.question
                + opt_record(query.do, rcode >> 4, ede))
    return reply_header(query, rcode) + query.question


def header_only_reply(data: bytes, rcode: int) -> bytes | None:
    """A reply to a query we could not parse: ID and opcode echoed, no question, or None to drop."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    flags = QR | (data[2] << 8 & 0x7900) | (rcode & 0xF)
    return data[:2] + struct.pack(">HHHHH", flags, 0, 0, 0, 0)


def truncated_reply(query: Query) -> bytes:
    """Header and question with TC set, so the client retries over TCP (RFC 7766)."""
    reply = bytearray(error_reply(query, NOERROR))
    reply[2] |= TC >> 8
    return bytes(reply)


def rfc8482_reply(query: Query) -> bytes:
    """Minimal answer to ANY: one synthesised HINFO record (RFC 8482)."""
    rdata = b"\x07RFC8482\x00"
    record = b"\xc0\x0c" + struct.pack(">HHIH", TYPE_HINFO, CLASS_IN, 3600, len(rdata)) + rdata
    ar = 1 if query.has_opt else 0
    out = reply_header(query, NOERROR, an=1, ar=ar) + query.question + record
    return out + opt_record(query.do) if query.has_opt else out


def build_query(question: bytes, do: bool, msg_id: int) -> bytes:
    """A query towards an upstream: recursion desired, our OPT record, the given question."""
    return struct.pack(">HHHHHH", msg_id, RD, 1, 0, 0, 1) + question + opt_record(do)


# ---------------------------------------------------------------- reading answers


class AnswerLayout:
    """Where the records of an answer sit in its bytes: what the cache needs to patch TTLs."""

    __slots__ = ("ttl_offsets", "opt_start", "opt_end", "qend")

    def __init__(self, ttl_offsets: list[int], opt_start: int, opt_end: int, qend: int):
        self.ttl_offsets = ttl_offsets
        self.opt_start = opt_start
        self.opt_end = opt_end
        self.qend = qend


def answer_layout(data: bytes) -> AnswerLayout:
    """Walk every record of a full response; raises WireError(FORMERR) if it is malformed."""
    try:
        if data[4] != 0 or data[5] != 1:
            raise WireError(FORMERR, "answer does not have one question")
        qend = i = skip_name(data, 12) + 4
        counts = struct.unpack_from(">HHH", data, 6)
        total = counts[0] + counts[1] + counts[2]
        offsets: list[int] = []
        opt_start = opt_end = -1
        for n in range(total):
            start = i
            i = skip_name(data, i)
            rtype, _rclass, _ttl, rdlength = struct.unpack_from(">HHIH", data, i)
            if rtype == TYPE_OPT:
                opt_start, opt_end = start, i + 10 + rdlength
            else:
                offsets.append(i + 4)
            i += 10 + rdlength
            if i > len(data):
                raise WireError(FORMERR, "record data cut short")
    except (IndexError, struct.error):
        raise WireError(FORMERR, "answer cut short") from None
    return AnswerLayout(offsets, opt_start, opt_end, qend)


def rcode_of(data: bytes) -> int:
    return data[3] & 0x0F
