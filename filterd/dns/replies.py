"""Answers the daemon makes itself: blocked names, the filter's own host, SafeSearch rewrites."""
from __future__ import annotations

import ipaddress
import struct

from filterd.dns import wire
from filterd.rules.policy import LOCAL, NXDOMAIN, Decision

BLOCKED_TTL = 10   # short, so a parent's "allow" reaches the child's device quickly
LOCAL_TTL = 300


def _record(rtype: int, ttl: int, rdata: bytes) -> bytes:
    """A record owned by the question's name (a compression pointer to offset 12)."""
    return b"\xc0\x0c" + struct.pack(">HHIH", rtype, wire.CLASS_IN, ttl, len(rdata)) + rdata


def synthesize(query: wire.Query, rcode: int, records: list[bytes], ede: bytes = b"") -> bytes:
    head = wire.reply_header(query, rcode, an=len(records), ar=1 if query.has_opt else 0)
    out = head + query.question + b"".join(records)
    return out + wire.opt_record(query.do, 0, ede) if query.has_opt else out


def _addresses(query: wire.Query, v4: str | None, v6: str | None, ttl: int) -> list[bytes]:
    if query.qtype == wire.TYPE_A and v4:
        return [_record(wire.TYPE_A, ttl, ipaddress.IPv4Address(v4).packed)]
    if query.qtype == wire.TYPE_AAAA and v6:
        return [_record(wire.TYPE_AAAA, ttl, ipaddress.IPv6Address(v6).packed)]
    return []   # every other type: no data, so nothing slips through on HTTPS/SVCB, MX, TXT…


def decision_reply(query: wire.Query, decision: Decision, block_mode: str, web) -> bytes:
    """The reply for a block, nxdomain or local decision, per `dns.block_mode`."""
    ede = wire.ede_option(decision.ede, _ede_text(decision)) if decision.ede and query.has_opt else b""
    if decision.action == LOCAL:
        return synthesize(query, wire.NOERROR, _addresses(query, web.address, web.address6, LOCAL_TTL))
    if decision.action == NXDOMAIN or block_mode == "nxdomain":
        return synthesize(query, wire.NXDOMAIN, [], ede)
    if block_mode == "null":
        return synthesize(query, wire.NOERROR, _addresses(query, "0.0.0.0", "::", BLOCKED_TTL), ede)  # nosec B104
    return synthesize(query, wire.NOERROR,
                      _addresses(query, web.address or "0.0.0.0", web.address6, BLOCKED_TTL), ede)  # nosec B104


def _ede_text(decision: Decision) -> str:
    """A short EXTRA-TEXT: the kind of rule, never the list entry that matched."""
    if decision.rule == "csam":
        return "blocked"
    if decision.category:
        return f"blocked: {decision.category}"
    if decision.service:
        return f"blocked: {decision.service}"
    word = "blocked" if decision.ede == 15 else "filtered"
    return f"{word}: {decision.rule.replace('_', ' ')}"


def rewrite_reply(question: bytes, target: str, target_answer: bytes) -> bytes:
    """SafeSearch: a CNAME to the engine's safe host plus that host's own records.

    Built once per (host, type) with dnslib and then cached like an upstream answer (ID 0, no
    OPT: the cache splices in each client's ID, question and OPT).
    """
    from dnslib import CNAME, QTYPE, RR, DNSLabel, DNSRecord

    try:
        upstream = DNSRecord.parse(target_answer)
    except Exception as exc:   # dnslib raises several types on garbage (UnicodeDecodeError in CAA…)
        raise wire.WireError(wire.FORMERR, f"safe host's answer does not parse: {exc!r}") from None
    reply = DNSRecord.parse(struct.pack(">HHHHHH", 0, wire.QR | wire.RD | wire.RA | upstream.header.rcode,
                                        1, 0, 0, 0) + question)
    name = wire.name_from_question(question.lower())
    reply.add_answer(RR(DNSLabel(name + "."), QTYPE.CNAME, ttl=LOCAL_TTL, rdata=CNAME(target + ".")))
    for rr in upstream.rr:
        reply.add_answer(rr)
    return reply.pack()
