"""filterd.dns.wire: the hand-written query parser and the small replies built from bytes."""
from __future__ import annotations

import struct

import pytest
from dnslib import EDNS0, QTYPE, RR, DNSRecord

from filterd.dns import wire


def query_bytes(name: str = "example.test", qtype: str = "A", edns: int | None = None,
                do: bool = False, version: int = 0, rd: bool = True, msg_id: int = 0x1234) -> bytes:
    record = DNSRecord.question(name, qtype)
    record.header.id = msg_id
    record.header.rd = int(rd)
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns, version=version, flags="do" if do else ""))
    return bytes(record.pack())


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack(">HHHHHH", 0x4242, flags, qd, an, ns, ar)


QUESTION = b"\x07example\x04test\x00\x00\x01\x00\x01"
ROOT_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"


# ---------------------------------------------------------------- parse_query: good input


def test_parse_query_reads_the_question():
    query = wire.parse_query(query_bytes("www.Example.TEST", "AAAA"))

    assert query.qtype == wire.TYPE_AAAA and query.qclass == wire.CLASS_IN
    assert query.name == "www.example.test"
    assert query.question == b"\x03www\x07Example\x04TEST\x00\x00\x1c\x00\x01"
    assert query.key == b"\x03www\x07example\x04test\x00\x00\x1c\x00\x01"
    assert query.id == b"\x12\x34" and query.rd
    assert not query.has_opt and query.udp_size == 512 and not query.do


def test_parse_query_without_recursion_desired():
    assert not wire.parse_query(query_bytes(rd=False)).rd


@pytest.mark.parametrize("advertised, used", [(4096, 1232), (1232, 1232), (1000, 1000), (100, 512), (0, 512)])
def test_parse_query_clamps_the_edns_buffer_between_512_and_1232(advertised, used):
    query = wire.parse_query(query_bytes(edns=advertised))

    assert query.has_opt and query.udp_size == used


def test_parse_query_reads_do_and_edns_version_and_keys_do_apart():
    plain = wire.parse_query(query_bytes(edns=1232))
    with_do = wire.parse_query(query_bytes(edns=1232, do=True))
    version1 = wire.parse_query(query_bytes(edns=1232, version=1))

    assert with_do.do and not plain.do
    assert with_do.key != plain.key  # a DNSSEC answer is not served to a client that did not ask
    assert version1.opt_version == 1 and plain.opt_version == 0


def test_parse_query_accepts_the_root_name():
    query = wire.parse_query(header() + b"\x00\x00\x02\x00\x01")

    assert query.name == "" and query.qtype == wire.TYPE_NS


def test_parse_query_accepts_a_name_of_exactly_255_bytes():
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 64*3 + 62 + 1 = 255 bytes on the wire

    query = wire.parse_query(header() + wire.encode_name(name) + b"\x00\x01\x00\x01")

    assert query.name == name


def test_parse_query_accepts_other_additional_records_besides_opt():
    an_a_record = b"\x03key\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\x7f\x00\x00\x01"

    query = wire.parse_query(header(ar=2) + QUESTION + an_a_record + ROOT_OPT)

    assert query.has_opt and query.qend == 12 + len(QUESTION)


def test_cache_key_keeps_query_types_apart():
    https = wire.parse_query(header() + b"\x01a\x00" + struct.pack(">HH", 65, 1))
    type97 = wire.parse_query(header() + b"\x01a\x00" + struct.pack(">HH", 97, 1))

    assert https.key != type97.key


# ---------------------------------------------------------------- parse_query: bad input


@pytest.mark.parametrize("data, rcode", [
    (b"", None),
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00", None),          # 11 bytes: shorter than a header
    (header(flags=0x8180) + QUESTION, None),                             # a response: never answered
    (header(flags=0x1100) + QUESTION, wire.NOTIMP),                      # opcode 2, STATUS
    (header(flags=0x2900) + QUESTION, wire.NOTIMP),                      # opcode 5, UPDATE
    (header(qd=0), wire.FORMERR),
    (header(qd=2) + QUESTION + QUESTION, wire.FORMERR),
    (header(qd=0x0101) + QUESTION, wire.FORMERR),
    (header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", wire.FORMERR),     # label of 64
    (header() + (b"\x3f" + b"x" * 63) * 4 + b"\x00\x00\x01\x00\x01", wire.FORMERR),  # 257 bytes
    (header() + b"\xc0\x0c\x00\x01\x00\x01", wire.FORMERR),              # pointer (to itself)
    (header() + b"\x07example", wire.FORMERR),                           # name cut short
    (header() + b"\x07example\x04test\x00\x00\x01", wire.FORMERR),       # class missing
    (header(ar=1) + QUESTION, wire.FORMERR),                             # promised record missing
    (header(ar=1) + QUESTION + ROOT_OPT[:-1], wire.FORMERR),             # OPT cut short
    (header(ar=1) + QUESTION + ROOT_OPT[:-2] + b"\x00\x64", wire.FORMERR),  # OPT rdlength past the end
    (header(ar=2) + QUESTION + ROOT_OPT + ROOT_OPT, wire.FORMERR),       # two OPTs
    (header(an=1) + QUESTION + ROOT_OPT, wire.FORMERR),                  # OPT in the answer section
    (header(ar=1) + QUESTION + b"\x01a" + ROOT_OPT, wire.FORMERR),       # OPT not owned by the root
    (header(ar=1) + QUESTION + b"\x80" + ROOT_OPT[1:], wire.FORMERR),    # reserved label type
], ids=["empty", "runt", "response", "status", "update", "qdcount-0", "qdcount-2", "qdcount-257",
        "label-64", "name-257", "question-pointer", "name-cut", "class-cut", "record-missing",
        "opt-cut", "opt-rdlength", "two-opts", "opt-in-answer", "opt-owner", "reserved-label"])
def test_parse_query_rejects_malformed_input(data, rcode):
    with pytest.raises(wire.WireError) as caught:
        wire.parse_query(data)

    assert caught.value.rcode == rcode


def test_parse_query_rejects_every_truncation_of_a_valid_query():
    data = query_bytes("cut.example.test", edns=1232, do=True)
    for length in range(len(data)):
        with pytest.raises(wire.WireError) as caught:
            wire.parse_query(data[:length])
        assert caught.value.rcode == (None if length < 12 else wire.FORMERR), length


def test_parse_query_rejects_a_pointer_loop_in_an_additional_record():
    loop = struct.pack(">H", 0xC000 | (12 + len(QUESTION)))  # the name points at itself
    data = header(ar=1) + QUESTION + loop + b"\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00"

    with pytest.raises(wire.WireError) as caught:
        wire.parse_query(data)
    assert caught.value.rcode == wire.FORMERR


# ---------------------------------------------------------------- replies


def test_truncated_reply_sets_tc_and_keeps_only_the_question():
    data = query_bytes("Big.Example.test", "TXT", msg_id=0x0BAD)

    reply = DNSRecord.parse(wire.truncated_reply(wire.parse_query(data)))

    assert reply.header.tc and reply.header.qr and reply.header.rd and reply.header.ra
    assert reply.header.id == 0x0BAD and reply.header.rcode == wire.NOERROR
    assert reply.q.qname.label == (b"Big", b"Example", b"test") and reply.q.qtype == QTYPE.TXT
    assert reply.rr == [] and reply.auth == [] and reply.ar == []


def test_truncated_reply_keeps_an_opt_for_an_edns_query():
    reply = DNSRecord.parse(wire.truncated_reply(wire.parse_query(query_bytes(edns=4096, do=True))))

    assert reply.header.tc
    assert [(rr.rtype, rr.rclass) for rr in reply.ar] == [(QTYPE.OPT, 1232)]
    assert reply.ar[0].ttl & 0x8000  # DO echoed


def test_rfc8482_reply_is_one_hinfo():
    data = query_bytes("any.example.test", "ANY")

    raw = wire.rfc8482_reply(wire.parse_query(data))
    reply = DNSRecord.parse(raw)

    assert reply.header.rcode == wire.NOERROR and reply.header.id == 0x1234
    assert len(reply.rr) == 1
    assert reply.rr[0].rtype == QTYPE.HINFO and reply.rr[0].rname == "any.example.test"
    assert reply.rr[0].rdata.data == b"\x07RFC8482\x00"
    assert reply.ar == []


def test_rfc8482_reply_carries_opt_for_an_edns_query():
    reply = DNSRecord.parse(wire.rfc8482_reply(wire.parse_query(query_bytes("any.test", "ANY", edns=1232))))

    assert [rr.rtype for rr in reply.ar] == [QTYPE.OPT]


def test_error_reply_badvers_puts_the_high_bits_in_the_opt():
    query = wire.parse_query(query_bytes(edns=1232, version=1))

    reply = DNSRecord.parse(wire.error_reply(query, wire.BADVERS))

    assert reply.header.rcode == 0
    assert reply.ar[0].ttl >> 24 == 1  # 16 >> 4


def test_error_reply_without_edns_has_no_opt():
    reply = DNSRecord.parse(wire.error_reply(wire.parse_query(query_bytes()), wire.REFUSED))

    assert reply.header.rcode == wire.REFUSED and reply.ar == [] and reply.q.qname == "example.test"


def test_header_only_reply_echoes_id_and_opcode():
    reply = wire.header_only_reply(header(qd=0, flags=0x2900), wire.NOTIMP)

    assert reply[:2] == b"\x42\x42"
    assert struct.unpack(">H", reply[2:4])[0] == 0x8000 | 0x2800 | 0x0100 | wire.NOTIMP
    assert reply[4:] == b"\0" * 8
    assert wire.header_only_reply(b"\x01\x02", wire.FORMERR) is None
    assert wire.header_only_reply(header(flags=0x8000), wire.FORMERR) is None


def test_build_query_asks_with_recursion_and_our_opt():
    record = DNSRecord.parse(wire.build_query(QUESTION, True, 0xBEEF))

    assert record.header.id == 0xBEEF and record.header.rd and not record.header.qr
    assert record.q.qname == "example.test"
    assert [(rr.rtype, rr.rclass) for rr in record.ar] == [(QTYPE.OPT, 1232)]
    assert record.ar[0].ttl & 0x8000


# ---------------------------------------------------------------- answer_layout


def upstream_answer(*zone_lines: str, edns: bool = True) -> bytes:
    query = DNSRecord.question("example.test", "A")
    reply = query.reply()
    for line in zone_lines:
        for rr in RR.fromZone(line):
            reply.add_answer(rr)
    reply.add_auth(*RR.fromZone("test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 120"))
    if edns:
        reply.add_ar(EDNS0(udp_len=1232))
    return bytes(reply.pack())


def test_answer_layout_finds_every_ttl_and_the_opt():
    data = upstream_answer("example.test. 300 IN A 192.0.2.1", "example.test. 200 IN A 192.0.2.2")

    layout = wire.answer_layout(data)

    ttls = [struct.unpack_from(">I", data, offset)[0] for offset in layout.ttl_offsets]
    assert ttls == [300, 200, 3600]  # two answers and the SOA, not the OPT
    assert data[layout.opt_start:layout.opt_end] == ROOT_OPT[:3] + b"\x04\xd0" + b"\0" * 6
    assert layout.qend == 12 + len(QUESTION)


def test_answer_layout_without_opt():
    layout = wire.answer_layout(upstream_answer("example.test. 300 IN A 192.0.2.1", edns=False))

    assert layout.opt_start == layout.opt_end == -1 and len(layout.ttl_offsets) == 2


def test_answer_layout_rejects_a_cut_answer():
    data = upstream_answer("example.test. 300 IN A 192.0.2.1")
    for length in (13, 20, len(data) - 30, len(data) - 1):
        with pytest.raises(wire.WireError):
            wire.answer_layout(data[:length])


def test_answer_layout_rejects_an_answer_without_one_question():
    data = bytearray(upstream_answer("example.test. 300 IN A 192.0.2.1"))
    data[5] = 2

    with pytest.raises(wire.WireError):
        wire.answer_layout(bytes(data))


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name, encoded", [
    ("example.test", b"\x07example\x04test\x00"),
    ("example.test.", b"\x07example\x04test\x00"),
    ("", b"\x00"),
    (".", b"\x00"),
    ("a", b"\x01a\x00"),
])
def test_encode_name(name, encoded):
    assert wire.encode_name(name) == encoded


def test_encode_name_round_trips_through_name_from_question():
    name = "www.Some-Host.example.test"

    assert wire.name_from_question(wire.encode_name(name) + b"\x00\x01\x00\x01") == name


def test_encode_name_refuses_a_label_over_63_bytes():
    with pytest.raises(ValueError, match="label too long"):
        wire.encode_name("a" * 64 + ".test")


def test_encode_name_refuses_a_name_over_255_bytes():
    name = ".".join(["a" * 63] * 3 + ["b" * 62])  # 256 bytes on the wire

    with pytest.raises(ValueError, match="name too long"):
        wire.encode_name(name)
    assert len(wire.encode_name(name[:-1])) == 255


def test_encode_name_refuses_non_ascii():
    with pytest.raises(ValueError):
        wire.encode_name("bücher.test")
