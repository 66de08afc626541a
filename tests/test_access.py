"""filterd.dns.access: who may ask (allow_networks) and how fast (the per-client token bucket)."""
from __future__ import annotations

import ipaddress

import pytest

from filterd.dns.access import AccessList, RateLimiter
from filterd.rules.config import DEFAULT_ALLOW_NETWORKS


def access_list(*networks: str) -> AccessList:
    return AccessList([ipaddress.ip_network(n) for n in networks])


# ---------------------------------------------------------------- the allow list


@pytest.mark.parametrize("ip, allowed", [
    ("192.168.1.20", True),
    ("10.200.0.1", True),
    ("127.0.0.1", True),
    ("100.64.3.4", True),                  # carrier-grade NAT
    ("8.8.8.8", False),
    ("172.32.0.1", False),                 # just outside 172.16.0.0/12
    ("::1", True),
    ("fd12:3456::1", True),                # ULA
    ("fe80::1%eth0", True),                # link-local with a scope, as the kernel reports it
    ("2001:db8::1", False),
    ("::ffff:192.168.1.20", True),         # IPv4-mapped: a dual-stack socket's view of an IPv4 client
    ("::ffff:8.8.8.8", False),
    ("not an address", False),
    ("", False),
])
def test_default_networks_allow_the_home_and_refuse_the_internet(ip, allowed):
    assert access_list(*DEFAULT_ALLOW_NETWORKS).allows(ip) is allowed


def test_ipv4_mapped_address_is_judged_by_the_ipv4_networks():
    only_v4 = access_list("192.168.0.0/16")

    assert only_v4.allows("::ffff:192.168.7.7")
    assert not only_v4.allows("::ffff:10.0.0.1")


def test_single_host_network():
    one = access_list("127.0.0.1/32")

    assert one.allows("127.0.0.1")
    assert not one.allows("127.0.0.2")


def test_empty_allow_list_refuses_everyone():
    nobody = access_list()

    assert not nobody.allows("127.0.0.1") and not nobody.allows("::1")


def test_verdicts_stay_right_when_the_memo_starts_over():
    networks = access_list("10.0.0.0/8")
    for i in range(70_000):  # more distinct sources than the memo keeps
        networks.allows(f"172.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")

    assert len(networks.verdicts) <= 65_537
    assert networks.allows("10.1.2.3") and not networks.allows("172.0.0.1")


# ---------------------------------------------------------------- the rate limiter


def allowed_count(limiter: RateLimiter, ip: str, now: float, attempts: int) -> int:
    return sum(limiter.allow(ip, now) for _ in range(attempts))


def test_a_burst_of_five_times_the_rate_passes_then_queries_are_dropped():
    limiter = RateLimiter(10)

    assert allowed_count(limiter, "192.168.1.5", 100.0, 100) == 50
    assert limiter.dropped == 50


def test_every_second_dropped_query_slips_through_as_truncated():
    limiter = RateLimiter(10)
    allowed_count(limiter, "192.168.1.5", 100.0, 50)
    slipped = []
    for _ in range(6):
        assert not limiter.allow("192.168.1.5", 100.0)
        slipped.append(limiter.slips("192.168.1.5"))

    assert slipped == [False, True] * 3


def test_a_browser_opening_a_busy_page_is_not_a_flood_at_the_default_rate():
    limiter = RateLimiter(200)
    # 150 names, each asked A, AAAA and HTTPS, within one second
    now = 100.0
    assert allowed_count(limiter, "192.168.1.5", now, 150 * 3) == 450


def test_tokens_come_back_at_the_rate():
    limiter = RateLimiter(10)
    allowed_count(limiter, "192.168.1.5", 100.0, 50)

    assert not limiter.allow("192.168.1.5", 100.05)    # half a token
    assert limiter.allow("192.168.1.5", 100.15)        # 0.5 + 1.0 tokens by now
    assert allowed_count(limiter, "192.168.1.5", 101.15, 100) == 10  # one second: ten more


def test_a_long_quiet_spell_refills_to_the_burst_only():
    limiter = RateLimiter(10)
    allowed_count(limiter, "192.168.1.5", 100.0, 50)

    assert allowed_count(limiter, "192.168.1.5", 1_000_000.0, 100) == 50


def test_each_client_has_its_own_bucket():
    limiter = RateLimiter(10)
    allowed_count(limiter, "192.168.1.5", 100.0, 100)

    assert limiter.allow("192.168.1.6", 100.0)
    assert not limiter.allow("192.168.1.5", 100.0)


def test_steady_traffic_at_the_rate_is_never_dropped():
    limiter = RateLimiter(50)
    now = 100.0
    for _ in range(1000):
        assert limiter.allow("192.168.1.5", now)
        now += 1 / 50
    assert limiter.dropped == 0


def test_buckets_stay_bounded_under_a_flood_of_sources():
    limiter = RateLimiter(10)
    for i in range(70_000):
        limiter.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 100.0)

    assert len(limiter.buckets) <= 65_537
