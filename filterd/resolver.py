"""One query's way through the daemon, as a plain sequence of steps.

access check → rate limit → parse → local answers (ANY, errors) → cache → upstream (coalesced,
stale on failure). `Resolver.answer` returns the reply bytes at once when it can (the hot
path: no task, no await), None to drop, or a coroutine for the slow path.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from . import wire
from .access import AccessList, RateLimiter
from .cache import AnswerCache, CachedAnswer, entry_from_response
from .config import Config
from .upstream import UpstreamError, UpstreamPool

log = logging.getLogger("filterd.resolver")


class Resolver:
    """Everything one worker needs to answer queries under one config."""

    def __init__(self, config: Config, cache: AnswerCache | None = None):
        dns = config.dns
        self.config = config
        self.access = AccessList(dns.allow_networks)
        self.limiter = RateLimiter(dns.rate_limit) if dns.rate_limit else None
        self.cache = cache if cache is not None else AnswerCache(dns.cache.size)
        self.pool = UpstreamPool(dns.upstreams, dns.upstream_timeout_s, dns.tls_ca_file, dns.bootstrap)
        self.inflight: dict[bytes, asyncio.Future] = {}
        self.pending_by_client: Counter[str] = Counter()
        self.pending = 0
        self.counters: Counter[str] = Counter()

    def answer(self, data: bytes, ip: str, limit: int):
        """The reply to `data` from `ip` (bytes), None to send nothing, or a coroutine to await.

        `limit` is the transport's size limit: 65535 for TCP, and for UDP 0, meaning the
        query's own (512, or its EDNS buffer size up to 1232).
        """
        if not self.access.allows(ip):
            self.counters["refused"] += 1
            return _refused(data)
        now = time.monotonic()
        if self.limiter is not None and not self.limiter.allow(ip, now):
            return None
        try:
            query = wire.parse_query(data)
        except wire.WireError as exc:
            self.counters["malformed"] += 1
            log.debug("malformed query from %s (%s): %s", ip, exc, data[:32].hex())
            return wire.header_only_reply(data, exc.rcode) if exc.rcode is not None else None
        if not limit:
            limit = query.udp_size
        if query.opt_version:
            return wire.error_reply(query, wire.BADVERS)
        if query.qclass != wire.CLASS_IN:
            return wire.error_reply(query, wire.REFUSED)
        if query.qtype == wire.TYPE_ANY:
            return wire.rfc8482_reply(query)
        entry = self.cache.get(query.key)
        if entry is not None and now < entry.expires:
            self.counters["cache_hits"] += 1
            return entry.reply(query, now, limit)
        return self.resolve(query, ip, limit)

    async def resolve(self, query: wire.Query, ip: str, limit: int) -> bytes | None:
        """The slow path: ask upstream once for all identical queries in flight."""
        key = query.key
        waiting = self.inflight.get(key)
        if waiting is not None:
            entry = await asyncio.shield(waiting)
        else:
            if self.pending >= self.config.dns.max_pending or \
                    self.pending_by_client[ip] >= self.config.dns.max_pending_per_client:
                self.counters["overloaded"] += 1
                return wire.error_reply(query, wire.SERVFAIL)
            future = asyncio.get_running_loop().create_future()
            self.inflight[key] = future
            self.pending += 1
            self.pending_by_client[ip] += 1
            try:
                entry = await self._fetch(query)
                future.set_result(entry)
            except BaseException as exc:
                future.set_result(None)
                if not isinstance(exc, Exception):
                    raise
                log.exception("unexpected error resolving %s", query.name)
                entry = None
            finally:
                del self.inflight[key]
                self.pending -= 1
                self.pending_by_client[ip] -= 1
                if not self.pending_by_client[ip]:
                    del self.pending_by_client[ip]
        if entry is None:
            stale = self.cache.get(key)
            if stale is not None and time.monotonic() < stale.stale_until:
                self.counters["stale"] += 1
                return stale.stale_reply(query, limit)
            return wire.error_reply(query, wire.SERVFAIL)
        return entry.reply(query, time.monotonic(), limit)

    async def _fetch(self, query: wire.Query) -> CachedAnswer | None:
        """One upstream exchange → a cache entry (stored when cacheable), None if all failed."""
        cache = self.config.dns.cache
        try:
            response = await self.pool.exchange(query.data[12:query.qend], query.do)
            entry, cacheable = entry_from_response(response, time.monotonic(), query.do, cache.min_ttl,
                                                   cache.max_ttl, cache.negative_max_ttl, cache.stale_s)
        except (UpstreamError, wire.WireError) as exc:
            self.counters["upstream_failed"] += 1
            log.info("no upstream answered %s: %s", query.name, exc)
            return None
        self.counters["upstream"] += 1
        if cacheable:
            self.cache.put(query.key, entry)
        return entry

    def close(self) -> None:
        self.pool.close()


def _refused(data: bytes) -> bytes | None:
    """REFUSED for a source outside allow_networks, echoing the question when it parses."""
    try:
        return wire.error_reply(wire.parse_query(data), wire.REFUSED)
    except wire.WireError:
        return wire.header_only_reply(data, wire.REFUSED)
