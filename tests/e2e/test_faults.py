"""The short fault campaign (tests/fault_campaign.py; `make fuzz` runs the long one).

A daemon takes 5,000 mutated datagrams and 1,000 mutated TCP messages from a fixed seed and
must answer each with its own ID and question (or not at all), keep answering normal queries,
and log no traceback. Then an upstream misbehaves in every way we know; each question gets
SERVFAIL or the right answer, and nothing wrong is cached: the same question asked of an
honest upstream afterwards gets the right answer.
"""
from __future__ import annotations

import pytest
from dnslib import QTYPE, DNSRecord

from fault_campaign import HOSTILE_MODES, HostileUpstream, tcp_campaign, udp_campaign
from standin import name_address

NOERROR, SERVFAIL = 0, 2
UPSTREAM_TIMEOUT_S = 0.4


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    return module_daemons([f"udp://127.0.0.1:{standin.port}"], upstream_timeout=1.0)


def test_five_thousand_mutated_datagrams_get_only_their_own_replies(daemon):
    figures = udp_campaign(daemon.port, 5_000)

    assert figures.sent == 5_000 and figures.replies > 1_000
    assert (figures.unparseable, figures.wrong_id, figures.wrong_question) == (0, 0, 0), figures.problems
    assert figures.health_checks == 5 and figures.health_failures == 0, figures.problems
    assert daemon.alive() and "Traceback" not in daemon.stderr()


def test_a_thousand_mutated_tcp_messages_get_only_their_own_replies(daemon):
    figures = tcp_campaign(daemon.port, 1_000)

    assert figures.sent == 1_000 and figures.replies > 200
    assert (figures.unparseable, figures.wrong_id, figures.wrong_question) == (0, 0, 0), figures.problems
    assert figures.health_checks >= 1 and figures.health_failures == 0, figures.problems
    assert daemon.alive() and "Traceback" not in daemon.stderr()


# ---------------------------------------------------------------- a hostile upstream


@pytest.fixture(scope="module")
def hostile(module_daemons):
    upstream = HostileUpstream(UPSTREAM_TIMEOUT_S)
    daemon = module_daemons([f"udp://127.0.0.1:{upstream.port}"], upstream_timeout=UPSTREAM_TIMEOUT_S,
                            cache={"stale": 0})
    yield upstream, daemon
    upstream.close()


def right_answer(reply: DNSRecord, name: str) -> bool:
    return reply.header.rcode == NOERROR and [str(rr.rdata) for rr in reply.rr] == [name_address(name)] \
        and [str(rr.rname).rstrip(".") for rr in reply.rr] == [name]


@pytest.mark.parametrize("mode", [m for m in HOSTILE_MODES if m != "honest"])
def test_a_hostile_upstream_gets_servfail_or_the_right_answer_and_nothing_wrong_is_cached(hostile, mode):
    upstream, daemon = hostile
    name = f"{mode.replace('_', '-')}.hostile.test"
    qtype = "CAA" if mode == "caa_not_utf8" else "A"
    upstream.mode = mode
    try:
        first = daemon.ask(name, qtype, timeout=5)
    finally:
        upstream.mode = "honest"
    second = daemon.ask(name, qtype, timeout=5)

    assert first.q.qname == name and second.q.qname == name
    if qtype == "CAA":
        assert first.header.rcode == SERVFAIL and first.rr == []
        assert second.header.rcode == NOERROR and [rr.rtype for rr in second.rr] == [QTYPE.CAA]
        return
    assert first.header.rcode == SERVFAIL and first.rr == [] or right_answer(first, name), first
    assert right_answer(second, name), second
    if first.header.rcode == SERVFAIL:   # not cached: the honest upstream was asked again
        assert upstream.questions[name] >= 2
    assert daemon.alive() and "Traceback" not in daemon.stderr()
