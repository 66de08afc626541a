"""The resolver's per-second reply memo: same bytes, same second → same reply, still logged,
and a change of rules or overrides is never hidden by it."""
from __future__ import annotations

import time

import pytest
import yaml
from dnslib import RR, DNSRecord

from filterd.dns import wire
from filterd.dns.cache import entry_from_response
from filterd.rules.config import parse_config, read_yaml
from filterd.rules.policy import Override
from filterd.dns.resolver import Resolver
from filterd.lists.build import build_policy


class RecordingLog:
    def __init__(self):
        self.events = []

    def record(self, event):
        self.events.append(event)


@pytest.fixture
def resolver(tmp_path):
    config = parse_config(*read_yaml(yaml.safe_dump({
        "data_dir": str(tmp_path / "var"),
        "dns": {"upstreams": ["udp://127.0.0.1:9"], "rate_limit": 0},
        "web": {"address": "192.168.1.2"},
        "profiles": {"kids": {"preset": "child"}},
        "devices": [{"name": "tablet", "ip": "127.0.0.1", "profile": "kids"},
                    {"name": "emma-phone", "client_id": "emma-phone", "profile": "adults"}],
        "default_profile": "guests",
    } | {"profiles": {"kids": {"preset": "child"}, "adults": {}, "guests": {"block": ["guest-blocked.test"]}}})))
    return Resolver(config, build_policy(config), querylog=RecordingLog())


def query(name: str, msg_id: int) -> bytes:
    q = DNSRecord.question(name)
    q.header.id = msg_id
    return bytes(q.pack())


def cache_answer(resolver, name: str) -> None:
    q = DNSRecord.question(name)
    a = q.reply()
    a.add_answer(*RR.fromZone(f"{name}. 300 IN A 192.0.2.7"))
    entry, _ = entry_from_response(bytes(a.pack()), time.monotonic(), False, 0, 86400, 3600, 86400)
    resolver.cache.put(wire.parse_query(bytes(q.pack())).key, entry)


def test_a_repeated_query_gets_the_same_reply_with_its_own_id_and_is_logged_each_time(resolver):
    cache_answer(resolver, "example.org")
    first = resolver.answer(query("example.org", 1), "127.0.0.1", 0)
    second = resolver.answer(query("example.org", 2), "127.0.0.1", 0)
    assert first[:2] == b"\x00\x01" and second[:2] == b"\x00\x02"
    assert first[2:] == second[2:]
    assert str(DNSRecord.parse(second).rr[0].rdata) == "192.0.2.7"
    assert [e[4] for e in resolver.querylog.events] == [wire.parse_query(query("example.org", 1)).key] * 2


def test_a_pause_applies_at_once_even_to_a_query_repeated_within_the_second(resolver):
    cache_answer(resolver, "example.org")
    assert str(DNSRecord.parse(resolver.answer(query("example.org", 1), "127.0.0.1", 0)).rr[0].rdata) == "192.0.2.7"
    resolver.new_overrides((Override("pause", "device", "tablet"),))   # what the worker does
    reply = DNSRecord.parse(resolver.answer(query("example.org", 3), "127.0.0.1", 0))
    assert str(reply.rr[0].rdata) == "192.168.1.2"
    assert resolver.querylog.events[-1][6].rule == "pause"


def test_tcp_replies_are_not_remembered_for_udp(resolver):
    # A TCP reply carries no truncation limit: it must never be replayed to a UDP client.
    cache_answer(resolver, "example.org")
    for msg_id in (1, 2):
        resolver.answer(query("example.org", msg_id), "127.0.0.1", 65535)
    assert resolver.clients["127.0.0.1"].recent == {}
    resolver.answer(query("example.org", 3), "127.0.0.1", 0)
    resolver.answer(query("example.org", 4), "127.0.0.1", 0)
    assert len(resolver.clients["127.0.0.1"].recent) == 1


def ask_edns(name: str, msg_id: int) -> bytes:
    from dnslib import EDNS0
    q = DNSRecord.question(name)
    q.header.id = msg_id
    q.add_ar(EDNS0(udp_len=1232))
    return bytes(q.pack())


def test_a_blocked_name_gets_its_reply_with_and_without_edns_from_one_verdict(resolver):
    resolver.new_overrides((Override("pause", "device", "tablet"),))
    plain = DNSRecord.parse(resolver.answer(query("paused.example", 7), "127.0.0.1", 0))
    with_opt = DNSRecord.parse(resolver.answer(ask_edns("paused.example", 8), "127.0.0.1", 0))

    assert plain.header.id == 7 and with_opt.header.id == 8
    assert str(plain.rr[0].rdata) == str(with_opt.rr[0].rdata) == "192.168.1.2"
    assert plain.ar == [] and [rr.rtype for rr in with_opt.ar] == [41]
    assert len(resolver.clients["127.0.0.1"].memo) == 1


def test_new_neighbours_make_devices_be_identified_afresh(resolver):
    cache_answer(resolver, "example.org")
    resolver.answer(query("example.org", 1), "127.0.0.1", 0)
    resolver.new_neighbours({"127.0.0.1": "aa:bb:cc:dd:ee:ff"})

    assert resolver.clients == {} and resolver.neighbours == {"127.0.0.1": "aa:bb:cc:dd:ee:ff"}


def test_a_tcp_query_over_the_rate_is_refused_and_a_udp_one_slips_every_second_time(tmp_path):
    config = parse_config(*read_yaml(yaml.safe_dump({
        "data_dir": str(tmp_path / "var"), "dns": {"upstreams": ["udp://127.0.0.1:9"], "rate_limit": 1}})))
    limited = Resolver(config, build_policy(config))
    cache_answer(limited, "example.org")
    for msg_id in range(5):   # the burst
        assert limited.answer(query("example.org", msg_id), "127.0.0.1", 0) is not None
    udp = [limited.answer(query("example.org", 10 + i), "127.0.0.1", 0) for i in range(4)]
    tcp = DNSRecord.parse(limited.answer(query("example.org", 20), "127.0.0.1", 65535))

    assert [reply is None for reply in udp] == [True, False, True, False]
    assert all(DNSRecord.parse(reply).header.tc for reply in udp if reply is not None)
    assert tcp.header.rcode == wire.REFUSED and tcp.header.id == 20
    assert limited.counters["rate_refused"] == 1 and limited.counters["rate_slipped"] == 2


def test_a_client_id_is_its_devices_in_the_log_and_an_unknown_one_is_logged_by_its_id(resolver):
    """Over DoT/DoH the same address may be several devices: each ID is a client of its own."""
    cache_answer(resolver, "example.org")
    resolver.answer(query("example.org", 1), "127.0.0.1", 65535, "emma-phone")
    resolver.answer(query("example.org", 2), "127.0.0.1", 65535)
    blocked = DNSRecord.parse(resolver.answer(query("guest-blocked.test", 3), "127.0.0.1", 65535, "stranger"))
    assert [(e[1], e[2], e[3]) for e in resolver.querylog.events] == [
        ("127.0.0.1", "emma-phone", "adults"), ("127.0.0.1", "tablet", "kids"), ("stranger", None, "guests")]
    assert str(blocked.rr[0].rdata) != "192.0.2.7" and resolver.querylog.events[-1][6].blocked
