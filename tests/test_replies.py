"""Answers the daemon makes itself: blocked names per `dns.block_mode`, the filter's own host
names, NXDOMAIN for bypass canaries, Extended DNS Errors, and SafeSearch rewrites."""
from __future__ import annotations

import pytest
from dnslib import CNAME, EDNS0, QTYPE, RCODE, RR, A, DNSRecord

from filterd.dns import wire
from filterd.rules.policy import BLOCK, LOCAL, NXDOMAIN, Decision
from filterd.dns.replies import BLOCKED_TTL, LOCAL_TTL, decision_reply, rewrite_reply
from filterd.rules.model import WebConfig

WEB = WebConfig(address="192.0.2.80", address6="2001:db8::80")
WEB_V4_ONLY = WebConfig(address="192.0.2.80")
WEB_NONE = WebConfig()

CATEGORY = Decision(BLOCK, "category", "category Gambling (list fx, pokerstars.test)", category="gambling",
                    list_id="fx", matched="pokerstars.test", ede=15)
SCHEDULE = Decision(BLOCK, "schedule", "bedtime: the internet is off until 07:00", schedule="bedtime", ede=17)
PROFILE_BLOCK = Decision(BLOCK, "profile_block", "blocked by the kids profile's block list (secret.test)",
                         matched="secret.test", ede=17)
CSAM = Decision(BLOCK, "csam", "blocked: known child sexual abuse material (protected category)",
                category="csam", ede=15)
CANARY = Decision(NXDOMAIN, "bypass", "bypass protection", matched="use-application-dns.net", ede=15)
FILTER_HOST = Decision(LOCAL, "filter_host", "filter.home is this filter's own web page")

QTYPES = ["A", "AAAA", "HTTPS", "MX", "TXT"]


def query(name: str = "pokerstars.test", qtype: str = "A", edns: bool = False, dnssec_ok: bool = False,
          ident: int = 0x1234) -> tuple[DNSRecord, wire.Query]:
    record = DNSRecord.question(name, qtype)
    record.header.id = ident
    if edns:
        record.add_ar(EDNS0(udp_len=1232, flags="do" if dnssec_ok else ""))
    return record, wire.parse_query(record.pack())


def answer(decision: Decision, mode: str, qtype: str = "A", web: WebConfig = WEB, edns: bool = True,
           name: str = "pokerstars.test") -> tuple[DNSRecord, DNSRecord]:
    asked, parsed = query(name, qtype, edns)
    return asked, DNSRecord.parse(decision_reply(parsed, decision, mode, web))


def records(reply: DNSRecord) -> list[tuple[str, str, int]]:
    return [(QTYPE[rr.rtype], str(rr.rdata), rr.ttl) for rr in reply.rr]


def ede_of(reply: DNSRecord) -> tuple[int, str] | None:
    """(info code, extra text) of the reply's Extended DNS Error, None without one."""
    for rr in reply.ar:
        if rr.rtype == QTYPE.OPT:
            for option in rr.rdata:
                if option.code == 15:
                    return int.from_bytes(option.data[:2], "big"), option.data[2:].decode()
    return None


# What each mode answers for each type of question about a blocked name (web.address and
# web.address6 set): (rcode, records).
EXPECTED = {
    "blockpage": {"A": ("NOERROR", [("A", "192.0.2.80", BLOCKED_TTL)]),
                  "AAAA": ("NOERROR", [("AAAA", "2001:db8::80", BLOCKED_TTL)]),
                  "HTTPS": ("NOERROR", []), "MX": ("NOERROR", []), "TXT": ("NOERROR", [])},
    "null": {"A": ("NOERROR", [("A", "0.0.0.0", BLOCKED_TTL)]),
             "AAAA": ("NOERROR", [("AAAA", "::", BLOCKED_TTL)]),
             "HTTPS": ("NOERROR", []), "MX": ("NOERROR", []), "TXT": ("NOERROR", [])},
    "nxdomain": {qtype: ("NXDOMAIN", []) for qtype in QTYPES},
}


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("mode", ["blockpage", "null", "nxdomain"])
def test_block_mode_answers(mode, qtype):
    asked, reply = answer(CATEGORY, mode, qtype)
    rcode, expected = EXPECTED[mode][qtype]
    assert (RCODE[reply.header.rcode], records(reply)) == (rcode, expected)
    assert reply.header.id == asked.header.id
    assert reply.header.qr == 1 and reply.header.rd == asked.header.rd
    assert reply.q == asked.q
    assert ede_of(reply) == (15, "blocked: gambling")


def test_blockpage_without_web_address6_gives_no_aaaa_data():
    _, reply = answer(CATEGORY, "blockpage", "AAAA", WEB_V4_ONLY)
    assert (RCODE[reply.header.rcode], records(reply)) == ("NOERROR", [])
    _, reply = answer(CATEGORY, "blockpage", "A", WEB_V4_ONLY)
    assert records(reply) == [("A", "192.0.2.80", BLOCKED_TTL)]


def test_blockpage_without_web_address_answers_the_null_address():
    _, reply = answer(CATEGORY, "blockpage", "A", WEB_NONE)
    assert records(reply) == [("A", "0.0.0.0", BLOCKED_TTL)]


@pytest.mark.parametrize("mode", ["blockpage", "null", "nxdomain"])
@pytest.mark.parametrize("qtype", ["A", "AAAA", "HTTPS"])
def test_bypass_canaries_are_nxdomain_in_every_mode(mode, qtype):
    _, reply = answer(CANARY, mode, qtype, name="use-application-dns.net")
    assert (RCODE[reply.header.rcode], reply.rr) == ("NXDOMAIN", [])
    assert ede_of(reply)[0] == 15


@pytest.mark.parametrize("mode", ["blockpage", "null", "nxdomain"])
def test_filter_host_resolves_to_the_web_addresses_in_every_mode(mode):
    for qtype, expected in (("A", [("A", "192.0.2.80", LOCAL_TTL)]),
                            ("AAAA", [("AAAA", "2001:db8::80", LOCAL_TTL)]), ("MX", [])):
        _, reply = answer(FILTER_HOST, mode, qtype, name="filter.home")
        assert (RCODE[reply.header.rcode], records(reply)) == ("NOERROR", expected)
        assert ede_of(reply) is None


def test_filter_host_without_web_address6_has_no_aaaa_data():
    _, reply = answer(FILTER_HOST, "blockpage", "AAAA", WEB_V4_ONLY, name="filter.home")
    assert (RCODE[reply.header.rcode], reply.rr) == ("NOERROR", [])


@pytest.mark.parametrize("decision, code, text", [
    (CATEGORY, 15, "blocked: gambling"),
    (SCHEDULE, 17, "filtered: schedule"),
    (PROFILE_BLOCK, 17, "filtered: profile block"),
    (CSAM, 15, "blocked"),
    (Decision(BLOCK, "service", "service TikTok (tiktok.com)", service="tiktok", matched="tiktok.com", ede=15),
     15, "blocked: tiktok"),
    (Decision(BLOCK, "pause", "internet paused for this device until resumed", ede=17), 17, "filtered: pause"),
], ids=["category", "schedule", "profile_block", "csam", "service", "pause"])
def test_ede_names_the_kind_of_rule_never_the_listed_name(decision, code, text):
    _, reply = answer(decision, "blockpage")
    assert ede_of(reply) == (code, text)
    raw = decision_reply(query(edns=True)[1], decision, "blockpage", WEB)
    assert b"secret" not in raw and b"tiktok.com" not in raw


@pytest.mark.parametrize("mode", ["blockpage", "null", "nxdomain"])
@pytest.mark.parametrize("qtype", QTYPES)
def test_no_opt_record_and_no_ede_when_the_query_had_no_edns(mode, qtype):
    asked, parsed = query("pokerstars.test", qtype, edns=False)
    raw = decision_reply(parsed, CATEGORY, mode, WEB)
    reply = DNSRecord.parse(raw)
    assert reply.ar == [] and reply.header.ar == 0
    assert b"blocked: gambling" not in raw


def test_opt_record_echoes_dnssec_ok_and_advertises_our_size():
    _, parsed = query(edns=True, dnssec_ok=True)
    reply = DNSRecord.parse(decision_reply(parsed, SCHEDULE, "blockpage", WEB))
    (opt,) = reply.ar
    assert opt.rtype == QTYPE.OPT and opt.rclass == wire.OUR_UDP_SIZE
    assert opt.ttl & 0x8000      # DO echoed


def test_the_question_keeps_the_clients_letter_case():
    asked, parsed = query("PokerStars.Test", "A", edns=True)
    raw = decision_reply(parsed, CATEGORY, "blockpage", WEB)
    assert raw[12:parsed.qend] == asked.pack()[12:parsed.qend]


def test_rewrite_reply_is_a_cname_to_the_safe_host_plus_its_records():
    asked, parsed = query("WWW.Google.com", "A")
    safe = DNSRecord.question("forcesafesearch.google.com", "A").reply()
    safe.add_answer(RR("forcesafesearch.google.com.", QTYPE.A, ttl=300, rdata=A("216.239.38.120")))
    reply = DNSRecord.parse(rewrite_reply(parsed.question, "forcesafesearch.google.com", safe.pack()))
    assert reply.header.id == 0 and reply.header.qr == 1
    assert [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr] == [
        ("www.google.com.", "CNAME", "forcesafesearch.google.com."),
        ("forcesafesearch.google.com.", "A", "216.239.38.120"),
    ]
    assert isinstance(reply.rr[0].rdata, CNAME) and reply.rr[0].ttl == LOCAL_TTL


def test_rewrite_reply_passes_the_safe_hosts_rcode_on():
    _, parsed = query("www.youtube.com", "AAAA")
    empty = DNSRecord.question("restrict.youtube.com", "AAAA").reply()
    empty.header.rcode = RCODE.NXDOMAIN
    reply = DNSRecord.parse(rewrite_reply(parsed.question, "restrict.youtube.com", empty.pack()))
    assert RCODE[reply.header.rcode] == "NXDOMAIN"
    assert [QTYPE[rr.rtype] for rr in reply.rr] == ["CNAME"]
