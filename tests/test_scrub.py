"""filterd.dns.scrub, through entry_from_response: an upstream answer keeps only what is about
its question, and is refused (SERVFAIL) when nothing is; AA never passes through."""
from __future__ import annotations

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RD, RR, DNSRecord

from filterd.dns import wire
from filterd.dns.cache import entry_from_response

DEFAULTS = dict(min_ttl=0, max_ttl=86_400, negative_max_ttl=3_600, stale_s=86_400)


def response(name: str, qtype: str, answers=(), authority=(), additional=(), rcode=RCODE.NOERROR,
             aa: bool = False) -> bytes:
    reply = DNSRecord.question(name, qtype).reply()
    reply.header.rcode = rcode
    reply.header.aa = int(aa)
    for line in answers:
        reply.add_answer(*RR.fromZone(line))
    for line in authority:
        reply.add_auth(*RR.fromZone(line))
    for line in additional:
        reply.add_ar(*RR.fromZone(line))
    reply.add_ar(EDNS0(udp_len=1232))
    return bytes(reply.pack())


def kept(data: bytes) -> tuple[list[str], list[str], list[str], tuple[str, ...]]:
    entry, _ = entry_from_response(data, 1000.0, False, **DEFAULTS)
    record = DNSRecord.parse(entry.answer)
    show = lambda rrs: [f"{rr.rname} {QTYPE[rr.rtype]} {rr.rdata}" for rr in rrs]  # noqa: E731
    return show(record.rr), show(record.auth), show(record.ar), entry.dropped


def test_a_record_for_another_name_is_dropped_and_reported():
    answers, _, _, dropped = kept(response("x.example.net", "A", [
        "x.example.net. 300 IN A 192.0.2.1", "evil.example. 300 IN A 6.6.6.6"]))

    assert answers == ["x.example.net. A 192.0.2.1"]
    assert dropped == ("evil.example. A",)


def test_a_record_of_another_type_is_dropped():
    answers, _, _, dropped = kept(response("x.example.net", "A", [
        "x.example.net. 300 IN A 192.0.2.1", 'x.example.net. 300 IN TXT "junk"']))

    assert answers == ["x.example.net. A 192.0.2.1"] and dropped == ("x.example.net. TXT",)


def test_an_answer_with_nothing_about_the_question_is_a_servfail():
    with pytest.raises(wire.WireError) as raised:
        entry_from_response(response("x.example.net", "A", ['x.example.net. 300 IN TXT "only junk"']),
                            1000.0, False, **DEFAULTS)
    assert raised.value.rcode == wire.SERVFAIL


def test_the_cname_chain_is_followed_and_kept():
    answers, _, _, dropped = kept(response("www.shop.test", "A", [
        "www.shop.test. 300 IN CNAME cdn.shop.test.",
        "cdn.shop.test. 300 IN CNAME edge.cdn.example.",
        "edge.cdn.example. 300 IN A 192.0.2.9",
        "unrelated.cdn.example. 300 IN A 6.6.6.6"]))

    assert answers == ["www.shop.test. CNAME cdn.shop.test.", "cdn.shop.test. CNAME edge.cdn.example.",
                       "edge.cdn.example. A 192.0.2.9"]
    assert dropped == ("unrelated.cdn.example. A",)


def dname(owner: str, target: str) -> RR:
    return RR(owner, QTYPE.DNAME, ttl=300, rdata=RD(wire.encode_name(target)))


def test_a_dname_on_the_chain_is_kept_with_what_it_leads_to():
    reply = DNSRecord.question("www.old.test", "A").reply()
    reply.add_answer(dname("old.test", "new.test"), dname("other.test", "elsewhere.test"),
                     *RR.fromZone("www.new.test. 300 IN A 192.0.2.3"))
    answers, _, _, dropped = kept(bytes(reply.pack()))

    assert [a.split(" ")[:2] for a in answers] == [["old.test.", "DNAME"], ["www.new.test.", "A"]]
    assert dropped == ("other.test. DNAME",)


def test_a_negative_answer_keeps_its_soa_and_drops_a_foreign_one():
    _, authority, _, dropped = kept(response("nx.shop.test", "A", authority=[
        "shop.test. 300 IN SOA ns.shop.test. admin.shop.test. 1 3600 600 86400 60",
        "bank.example. 300 IN NS ns.evil.example."], rcode=RCODE.NXDOMAIN))

    assert authority == ["shop.test. SOA ns.shop.test. admin.shop.test. 1 3600 600 86400 60"]
    assert dropped == ("bank.example. NS",)


def test_glue_in_the_additional_section_is_not_passed_on_but_our_opt_is_added_per_client():
    _, _, additional, dropped = kept(response("shop.test", "MX", ["shop.test. 300 IN MX 10 mail.shop.test."],
                                              additional=["mail.shop.test. 300 IN A 192.0.2.25"]))

    assert additional == [] and dropped == ()


def test_a_clean_answer_is_kept_byte_for_byte_but_for_the_aa_bit():
    data = response("x.example.net", "A", ["x.example.net. 300 IN A 192.0.2.1"], aa=True)
    entry, _ = entry_from_response(data, 1000.0, False, **DEFAULTS)

    assert not DNSRecord.parse(entry.answer).header.aa
    assert entry.answer[3:10] == data[3:10] and entry.answer[12:] == data[12:len(entry.answer)]  # OPT cut


def test_cname_cloaking_sees_only_the_chain():
    entry, _ = entry_from_response(response("www.shop.test", "A", [
        "www.shop.test. 300 IN CNAME cdn.shop.test.", "cdn.shop.test. 300 IN A 192.0.2.9",
        "junk.test. 300 IN CNAME tracker.example."]), 1000.0, False, **DEFAULTS)

    assert entry.cnames == ("cdn.shop.test",)
