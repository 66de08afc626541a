"""filterd.dns.cache: upstream answers turned into cache entries, served with patched IDs and TTLs."""
from __future__ import annotations

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, DNSRecord

from filterd.dns import wire
from filterd.dns.cache import STALE_TTL, AnswerCache, CachedAnswer, entry_from_response

SOA = "test. {ttl} IN SOA ns.test. admin.test. 1 3600 600 86400 {minimum}"
DEFAULTS = dict(min_ttl=0, max_ttl=86_400, negative_max_ttl=3_600, stale_s=86_400)


def upstream_response(name: str = "example.test", qtype: str = "A", answers: tuple[str, ...] = (),
                      rcode: int = RCODE.NOERROR, soa: str | None = None, edns: bool = True,
                      tc: bool = False) -> bytes:
    reply = DNSRecord.question(name, qtype).reply()
    reply.header.rcode = rcode
    reply.header.tc = int(tc)
    for line in answers:
        reply.add_answer(*RR.fromZone(line))
    if soa:
        reply.add_auth(*RR.fromZone(soa))
    if edns:
        reply.add_ar(EDNS0(udp_len=1232))
    return bytes(reply.pack())


def client_query(name: str = "example.test", qtype: str = "A", msg_id: int = 0x5678, edns: int | None = None,
                 rd: bool = True) -> wire.Query:
    record = DNSRecord.question(name, qtype)
    record.header.id = msg_id
    record.header.rd = int(rd)
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns))
    return wire.parse_query(bytes(record.pack()))


def entry(response: bytes, now: float = 1000.0, **settings) -> tuple[CachedAnswer, bool]:
    return entry_from_response(response, now, False, **{**DEFAULTS, **settings})


def ttls_of(reply: bytes) -> list[int]:
    record = DNSRecord.parse(reply)
    return [rr.ttl for rr in record.rr + record.auth]


# ---------------------------------------------------------------- entry_from_response


def test_entry_clamps_every_ttl_between_min_and_max():
    response = upstream_response(answers=("example.test. 10 IN A 192.0.2.1", "example.test. 999999 IN A 192.0.2.2"))

    cached, cacheable = entry(response, min_ttl=60, max_ttl=3600)

    assert cacheable
    assert list(cached.ttls) == [60, 3600]
    assert cached.expires == 1000.0 + 60  # the smallest TTL, raised to min_ttl


def test_entry_lifetime_is_the_smallest_answer_ttl():
    response = upstream_response(answers=("example.test. 300 IN A 192.0.2.1", "example.test. 120 IN A 192.0.2.2"))

    cached, _ = entry(response)

    assert cached.expires == 1000.0 + 120
    assert cached.stale_until == cached.expires + DEFAULTS["stale_s"]


def test_entry_drops_the_upstream_opt():
    cached, _ = entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",)))

    record = DNSRecord.parse(cached.answer)
    assert record.ar == [] and record.header.ar == 0
    assert [str(rr.rdata) for rr in record.rr] == ["192.0.2.1"]


@pytest.mark.parametrize("soa_ttl, minimum, negative_max_ttl, lifetime", [
    (3600, 120, 3600, 120),    # RFC 2308: the SOA's minimum when smaller
    (30, 120, 3600, 30),       # the SOA record's own TTL when smaller
    (3600, 900, 300, 300),     # capped by negative_max_ttl
])
def test_nxdomain_lives_as_long_as_its_soa_says(soa_ttl, minimum, negative_max_ttl, lifetime):
    response = upstream_response(rcode=RCODE.NXDOMAIN, soa=SOA.format(ttl=soa_ttl, minimum=minimum))

    cached, cacheable = entry(response, negative_max_ttl=negative_max_ttl)

    assert cacheable and cached.rcode == wire.NXDOMAIN
    assert cached.expires == 1000.0 + lifetime
    assert list(cached.ttls) == [lifetime]  # the SOA's TTL says the same to the client


def test_nodata_is_negative_too():
    response = upstream_response(qtype="AAAA", soa=SOA.format(ttl=3600, minimum=300))

    cached, cacheable = entry(response)

    assert cacheable and cached.expires == 1000.0 + 300


def test_negative_answer_without_soa_lives_a_minute_at_most():
    cached, cacheable = entry(upstream_response(rcode=RCODE.NXDOMAIN), negative_max_ttl=3600)
    short, _ = entry(upstream_response(rcode=RCODE.NXDOMAIN), negative_max_ttl=20)

    assert cacheable and cached.expires == 1000.0 + 60
    assert short.expires == 1000.0 + 20


def test_negative_lifetime_is_raised_to_min_ttl():
    response = upstream_response(rcode=RCODE.NXDOMAIN, soa=SOA.format(ttl=3600, minimum=5))

    cached, _ = entry(response, min_ttl=30)

    assert cached.expires == 1000.0 + 30


def test_zero_ttl_and_truncated_answers_are_not_stored():
    _, zero = entry(upstream_response(answers=("example.test. 0 IN A 192.0.2.1",)))
    _, truncated = entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",), tc=True))

    assert not zero and not truncated


def test_garbage_from_upstream_is_a_wire_error():
    with pytest.raises(wire.WireError):
        entry(b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x07exam")


@pytest.mark.parametrize("rcode", [RCODE.NOTIMP, RCODE.FORMERR, RCODE.SERVFAIL], ids=["notimp", "formerr", "servfail"])
def test_answer_with_another_rcode_becomes_an_entry_that_is_not_stored(rcode):
    cached, cacheable = entry(upstream_response(rcode=rcode))

    assert not cacheable and cached.rcode == rcode


# ---------------------------------------------------------------- serving an entry


def test_reply_splices_the_clients_id_and_letter_case():
    cached, _ = entry(upstream_response("example.test", answers=("example.test. 300 IN A 192.0.2.1",)))
    query = client_query("ExAmPlE.TeSt", msg_id=0xCAFE)

    reply = DNSRecord.parse(cached.reply(query, 1000.0, 512))

    assert reply.header.id == 0xCAFE
    assert reply.q.qname.label == (b"ExAmPlE", b"TeSt")
    assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.1"]


def test_reply_counts_the_ttl_down_with_the_clock():
    cached, _ = entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",)), now=1000.0)
    query = client_query()

    assert ttls_of(cached.reply(query, 1000.0, 512)) == [300]
    assert ttls_of(cached.reply(query, 1005.2, 512)) == [295]
    assert ttls_of(cached.reply(query, 1299.9, 512)) == [1]
    assert ttls_of(cached.reply(query, 1400.0, 512)) == [0]  # never negative


def test_reply_counts_down_every_record_on_its_own():
    response = upstream_response(answers=("example.test. 300 IN A 192.0.2.1", "example.test. 100 IN A 192.0.2.2"))
    cached, _ = entry(response)

    assert ttls_of(cached.reply(client_query(), 1050.0, 512)) == [250, 50]


def test_reply_ttl_follows_the_seconds_elapsed_since_storing():
    cached, _ = entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",)), now=1000.9)
    query = client_query()

    assert ttls_of(cached.reply(query, 1001.0, 512)) == [300]   # 0.1 s elapsed
    assert ttls_of(cached.reply(query, 1001.95, 512)) == [299]  # 1.05 s elapsed


def test_reply_adds_our_opt_for_an_edns_query_only():
    cached, _ = entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",)))

    with_opt = DNSRecord.parse(cached.reply(client_query(edns=4096), 1000.0, 1232))
    without = DNSRecord.parse(cached.reply(client_query(), 1000.0, 512))

    assert [(rr.rtype, rr.rclass) for rr in with_opt.ar] == [(QTYPE.OPT, 1232)]
    assert without.ar == []


def test_reply_over_the_limit_is_truncated():
    big = " ".join(['"' + "x" * 255 + '"'] * 3)
    cached, _ = entry(upstream_response(qtype="TXT", answers=(f"example.test. 300 IN TXT {big}",)))

    small = DNSRecord.parse(cached.reply(client_query(qtype="TXT"), 1000.0, 512))
    full = DNSRecord.parse(cached.reply(client_query(qtype="TXT"), 1000.0, 65535))

    assert small.header.tc and small.rr == []
    assert not full.header.tc and len(full.rr) == 1


def test_reply_echoes_a_clear_rd_bit():
    cached, _ = entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",)))

    assert not DNSRecord.parse(cached.reply(client_query(rd=False), 1000.0, 512)).header.rd
    assert DNSRecord.parse(cached.reply(client_query(rd=True), 1000.0, 512)).header.rd


def test_stale_reply_has_ttl_30():
    cached, _ = entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",)))

    reply = DNSRecord.parse(cached.stale_reply(client_query(msg_id=0x0101), 512))

    assert reply.header.id == 0x0101
    assert [rr.ttl for rr in reply.rr] == [STALE_TTL] == [30]


def test_stale_reply_has_ttl_30_even_for_short_lived_records():
    cached, _ = entry(upstream_response(answers=("example.test. 1 IN A 192.0.2.1",)))

    assert ttls_of(cached.stale_reply(client_query(), 512)) == [30]


def test_stale_reply_echoes_a_clear_rd_bit():
    cached, _ = entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",)))

    assert not DNSRecord.parse(cached.stale_reply(client_query(rd=False), 512)).header.rd


# ---------------------------------------------------------------- the LRU


def some_entry() -> CachedAnswer:
    return entry(upstream_response(answers=("example.test. 300 IN A 192.0.2.1",)))[0]


def test_cache_keeps_at_most_size_entries_dropping_the_least_recently_used():
    cache = AnswerCache(2)
    first, second, third = some_entry(), some_entry(), some_entry()
    cache.put(b"a", first)
    cache.put(b"b", second)
    assert cache.get(b"a") is first  # a is now the most recently used
    cache.put(b"c", third)

    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert cache.get(b"a") is first and cache.get(b"c") is third


def test_cache_of_size_zero_stores_nothing():
    cache = AnswerCache(0)
    cache.put(b"a", some_entry())

    assert len(cache) == 0 and cache.get(b"a") is None


def test_putting_a_key_again_replaces_its_entry():
    cache = AnswerCache(2)
    old, new = some_entry(), some_entry()
    cache.put(b"a", old)
    cache.put(b"a", new)

    assert len(cache) == 1 and cache.get(b"a") is new
