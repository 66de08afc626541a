"""Filtering as a device on the network sees it: the real daemon (`python -m filterd run`) over
real DNS, with a stand-in upstream, for the family of `family_sections` below.

Each device is a client source address (127.0.0.1 kids, .2 adults, .3 sleepy, anything else the
default profile teens), mapped by `ip:` in the config. One daemon per block mode is shared by
the module; the reload tests have a daemon of their own, since they change its config.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from conftest import ask, exchange, make_query, wait_until
from standin import name_address

WEB_ADDRESS = "192.0.2.80"
WEB_ADDRESS6 = "2001:db8::80"

# Each client source address is one device (the client socket is bound to it).
KIDS, ADULTS, SLEEPY, UNKNOWN = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"


def family_sections(list_path: Path | None = None) -> dict:
    """The config sections (beside `dns`) for a family of four profiles:

    - kids (127.0.0.1, alice-tablet): child preset — SafeSearch, YouTube strict, bypass
      protection, gambling and social networks blocked…; its own block list; and a homework
      schedule that blocks games all day, every day (so it is always running);
    - adults (127.0.0.2, dad-laptop): nothing blocked;
    - sleepy (127.0.0.3, bob-phone): a bedtime that blocks everything all day, every day,
      except homework.e2e.test;
    - teens (every other address: the default profile): teen preset (YouTube moderate).
    """
    sections = {
        "web": {"address": WEB_ADDRESS, "address6": WEB_ADDRESS6},
        "profiles": {
            "kids": {"preset": "child", "block": ["blocked-by-parent.e2e.test", "*casino*"],
                     "schedules": [{"name": "homework", "days": "daily", "start": "00:00", "end": "24:00",
                                    "block": ["games"]}]},
            "adults": {"block_categories": []},
            "sleepy": {"schedules": [{"name": "bedtime", "days": "daily", "start": "00:00", "end": "24:00",
                                      "block": "all", "allow": ["homework.e2e.test"]}]},
            "teens": {"preset": "teen"},
        },
        "devices": [
            {"name": "alice-tablet", "ip": KIDS, "profile": "kids"},
            {"name": "dad-laptop", "ip": ADULTS, "profile": "adults"},
            {"name": "bob-phone", "ip": SLEEPY, "profile": "sleepy"},
        ],
        "default_profile": "teens",
    }
    if list_path is not None:
        sections["lists"] = [{"id": "e2e-local", "path": str(list_path), "category": "gambling",
                              "format": "domains"}]
    return sections


def ede_of(reply: DNSRecord) -> int | None:
    """The Extended DNS Error info code of a reply (RFC 8914), None without one."""
    for rr in reply.ar:
        if rr.rtype == QTYPE.OPT:
            for option in rr.rdata:
                if option.code == 15:
                    return int.from_bytes(option.data[:2], "big")
    return None


def records(reply: DNSRecord) -> list[tuple[str, str]]:
    """(type, data) of every answer record."""
    return [(QTYPE[rr.rtype], str(rr.rdata).rstrip(".")) for rr in reply.rr]


MODES = ["blockpage", "null", "nxdomain"]
BLOCKED_A = {"blockpage": [("A", WEB_ADDRESS)], "null": [("A", "0.0.0.0")], "nxdomain": []}
BLOCKED_AAAA = {"blockpage": [("AAAA", WEB_ADDRESS6)], "null": [("AAAA", "::")], "nxdomain": []}


@pytest.fixture(scope="module")
def daemons_by_mode(module_daemons, filtering_upstream):
    """One daemon per block mode, started when first needed, all with the same family."""
    started = {}

    def get(mode: str):
        if mode not in started:
            started[mode] = module_daemons([f"udp://127.0.0.1:{filtering_upstream.port}"],
                                           extra=family_sections(), block_mode=mode)
        return started[mode]
    return get


@pytest.fixture(scope="module")
def daemon(daemons_by_mode):
    return daemons_by_mode("blockpage")


def query(daemon, name: str, qtype: str = "A", source: str = KIDS, edns: bool = True, tcp: bool = False):
    return ask(name, qtype, daemon.port, tcp=tcp, edns=1232 if edns else None, source=source)


def outcome(reply) -> tuple:
    """("blocked", EDE code) for an answer made by the filter in blockpage mode, else
    ("answered", rcode, records)."""
    if records(reply) in ([("A", WEB_ADDRESS)], [("AAAA", WEB_ADDRESS6)]) or ede_of(reply) is not None:
        return ("blocked", ede_of(reply))
    return ("answered", RCODE[reply.header.rcode], records(reply))


# ---------------------------------------------------------------- block modes and EDE codes


@pytest.mark.parametrize("name, ede", [
    ("modes.pokerstars.com", 15),             # the gambling category (seed list)
    ("modes.roblox.com", 17),                 # the always-running homework schedule (games)
    ("modes.blocked-by-parent.e2e.test", 17), # the kids profile's own block list
    ("modes-online-casino.e2e.test", 17),     # … and its *casino* pattern
], ids=["category", "schedule", "profile-block", "pattern"])
@pytest.mark.parametrize("mode", MODES)
def test_block_mode_and_ede_as_the_client_sees_them(daemons_by_mode, filtering_upstream, mode, name, ede):
    daemon = daemons_by_mode(mode)
    for qtype, expected in (("A", BLOCKED_A[mode]), ("AAAA", BLOCKED_AAAA[mode])):
        reply = query(daemon, name, qtype)
        assert RCODE[reply.header.rcode] == ("NXDOMAIN" if mode == "nxdomain" else "NOERROR")
        assert records(reply) == expected
        assert ede_of(reply) == ede
        assert filtering_upstream.count(name, qtype) == 0


@pytest.mark.parametrize("mode", MODES)
def test_every_record_type_of_a_blocked_name_is_blocked(daemons_by_mode, filtering_upstream, mode):
    name = f"{mode}.pokerstars.com"
    filtering_upstream.add(f"{name}. 300 IN MX 10 mail.{name}.", f'{name}. 300 IN TXT "leaked"',
                           f"{name}. 300 IN AAAA 2001:db8::bad")
    daemon = daemons_by_mode(mode)
    expected_rcode = "NXDOMAIN" if mode == "nxdomain" else "NOERROR"
    for qtype in ("A", "AAAA", "HTTPS", "MX", "TXT", "ANY"):
        for tcp in (False, True):
            reply = query(daemon, name, qtype, tcp=tcp)
            expected = {"A": BLOCKED_A[mode], "AAAA": BLOCKED_AAAA[mode]}.get(qtype, [])
            assert (RCODE[reply.header.rcode], records(reply), ede_of(reply)) == (expected_rcode, expected, 15), \
                (qtype, tcp)
            assert filtering_upstream.count(name, qtype) == 0


def test_ede_only_when_the_query_had_edns(daemon):
    reply = query(daemon, "pokerstars.com", "A", edns=False)
    assert records(reply) == [("A", WEB_ADDRESS)]
    assert reply.ar == []
    reply = query(daemon, "pokerstars.com", "A", edns=True)
    assert ede_of(reply) == 15


def test_blocked_answers_echo_the_query_id_and_question_case(daemon):
    reply = query(daemon, "WWW.PokerStars.COM", "A")
    assert str(reply.q.qname) == "WWW.PokerStars.COM."
    assert records(reply) == [("A", WEB_ADDRESS)]


def test_blocked_answers_echo_each_clients_rd_bit(daemon):
    for name in ("rd-echo.pokerstars.com", "rd-echo.blocked-by-parent.e2e.test"):
        for rd in (1, 0):
            asked = make_query(name)
            asked.header.rd = rd
            reply = DNSRecord.parse(exchange(asked.pack(), daemon.port, source=KIDS))
            assert records(reply) == [("A", WEB_ADDRESS)]
            assert reply.header.rd == rd, (name, rd)


# ---------------------------------------------------------------- per device


ALLOWED = "allowed"
DEVICE_TABLE = {
    # name: (kids 127.0.0.1, adults 127.0.0.2, sleepy 127.0.0.3, teens 127.0.0.9)
    "pokerstars.com": (("blocked", 15), ALLOWED, ("blocked", 17), ("blocked", 15)),
    "roblox.com": (("blocked", 17), ALLOWED, ("blocked", 17), ALLOWED),
    "www.tiktok.com": (("blocked", 15), ALLOWED, ("blocked", 17), ALLOWED),
    "pornhub.com": (("blocked", 15), ALLOWED, ("blocked", 17), ("blocked", 15)),
    "plain.e2e.test": (ALLOWED, ALLOWED, ("blocked", 17), ALLOWED),
    "homework.e2e.test": (ALLOWED, ALLOWED, ALLOWED, ALLOWED),
}


@pytest.mark.parametrize("name", DEVICE_TABLE)
def test_each_device_gets_its_profiles_decision(daemon, name):
    seen = []
    for source in (KIDS, ADULTS, SLEEPY, UNKNOWN):
        result = outcome(query(daemon, name, "A", source=source))
        seen.append(ALLOWED if result == ("answered", "NOERROR", [("A", name_address(name))]) else result)
    assert tuple(seen) == DEVICE_TABLE[name]


def test_filter_home_answers_the_web_address_for_every_device_even_at_bedtime(daemon, filtering_upstream):
    for source in (KIDS, ADULTS, SLEEPY, UNKNOWN):
        assert records(query(daemon, "filter.home", "A", source=source)) == [("A", WEB_ADDRESS)]
        reply = query(daemon, "filter.home", "AAAA", source=source)
        assert records(reply) == [("AAAA", WEB_ADDRESS6)] and ede_of(reply) is None
    assert filtering_upstream.count("filter.home", "A") == 0


def test_bypass_canaries_are_nxdomain_only_with_bypass_protection(daemon):
    for name in ("use-application-dns.net", "mask.icloud.com"):
        reply = query(daemon, name, "A", source=KIDS)
        assert (RCODE[reply.header.rcode], reply.rr, ede_of(reply)) == ("NXDOMAIN", [], 15), name
    reply = query(daemon, "use-application-dns.net", "A", source=ADULTS)
    assert outcome(reply) == ("answered", "NOERROR", [("A", name_address("use-application-dns.net"))])


# ---------------------------------------------------------------- CNAME cloaking


def test_cname_to_a_blocked_name_is_blocked(daemon, filtering_upstream):
    filtering_upstream.add("cloaked.e2e.test. 300 IN CNAME pokerstars.com.")
    reply = query(daemon, "cloaked.e2e.test", "A", source=KIDS)
    assert (records(reply), ede_of(reply)) == ([("A", WEB_ADDRESS)], 15)
    # The same CNAME is fine for the adults, and (from the cache now) still blocked for the kids.
    reply = query(daemon, "cloaked.e2e.test", "A", source=ADULTS)
    assert records(reply) == [("CNAME", "pokerstars.com"), ("A", name_address("pokerstars.com"))]
    reply = query(daemon, "cloaked.e2e.test", "A", source=KIDS)
    assert (records(reply), ede_of(reply)) == ([("A", WEB_ADDRESS)], 15)


def test_cname_cloaking_checked_on_a_cached_answer_too(daemon, filtering_upstream):
    filtering_upstream.add("cached-cloak.e2e.test. 300 IN CNAME www.roblox.com.")
    reply = query(daemon, "cached-cloak.e2e.test", "A", source=ADULTS)
    assert records(reply)[0] == ("CNAME", "www.roblox.com")
    assert filtering_upstream.count("cached-cloak.e2e.test") == 1
    reply = query(daemon, "cached-cloak.e2e.test", "A", source=KIDS)
    assert (records(reply), ede_of(reply)) == ([("A", WEB_ADDRESS)], 17)     # homework schedule
    assert filtering_upstream.count("cached-cloak.e2e.test") == 1


# ---------------------------------------------------------------- SafeSearch and YouTube


def test_google_is_answered_with_its_safe_host(daemon, filtering_upstream):
    safe = filtering_upstream.safe_hosts
    for name in ("www.google.com", "www.google.co.uk"):
        reply = query(daemon, name, "A", source=KIDS)
        assert records(reply) == [("CNAME", "forcesafesearch.google.com"), ("A", safe["forcesafesearch.google.com"])], name
        assert ede_of(reply) is None
        assert filtering_upstream.count(name) == 0
    assert filtering_upstream.count("forcesafesearch.google.com") >= 1
    reply = query(daemon, "www.google.com", "A", source=ADULTS)
    assert records(reply) == [("A", name_address("www.google.com"))]


def test_youtube_strict_for_the_kids_and_moderate_for_the_teens(daemon, filtering_upstream):
    safe = filtering_upstream.safe_hosts
    strict = [("CNAME", "restrict.youtube.com"), ("A", safe["restrict.youtube.com"])]
    moderate = [("CNAME", "restrictmoderate.youtube.com"), ("A", safe["restrictmoderate.youtube.com"])]
    for _ in range(2):     # the second round comes from the cache: each profile keeps its own
        assert records(query(daemon, "www.youtube.com", "A", source=KIDS)) == strict
        assert records(query(daemon, "www.youtube.com", "A", source=UNKNOWN)) == moderate
        assert records(query(daemon, "m.youtube.com", "A", source=UNKNOWN)) == moderate
    assert filtering_upstream.count("www.youtube.com") == 0 and filtering_upstream.count("m.youtube.com") == 0
    assert records(query(daemon, "www.youtube.com", "A", source=ADULTS)) == \
        [("A", name_address("www.youtube.com"))]
    assert records(query(daemon, "www.youtube.com", "A", source=KIDS)) == strict


def test_search_engines_without_a_safe_mode_are_blocked_with_safesearch(daemon):
    reply = query(daemon, "www.ecosia.org", "A", source=KIDS)
    assert (records(reply), ede_of(reply)) == ([("A", WEB_ADDRESS)], 17)
    assert outcome(query(daemon, "www.ecosia.org", "A", source=ADULTS))[0] == "answered"


# ---------------------------------------------------------------- reload


@pytest.fixture(scope="module")
def reloading(module_daemons, filtering_upstream, tmp_path_factory):
    """A daemon of its own whose config and list file the tests change."""
    folder = tmp_path_factory.mktemp("reload")
    list_path = folder / "local-gambling.txt"
    list_path.write_text("first-listed.e2e.test\n")
    daemon = module_daemons([f"udp://127.0.0.1:{filtering_upstream.port}"], extra=family_sections(list_path))
    daemon.list_path = list_path
    return daemon


def blocked_for_kids(daemon, name: str) -> bool:
    return records(query(daemon, name, "A", source=KIDS)) == [("A", WEB_ADDRESS)]


def test_a_domain_added_to_a_profiles_block_list_is_blocked_within_seconds(reloading):
    assert not blocked_for_kids(reloading, "fresh.e2e.test")
    config = copy.deepcopy(reloading.config)
    config["profiles"]["kids"]["block"].append("fresh.e2e.test")
    reloading.write_config(config)
    reloading.config = config
    wait_until(lambda: blocked_for_kids(reloading, "fresh.e2e.test"), timeout=10, interval=0.1,
               message="the new block list entry to take effect")
    assert ede_of(query(reloading, "fresh.e2e.test", "A", source=KIDS)) == 17
    assert outcome(query(reloading, "fresh.e2e.test", "A", source=ADULTS))[0] == "answered"
    assert reloading.alive()


def test_a_changed_list_file_is_recompiled_and_takes_effect(reloading):
    assert blocked_for_kids(reloading, "first-listed.e2e.test")
    assert not blocked_for_kids(reloading, "later-listed.e2e.test")
    reloading.list_path.write_text("first-listed.e2e.test\nlater-listed.e2e.test\n")
    wait_until(lambda: blocked_for_kids(reloading, "later-listed.e2e.test"), timeout=10, interval=0.1,
               message="the changed list to be compiled and used")
    assert ede_of(query(reloading, "sub.later-listed.e2e.test", "A", source=KIDS)) == 15
    assert blocked_for_kids(reloading, "first-listed.e2e.test")
    assert outcome(query(reloading, "later-listed.e2e.test", "A", source=ADULTS))[0] == "answered"
