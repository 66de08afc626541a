"""The answer cache: upstream answers kept as bytes, served by patching ID and TTLs.

A hit costs a dict lookup and a few byte slices: the TTLs are re-rendered at most once a second
per entry, and the client's ID and question (with its 0x20 letter case) are spliced around the
stored bytes. Entries outlive their TTL by `stale_s` so they can be served stale when every
upstream fails (RFC 8767).
"""
from __future__ import annotations

import struct
from collections import OrderedDict

from filterd.dns import wire
from filterd.dns.scrub import scrub

STALE_TTL = 30  # RFC 8767 §4: the TTL of a stale answer


class CachedAnswer:
    """One answer as stored: bytes without OPT, TTL offsets, when it was stored and expires."""

    __slots__ = ("answer", "offsets", "ttls", "stored_at", "expires", "stale_until", "qend",
                 "rendered_second", "plain", "with_opt", "do", "rcode", "cnames", "dropped",
                 "capped_second", "capped", "capped_with_opt")

    def __init__(self, answer: bytes, offsets: list[int], ttls: list[int], stored_at: float,
                 lifetime: float, stale_s: float, qend: int, do: bool, cnames: tuple[str, ...] = ()):
        self.answer = answer
        self.offsets = offsets
        self.ttls = ttls
        self.stored_at = stored_at
        self.expires = stored_at + lifetime
        self.stale_until = self.expires + stale_s
        self.qend = qend
        self.do = do
        self.rcode = answer[3] & 0x0F
        self.cnames = cnames    # names the answer's CNAME chain points to (for the policy's check)
        self.dropped: tuple[str, ...] = ()   # records the scrubber removed (not about the question)
        self.rendered_second = -1
        self.plain = answer
        self.with_opt: bytes | None = None   # made when a client with EDNS first asks
        self.capped_second = -1              # the same, with TTLs capped (names a daily limit counts)
        self.capped = answer
        self.capped_with_opt: bytes | None = None

    def _render(self, ttl_of) -> bytes:
        patched = bytearray(self.answer)
        for offset, ttl in zip(self.offsets, self.ttls):
            struct.pack_into(">I", patched, offset, ttl_of(ttl))
        return bytes(patched)

    def _add_opt(self, plain: bytes) -> bytes:
        """The same answer with our OPT record appended (additional count + 1)."""
        arcount = ((plain[10] << 8) | plain[11]) + 1
        return plain[:10] + struct.pack(">H", arcount) + plain[12:] + wire.opt_record(self.do)

    def render(self, elapsed: int) -> None:
        """Refresh the TTLs for the whole seconds the entry has aged (they count down)."""
        self.plain = self._render(lambda ttl: ttl - elapsed if ttl > elapsed else 0)
        self.with_opt = None
        self.rendered_second = elapsed

    def reply(self, query: wire.Query, now: float, limit: int, ttl_cap: int = 0) -> bytes:
        """This answer for `query`: its ID and question spliced in, truncated if over `limit`.
        `ttl_cap`: no TTL above it (names a daily limit counts: a device in use keeps asking)."""
        elapsed = int(now - self.stored_at)
        if ttl_cap:    # rendered once a second, like the uncapped answer (ttl_cap is one constant)
            if self.capped_second != elapsed:
                self.capped = self._render(lambda ttl: min(ttl - elapsed if ttl > elapsed else 0, ttl_cap))
                self.capped_with_opt = None
                self.capped_second = elapsed
            if not query.has_opt:
                return _splice(query, self.capped, limit)
            if self.capped_with_opt is None:
                self.capped_with_opt = self._add_opt(self.capped)
            return _splice(query, self.capped_with_opt, limit)
        if self.rendered_second != elapsed:
            self.render(elapsed)
        if not query.has_opt:
            return _splice(query, self.plain, limit)
        if self.with_opt is None:
            self.with_opt = self._add_opt(self.plain)
        return _splice(query, self.with_opt, limit)

    def stale_reply(self, query: wire.Query, limit: int) -> bytes:
        """The expired answer with every TTL set to 30 s (RFC 8767 §4)."""
        plain = self._render(lambda ttl: STALE_TTL)
        return _splice(query, self._add_opt(plain) if query.has_opt else plain, limit)


def _splice(query: wire.Query, stored: bytes, limit: int) -> bytes:
    """The stored answer with the client's ID, RD bit and question (its letter case) put in."""
    if len(stored) > limit:
        return wire.truncated_reply(query)
    data = query.data
    qend = query.qend
    if not query.rd:
        return data[:2] + bytes([stored[2] & 0xFE]) + stored[3:12] + data[12:qend] + stored[qend:]
    return data[:2] + stored[2:12] + data[12:qend] + stored[qend:]


class AnswerCache:
    """Bounded LRU of CachedAnswer by question key."""

    def __init__(self, size: int):
        self.size = size
        self.entries: OrderedDict[bytes, CachedAnswer] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: bytes) -> CachedAnswer | None:
        """The entry for key, fresh or stale (the caller compares `expires`)."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: CachedAnswer) -> None:
        if self.size <= 0:
            return
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


def entry_from_response(response: bytes, now: float, do: bool, min_ttl: int, max_ttl: int,
                        negative_max_ttl: int, stale_s: int) -> tuple[CachedAnswer, bool]:
    """Turn an upstream's answer into a cache entry; the flag says whether to store it.

    dnslib checks the whole message once here (off the hot path); the OPT record is cut out (we
    add our own per client) and every TTL is clamped to the configured bounds. Negative answers
    live as long as their SOA says (RFC 2308), capped by `negative_max_ttl`.
    """
    from dnslib import QTYPE, DNSRecord, DNSError

    try:
        record = DNSRecord.parse(response)
    except (DNSError, Exception) as exc:  # dnslib raises several types on garbage
        raise wire.WireError(wire.FORMERR, f"upstream answer does not parse: {exc!r}") from None
    answers, additional = len(record.rr), len(record.ar)
    dropped = scrub(record)
    if dropped or len(record.ar) != additional:
        if answers and not record.rr and record.header.rcode == wire.NOERROR:
            raise wire.WireError(wire.SERVFAIL, "nothing in the upstream answer is about the question: "
                                 + ", ".join(dropped[:5]))
        try:
            response = record.pack()
        except Exception as exc:
            raise wire.WireError(wire.FORMERR, f"upstream answer does not pack again: {exc!r}") from None
    layout = wire.answer_layout(response)
    if layout.opt_start >= 0:
        arcount = struct.unpack_from(">H", response, 10)[0] - 1
        response = (response[:10] + struct.pack(">H", arcount) + response[12:layout.opt_start]
                    + response[layout.opt_end:])
        layout = wire.answer_layout(response)
    rcode = response[3] & 0x0F
    negative = rcode == wire.NXDOMAIN or (rcode == wire.NOERROR and not record.rr)
    if rcode not in (wire.NOERROR, wire.NXDOMAIN):
        lifetime = 0   # NOTIMP, FORMERR, YXDOMAIN…: passed through, never cached
    elif negative:
        soa = [rr for rr in record.auth if rr.rtype == QTYPE.SOA]
        lifetime = min(soa[0].ttl, soa[0].rdata.times[4]) if soa else min(60, negative_max_ttl)
        lifetime = max(min(lifetime, negative_max_ttl), min_ttl)
    else:
        ttls = [rr.ttl for rr in record.rr]
        lifetime = max(min(min(ttls), max_ttl), min_ttl)
    ttls = []
    patched = bytearray(response)
    patched[2] &= ~(wire.AA >> 8) & 0xFF   # we are no authority for what we forward (RFC 1035 §4.1.1)
    for offset in layout.ttl_offsets:
        ttl = struct.unpack_from(">I", response, offset)[0]
        ttl = max(min(ttl, lifetime if negative or not lifetime else max_ttl), min_ttl)
        struct.pack_into(">I", patched, offset, ttl)
        ttls.append(ttl)
    cnames = tuple(str(rr.rdata.label).rstrip(".").lower() for rr in record.rr if rr.rtype == QTYPE.CNAME)
    entry = CachedAnswer(bytes(patched), tuple(layout.ttl_offsets), tuple(ttls), now, lifetime, stale_s,
                         layout.qend, do, cnames)
    entry.dropped = tuple(dropped)
    cacheable = rcode in (wire.NOERROR, wire.NXDOMAIN) and lifetime > 0 and not record.header.tc
    return entry, cacheable
