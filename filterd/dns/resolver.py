"""One query's way through the daemon, as a plain sequence of steps.

access check → rate limit (over it: REFUSED on TCP, dropped or truncated on UDP) → parse
(errors answered here) → client → policy (memoised) → the daemon's own answer (block, filter
host, ANY) or SafeSearch rewrite, or cache → upstream (coalesced, queued behind a client's
pending cap, the answer scrubbed to its question, stale on failure) → CNAME targets checked →
query log. `Resolver.answer` returns the reply bytes at once when it can (the hot path: no
task, no await), None to drop, or a coroutine for the slow path.

A reload makes a new Resolver; the old one is `retire`d, not closed: the queries it is still
waiting on upstream are answered by it (see `retire`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections import Counter, deque

from filterd.dns import wire
from filterd.dns.access import AccessList, RateLimiter
from filterd.dns.cache import AnswerCache, CachedAnswer, entry_from_response
from filterd.rules.devices import ClientMap
from filterd.rules.config import Config
from filterd.rules.limits import subject_for
from filterd.rules.policy import ALLOW, REWRITE, Decision, Override, Policy, decide, limits_counting
from filterd.dns.replies import decision_reply, rewrite_reply
from filterd.dns.upstream import UpstreamError, UpstreamPool

LIMITED_TTL_S = 60    # answers for names a daily limit counts: an app in use keeps asking
MEMO_LIMIT = 20_000   # decisions remembered per client before the memo starts over
RECENT_LIMIT = 20_000  # replies remembered per client within one second
MAX_WAITING_PER_CLIENT = 1000   # queries queued behind one client's max_pending_per_client
_monotonic = time.monotonic
_time = time.time


class Client:
    """A source address as the policy sees it, with its memo of recent decisions and the
    replies it was sent during the current second (keyed by the query's bytes after the ID)."""

    __slots__ = ("ip", "device", "profile", "memo", "log_mode", "recent", "recent_second", "shown")

    def __init__(self, ip: str, device: str | None, profile: str, log_mode: str, shown: str | None = None):
        self.ip = ip
        # Who the log names: the address, or an unknown client ID (never an address: it has no
        # dot or colon), so the parent sees "new device emma-phone?" instead of an address.
        self.shown = shown or ip
        self.device = device
        self.profile = profile
        self.memo: dict = {}
        self.log_mode = log_mode    # full | anonymous | off
        self.recent: dict = {}
        self.recent_second = -1

    def forget(self) -> None:
        """Drop remembered decisions and replies (the rules or overrides changed)."""
        self.memo.clear()
        self.recent.clear()


class Verdict:
    """A decision for one question, with its ready-made reply when the daemon answers itself."""

    __slots__ = ("decision", "valid_until", "plain", "with_opt", "qend", "counts", "counted_minute")

    def __init__(self, decision: Decision, plain: bytes | None, with_opt: bytes | None, qend: int,
                 counts: tuple = ()):
        self.decision = decision
        self.valid_until = decision.valid_until
        self.plain = plain
        self.with_opt = with_opt
        self.qend = qend
        self.counts = counts    # (limit, subject) pairs an allowed query counts toward
        self.counted_minute = -1   # the wall-clock minute last marked for them (marking is per minute)

    def reply(self, query: wire.Query) -> bytes:
        stored = self.with_opt if query.has_opt else self.plain
        data = query.data
        if not query.rd:   # RD is copied from each client's own query (RFC 1035)
            return data[:2] + bytes([stored[2] & 0xFE]) + stored[3:12] + data[12:query.qend] + stored[self.qend:]
        return data[:2] + bytes([stored[2] | 0x01]) + stored[3:12] + data[12:query.qend] + stored[self.qend:]

log = logging.getLogger("filterd.resolver")


class Resolver:
    """Everything one worker needs to answer queries under one config."""

    def __init__(self, config: Config, policy: Policy, cache: AnswerCache | None = None,
                 overrides: tuple[Override, ...] = (), pool: UpstreamPool | None = None,
                 neighbours: dict[str, str] | None = None, querylog=None, usage=None):
        dns = config.dns
        self.config = config
        self.policy = policy
        self.overrides = overrides
        self.client_map = ClientMap(config.rules)
        self.clients: dict[str, Client] = {}
        self.neighbours: dict[str, str] = neighbours or {}
        self.querylog = querylog    # store.log_writer.QueryLog, or None: nothing is logged
        self.usage = usage          # family.limits.UsageCounter, or None: daily limits are not counted
        self.limited_profiles = frozenset(name for name, profile in config.rules.profiles.items() if profile.limits)
        self.access = AccessList(dns.allow_networks)
        self.access_verdicts = self.access.verdicts
        self.limiter = RateLimiter(dns.rate_limit) if dns.rate_limit else None
        self.cache = cache if cache is not None else AnswerCache(dns.cache.size)
        self.pool = pool if pool is not None else \
            UpstreamPool(dns.upstreams, dns.upstream_timeout_s, dns.tls_ca_file, dns.bootstrap)
        self.retired = False        # replaced by a reload: close the pool after the last answer
        self.owns_pool = True
        self.inflight: dict[bytes, asyncio.Future] = {}
        self.pending_by_client: Counter[str] = Counter()
        self.slot_waiters: dict[str, deque] = {}   # queries queued behind a client's pending cap
        self.pending = 0
        self.counters: Counter[str] = Counter()

    def answer(self, data: bytes, ip: str, limit: int, client_id: str | None = None):
        """The reply to `data` from `ip` (bytes), None to send nothing, or a coroutine to await.

        `limit` is the transport's size limit: 65535 for TCP, and for UDP 0, meaning the
        query's own (512, or its EDNS buffer size up to 1232). `client_id` is the device's own
        name for itself over DoT/DoH; access and rate limits still go by the address.
        """
        allowed = self.access_verdicts.get(ip)   # memoised per source address
        if allowed is None:
            allowed = self.access.allows(ip)
        if not allowed:
            self.counters["refused"] += 1
            return _refused(data)
        now = _monotonic()
        if self.limiter is not None and not self.limiter.allow(ip, now):
            return self.rate_limited(data, ip, limit)
        client = self.clients.get(ip if client_id is None else (client_id, ip))
        udp = not limit
        if udp and client is not None:
            # The same bytes (after the ID) from the same client within the same second get the
            # same reply: its TTLs are rendered per second and decisions hold at least that long.
            second = int(now)
            if client.recent_second == second:
                hit = client.recent.get(data[2:])
                if hit is not None:
                    self.log_answer(client, _time(), hit[1], hit[2], hit[3], hit[0][1] & 0x0F)
                    return data[:2] + hit[0]
            else:
                client.recent.clear()
                client.recent_second = second
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
        if client is None:
            client = self.identify(ip, client_id)
        wall = _time()
        verdict = client.memo.get(query.key)
        if verdict is None or wall >= verdict.valid_until:
            verdict = self.judge(client, query, wall)
        decision = verdict.decision
        ttl_cap = 0
        if verdict.counts and self.usage is not None:
            minute = int(wall // 60)
            if minute != verdict.counted_minute:    # the same minute again marks nothing new
                verdict.counted_minute = minute
                self.usage.count(verdict.counts, datetime.datetime.fromtimestamp(wall, self.policy.tz))
            ttl_cap = LIMITED_TTL_S
        if verdict.plain is not None:
            reply = verdict.reply(query)
        elif query.qtype == wire.TYPE_ANY:
            reply = wire.rfc8482_reply(query)
        elif decision.action == REWRITE:
            return self.rewrite(query, decision, client, wall, limit, ttl_cap)
        else:
            entry = self.cache.get(query.key)
            if entry is None or now >= entry.expires:
                return self.resolve(query, client, wall, limit, decision, ttl_cap=ttl_cap)
            reply, decision = self.serve_entry(entry, query, client, decision, wall, now, limit, ttl_cap)
        self.log_answer(client, wall, query.key, query.qtype, decision, reply[3] & 0x0F)
        if udp and len(client.recent) < RECENT_LIMIT and client.recent_second == int(now):
            client.recent[data[2:]] = (reply[2:], query.key, query.qtype, decision)
        return reply

    def rate_limited(self, data: bytes, ip: str, limit: int) -> bytes | None:
        """A query over its client's rate: REFUSED over TCP (a stream's client must not wait
        for an answer that never comes), over UDP dropped, or every `slip`-th one truncated."""
        if limit:
            self.counters["rate_refused"] += 1
            return _refused(data)
        if not self.limiter.slips(ip):
            self.counters["rate_dropped"] += 1
            return None
        self.counters["rate_slipped"] += 1
        try:
            return wire.truncated_reply(wire.parse_query(data))
        except wire.WireError:
            return None

    def log_answer(self, client: Client, wall: float, key: bytes, qtype: int, decision: Decision,
                   rcode: int, latency_ms: float | None = None) -> None:
        """Queue one answered query for the log (the one place its record is built)."""
        if self.querylog is not None and client.log_mode != "off":
            self.querylog.record((wall, client.shown, client.device, client.profile, key, qtype, decision,
                                  rcode, latency_ms, client.log_mode))

    # ------------------------------------------------ what the worker tells it

    def new_neighbours(self, neighbours: dict[str, str]) -> None:
        """The ARP table changed (IP → MAC): devices are identified afresh."""
        if neighbours != self.neighbours:
            self.neighbours = neighbours
            self.clients.clear()

    def new_overrides(self, overrides: tuple[Override, ...]) -> None:
        """Pauses and temporary allows changed in the state DB: they apply from the next query."""
        if overrides != self.overrides:
            self.overrides = overrides
            self.rules_changed()

    def rules_changed(self) -> None:
        """Forget every remembered decision and reply, so none outlives the rules it came from."""
        for client in self.clients.values():
            client.forget()

    # ------------------------------------------------ policy

    def identify(self, ip: str, client_id: str | None = None) -> Client:
        identity = self.client_map.identify(ip, self.neighbours.get(ip), client_id)
        if len(self.clients) > 4096:
            self.clients.clear()
        profile = self.config.rules.profiles.get(identity.profile)
        log_mode = (profile.log if profile else None) or self.config.log.mode
        shown = client_id if client_id is not None and identity.device is None else None
        client = Client(ip, identity.device, identity.profile, log_mode, shown)
        self.clients[ip if client_id is None else (client_id, ip)] = client
        return client

    def decide_name(self, client: Client, name: str, qtype: int, wall: float) -> Decision:
        now = datetime.datetime.fromtimestamp(wall, self.policy.tz)
        return decide(self.policy, client.profile, name, qtype, now, client.device, self.overrides)

    def judge(self, client: Client, query: wire.Query, wall: float) -> Verdict:
        """Decide for the query's name and remember the verdict (and its reply) for a while."""
        decision = self.decide_name(client, query.name, query.qtype, wall)
        if decision.action in (ALLOW, REWRITE):
            verdict = Verdict(decision, None, None, query.qend, self.counted_toward(client, query.name))
        else:   # both variants of the reply, for clients with and without EDNS
            web, mode = self.config.rules.web, self.config.dns.block_mode
            verdict = Verdict(decision, decision_reply(query.variant(False), decision, mode, web),
                              decision_reply(query.variant(True), decision, mode, web), query.qend)
        if len(client.memo) > MEMO_LIMIT:
            client.memo.clear()
        client.memo[query.key] = verdict
        return verdict

    def counted_toward(self, client: Client, name: str) -> tuple:
        """The daily limits an allowed query for `name` counts toward, with whose allowance."""
        if client.profile not in self.limited_profiles:
            return ()
        profile = self.config.rules.profiles[client.profile]
        counted = set(limits_counting(self.policy, client.profile, name))
        return tuple((limit, subject) for limit in profile.limits if limit.name in counted
                     for subject in (subject_for(limit, client.device, client.profile),) if subject is not None)

    def serve_entry(self, entry: CachedAnswer, query: wire.Query, client: Client, decision: Decision,
                    wall: float, now: float, limit: int, ttl_cap: int = 0) -> tuple[bytes, Decision]:
        """A cached or fresh answer for `query`, unless its CNAME chain leads to a blocked name."""
        if entry.cnames and decision.rule == "default":
            cloaked = self.cname_verdict(client, entry.cnames, query, wall)
            if cloaked is not None:
                return cloaked
        return entry.reply(query, now, limit, ttl_cap), decision

    def cname_verdict(self, client: Client, cnames: tuple[str, ...], query: wire.Query,
                      wall: float) -> tuple[bytes, Decision] | None:
        """CNAME cloaking: an allowed name whose answer points at a blocked one is blocked."""
        for target in cnames:
            memo_key = ("cname", target, query.qtype)
            verdict = client.memo.get(memo_key)
            if verdict is None or wall >= verdict.valid_until:
                decision = self.decide_name(client, target, query.qtype, wall)
                verdict = Verdict(decision, None, None, 0)
                client.memo[memo_key] = verdict
            decision = verdict.decision
            if decision.blocked:
                cloaked = dataclasses.replace(
                    decision, target=None,
                    reason=f"points (CNAME) to {target if decision.rule != 'csam' else 'a blocked name'}: "
                           f"{decision.reason}")
                self.counters["blocked"] += 1
                return decision_reply(query, cloaked, self.config.dns.block_mode, self.config.rules.web), cloaked
        return None

    def rewrite(self, query: wire.Query, decision: Decision, client: Client, wall: float, limit: int,
                ttl_cap: int = 0):
        """SafeSearch: serve the cached rewrite, or build it from the safe host's answer."""
        key = b"S" + decision.target.encode() + b"|" + query.key
        entry = self.cache.get(key)
        now = time.monotonic()
        if entry is None or now >= entry.expires:
            return self.resolve(query, client, wall, limit, decision, key=key, ttl_cap=ttl_cap)
        reply = entry.reply(query, now, limit, ttl_cap)
        self.log_answer(client, wall, query.key, query.qtype, decision, reply[3] & 0x0F)
        return reply

    # ------------------------------------------------ upstream

    async def resolve(self, query: wire.Query, client: Client, wall: float, limit: int,
                      decision: Decision, key: bytes | None = None, ttl_cap: int = 0) -> bytes | None:
        """The slow path: ask upstream once for all identical queries in flight, then log."""
        started = time.monotonic()
        reply, decision = await self._resolve(query, client.ip, limit, client, decision, key, ttl_cap)
        if reply is not None:
            self.log_answer(client, wall, query.key, query.qtype, decision, reply[3] & 0x0F,
                            round((time.monotonic() - started) * 1000, 2))
        return reply

    async def _resolve(self, query: wire.Query, ip: str, limit: int, client: Client,
                       decision: Decision, key: bytes | None, ttl_cap: int = 0) -> tuple[bytes, Decision]:
        """The reply, and the decision it carries out (a CNAME to a blocked name changes it)."""
        key = key or query.key
        target = decision.target if decision.action == REWRITE else None
        deadline = time.monotonic() + self.pool.timeout_s
        while True:
            waiting = self.inflight.get(key)
            if waiting is not None:
                entry = await asyncio.shield(waiting)
                break
            if self.pending >= self.config.dns.max_pending:
                self.counters["overloaded"] += 1
                return wire.error_reply(query, wire.SERVFAIL), decision
            if self.pending_by_client[ip] >= self.config.dns.max_pending_per_client:
                # A browser opening a busy page asks hundreds of names at once: queue them
                # for a while rather than fail them; only a client that stays over is told SERVFAIL.
                if await self._wait_for_slot(ip, deadline):
                    continue
                self.counters["overloaded"] += 1
                return wire.error_reply(query, wire.SERVFAIL), decision
            future = asyncio.get_running_loop().create_future()
            self.inflight[key] = future
            self.pending += 1
            self.pending_by_client[ip] += 1
            try:
                entry = await self._fetch(query, target, key)
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
                self._free_slot(ip)
                if self.retired and not self.pending:
                    self.close()
            break
        if entry is None:
            stale = self.cache.get(key)
            if stale is not None and time.monotonic() < stale.stale_until:
                self.counters["stale"] += 1
                return stale.stale_reply(query, limit), decision
            return wire.error_reply(query, wire.SERVFAIL), decision
        return self.serve_entry(entry, query, client, decision, time.time(), time.monotonic(), limit, ttl_cap)

    async def _wait_for_slot(self, ip: str, deadline: float) -> bool:
        """Wait until one of the client's queries upstream is answered; False at the deadline
        or when too many of its queries already wait (a flood, not a page)."""
        waiters = self.slot_waiters.setdefault(ip, deque())
        left = deadline - time.monotonic()
        if len(waiters) >= MAX_WAITING_PER_CLIENT or left <= 0:
            return False
        future = asyncio.get_running_loop().create_future()
        waiters.append(future)
        try:
            await asyncio.wait_for(future, left)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters and self.slot_waiters.get(ip) is waiters:
                del self.slot_waiters[ip]

    def _free_slot(self, ip: str) -> None:
        waiters = self.slot_waiters.get(ip)
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return

    async def _fetch(self, query: wire.Query, target: str | None, key: bytes) -> CachedAnswer | None:
        """One upstream exchange → a cache entry (stored when cacheable), None if all failed.

        With `target` (SafeSearch), the safe host is asked instead and the answer rewritten.
        """
        cache = self.config.dns.cache
        question = query.data[12:query.qend]
        try:
            if target is None:
                response = await self.pool.exchange(question, query.do)
            else:
                target_question = wire.encode_name(target) + question[-4:]
                target_answer = await self.pool.exchange(target_question, query.do)
                response = rewrite_reply(question, target, target_answer)
            entry, cacheable = entry_from_response(response, time.monotonic(), query.do, cache.min_ttl,
                                                   cache.max_ttl, cache.negative_max_ttl, cache.stale_s)
        except (UpstreamError, wire.WireError) as exc:
            self.counters["upstream_failed"] += 1
            if isinstance(exc, wire.WireError):
                self.counters["upstream_malformed" if exc.rcode == wire.FORMERR else "scrubbed_answers"] += 1
            log.info("no upstream answered %s: %s", query.name, exc)
            return None
        self.counters["upstream"] += 1
        if entry.dropped:
            self.counters["scrubbed_answers"] += 1
            self.counters["scrubbed_records"] += len(entry.dropped)
            log.info("answer for %s: dropped %d records not about the question: %s", query.name,
                     len(entry.dropped), ", ".join(entry.dropped[:5]))
        if cacheable:
            self.cache.put(key, entry)
        return entry

    def retire(self, successor: "Resolver") -> None:
        """A reload replaced this resolver: let the queries it is still waiting on be answered.

        A pool the successor took over stays open. Otherwise it is closed when the last
        pending query is answered, or after every upstream had its timeout, whichever is first.
        """
        self.owns_pool = successor.pool is not self.pool
        if not self.owns_pool:
            return
        self.retired = True
        if not self.pending:
            self.close()
            return
        pool = self.pool
        grace_s = pool.timeout_s * max(len(pool.upstreams), 1) + 1.0
        asyncio.get_running_loop().call_later(grace_s, self.close)

    def close(self) -> None:
        if self.owns_pool:
            self.pool.close()


def _refused(data: bytes) -> bytes | None:
    """REFUSED for a source outside allow_networks, echoing the question when it parses."""
    try:
        return wire.error_reply(wire.parse_query(data), wire.REFUSED)
    except wire.WireError:
        return wire.header_only_reply(data, wire.REFUSED)
