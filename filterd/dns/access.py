"""Who may ask, and how fast: open-resolver protection and the per-client rate limit."""
from __future__ import annotations

import ipaddress


class AccessList:
    """Sources allowed to query (`dns.allow_networks`); the verdict per address is memoised."""

    def __init__(self, networks) -> None:
        self.v4 = [n for n in networks if n.version == 4]
        self.v6 = [n for n in networks if n.version == 6]
        self.verdicts: dict[str, bool] = {}

    def allows(self, ip: str) -> bool:
        verdict = self.verdicts.get(ip)
        if verdict is None:
            verdict = self._check(ip)
            if len(self.verdicts) > 65_536:  # spoofed floods must not grow it without bound
                self.verdicts.clear()
            self.verdicts[ip] = verdict
        return verdict

    def _check(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        networks = self.v4 if address.version == 4 else self.v6
        return any(address in network for network in networks)


BURST_SECONDS = 5   # a full bucket holds five seconds' worth of queries
SLIP = 2            # over UDP, every 2nd dropped query gets a truncated reply instead


class RateLimiter:
    """A token bucket per client address: `rate` queries a second, bursts up to five times that.

    So that one device (a misbehaving app, a child's script) cannot starve the house: its
    excess queries are refused, everyone else's are answered as usual. The burst is sized for
    a house, not a benchmark: a browser opening a busy page asks A, AAAA and HTTPS for 150
    names within a second (450 queries), well inside the default 200/s × 5.

    Over UDP the excess is dropped, but every `slip`-th dropped query is answered with TC=1
    (BIND's RRL "slip"): a real client then retries over TCP, where it is told REFUSED when
    still over the limit, and a spoofed victim gets at most half the (tiny) replies.
    """

    def __init__(self, rate: int, slip: int = SLIP) -> None:
        self.rate = float(rate)
        self.burst = float(max(rate * BURST_SECONDS, 1))
        self.slip = slip
        self.buckets: dict[str, list[float]] = {}
        self.dropped = 0

    def allow(self, ip: str, now: float) -> bool:
        bucket = self.buckets.get(ip)
        if bucket is None:
            if len(self.buckets) > 65_536:
                self.buckets.clear()
            self.buckets[ip] = [self.burst - 1, now, 0]
            return True
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            bucket[2] += 1
            self.dropped += 1
            return False
        bucket[0] = tokens - 1.0
        return True

    def slips(self, ip: str) -> bool:
        """After `allow` said no to a UDP query: whether this one gets a truncated reply."""
        bucket = self.buckets.get(ip)
        return bool(self.slip) and bucket is not None and bucket[2] % self.slip == 0
