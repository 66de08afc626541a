"""Outgoing queries: plain UDP/TCP, DNS over TLS (RFC 7858) and DNS over HTTPS (RFC 8484).

`UpstreamPool.exchange` tries the configured upstreams in order, skipping those that failed
recently (health with back-off), and fails over on timeout, connection errors, SERVFAIL and
REFUSED. Every UDP query goes out from a fresh socket (a random source port chosen by the
kernel) with a random ID, and an answer is accepted only when ID and question match (RFC 5452).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import ssl
import struct
import time

from filterd.dns import wire
from filterd.rules import clock
from filterd.rules.config import UpstreamSpec

log = logging.getLogger("filterd.upstream")
_random = random.SystemRandom()
ENCRYPTED = ("tls", "https")
CERT_NOT_YET_VALID = 9        # OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID
BRIDGE_RECHECK_S = 60.0       # a certificate "not yet valid" on a believable clock: try it again after


class UpstreamError(Exception):
    """Every upstream failed for this query."""


def _matches(query: bytes, answer: bytes, check_id: bool = True) -> bool:
    """An answer belongs to a query when ID (unless DoH) and question match, case aside."""
    if len(answer) < 12 or not answer[2] & 0x80:
        return False
    if check_id and answer[:2] != query[:2]:
        return False
    qend = wire.skip_name(query, 12) + 4
    return answer[12:qend].lower() == query[12:qend].lower()


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self, query: bytes, done: asyncio.Future):
        self.query = query
        self.done = done

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            ok = _matches(self.query, data)
        except (IndexError, wire.WireError):
            ok = False
        if ok and not self.done.done():  # anything else is ignored: spoofing attempts, strays
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError("socket closed"))


class Upstream:
    """One configured resolver and its health."""

    def __init__(self, spec: UpstreamSpec, tls_ca_file: str | None = None,
                 bootstrap: tuple[str, ...] = ()):
        self.spec = spec
        self.name = spec.url
        self.failures = 0
        self.down_until = 0.0
        self.tls_ca_file = tls_ca_file
        self.bootstrap = bootstrap
        self._address: str | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._pool: list[_StreamConnection] = []
        self._lock = asyncio.Lock()

    # ------------------------------------------------ health

    def succeeded(self) -> None:
        self.failures = 0
        self.down_until = 0.0

    def failed(self, now: float) -> None:
        self.failures += 1
        self.down_until = now + min(0.5 * 2 ** self.failures, 60.0)

    # ------------------------------------------------ exchange

    async def exchange(self, query: bytes, timeout: float) -> bytes:
        scheme = self.spec.scheme
        if scheme == "udp":
            answer = await self._udp(query, timeout)
            if answer[2] & 0x02:  # truncated: ask again over TCP (RFC 7766)
                answer = await self._stream(query, timeout, tls=False)
            return answer
        if scheme == "tcp":
            return await self._stream(query, timeout, tls=False)
        if scheme == "tls":
            return await self._stream(query, timeout, tls=True)
        return await self._https(query, timeout)

    async def _udp(self, query: bytes, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpExchange(query, done), remote_addr=(self.spec.host, self.spec.port))
        try:
            transport.sendto(query)
            return await asyncio.wait_for(done, timeout)
        finally:
            transport.close()

    async def address(self) -> str:
        """The upstream's IP: literal, through the bootstrap resolvers, or the system's resolver."""
        if self._address:
            return self._address
        host = self.spec.host
        try:
            ipaddress.ip_address(host)
            self._address = host
        except ValueError:
            if self.bootstrap:
                self._address = await _bootstrap_lookup(host, self.bootstrap)
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(host, self.spec.port,
                                                                     type=1)  # SOCK_STREAM
                self._address = infos[0][4][0]
        return self._address

    def tls_context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            context = ssl.create_default_context(cafile=self.tls_ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.spec.scheme == "https":
                context.set_alpn_protocols(["http/1.1"])
            self._tls_context = context
        return self._tls_context

    async def _connection(self, tls: bool, timeout: float) -> "_StreamConnection":
        async with self._lock:
            for conn in self._pool:
                if conn.usable() and (self.spec.scheme != "https" or not conn.busy):
                    return conn
            self._pool = [c for c in self._pool if c.usable()]
            address = await self.address()
            server_hostname = self.spec.host if tls else None
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                address, self.spec.port, ssl=self.tls_context() if tls else None,
                server_hostname=server_hostname), timeout)
            conn = _StreamConnection(reader, writer)
            if len(self._pool) < 8:
                self._pool.append(conn)
            else:
                conn.temporary = True  # a burst beyond the kept ones: closed after its answer
            return conn

    async def _stream(self, query: bytes, timeout: float, tls: bool) -> bytes:
        """TCP/TLS: length-prefixed messages on a kept connection, answers matched by ID."""
        deadline = time.monotonic() + timeout
        for attempt in range(2):  # a kept connection may have been closed by the server meanwhile
            conn = await self._connection(tls, timeout)
            try:
                return await conn.ask(query, max(deadline - time.monotonic(), 0.01))
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                conn.close()
                if attempt or time.monotonic() >= deadline:
                    raise
        raise ConnectionError("unreachable")

    async def _https(self, query: bytes, timeout: float) -> bytes:
        """DoH over HTTP/1.1 with kept-alive connections, one request at a time on each."""
        deadline = time.monotonic() + timeout
        doh_query = b"\0\0" + query[2:]  # ID 0 (RFC 8484 §4.1), restored below
        host = self.spec.host if self.spec.port == 443 else f"{self.spec.host}:{self.spec.port}"
        if ":" in self.spec.host:
            host = f"[{self.spec.host}]" + ("" if self.spec.port == 443 else f":{self.spec.port}")
        request = (f"POST {self.spec.path} HTTP/1.1\r\nHost: {host}\r\n"
                   "Content-Type: application/dns-message\r\nAccept: application/dns-message\r\n"
                   f"Content-Length: {len(doh_query)}\r\nUser-Agent: filterd\r\n\r\n").encode() + doh_query
        for attempt in range(2):
            conn = await self._connection(True, timeout)
            conn.busy = True
            try:
                answer = await asyncio.wait_for(conn.http_post(request), max(deadline - time.monotonic(), 0.01))
                conn.busy = False
                if conn.temporary:
                    conn.close()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
                conn.close()
                if attempt or time.monotonic() >= deadline:
                    raise
                continue
            except BaseException:
                conn.close()
                raise
            if not _matches(doh_query, answer, check_id=False):
                raise ConnectionError("DoH answer does not match the question")
            return query[:2] + answer[2:]
        raise ConnectionError("unreachable")

    def close(self) -> None:
        for conn in self._pool:
            conn.close()
        self._pool.clear()


class _StreamConnection:
    """One kept TCP/TLS connection to an upstream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.waiting: dict[bytes, asyncio.Future] = {}
        self.reader_task: asyncio.Task | None = None
        self.closed = False
        self.busy = False
        self.temporary = False

    def usable(self) -> bool:
        return not self.closed and not self.writer.is_closing()

    async def ask(self, query: bytes, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        msg_id = query[:2]
        while msg_id in self.waiting:  # the ID is ours to choose on this connection
            query = struct.pack(">H", _random.getrandbits(16)) + query[2:]
            msg_id = query[:2]
        future = loop.create_future()
        self.waiting[msg_id] = future
        try:
            self.writer.write(struct.pack(">H", len(query)) + query)
            if self.reader_task is None:
                self.reader_task = asyncio.ensure_future(self._read_loop())
            answer = await asyncio.wait_for(future, timeout)
        finally:
            self.waiting.pop(msg_id, None)
        if not _matches(query, answer):
            raise ConnectionError("answer does not match the question")
        return answer

    async def _read_loop(self) -> None:
        try:
            while True:
                size = struct.unpack(">H", await self.reader.readexactly(2))[0]
                message = await self.reader.readexactly(size)
                future = self.waiting.get(message[:2])
                if future is not None and not future.done():
                    future.set_result(message)
        except asyncio.CancelledError:   # closed by us: whoever waits asks again elsewhere
            self._fail_waiting("connection closed")
            raise
        except Exception as exc:  # EOF, reset, TLS error: fail whoever waits, reconnect next time
            self.close()
            self._fail_waiting(f"connection lost: {exc!r}")

    def _fail_waiting(self, why: str) -> None:
        """Wake every query waiting on this connection with a ConnectionError at once, so it is
        retried on a fresh connection instead of waiting out its timeout."""
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError(why))

    async def http_post(self, request: bytes) -> bytes:
        self.writer.write(request)
        status_line = await self.reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError(f"not an HTTP answer: {status_line[:40]!r}")
        headers: dict[bytes, bytes] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await self.reader.readline()
                    break
                body += await self.reader.readexactly(size)
                await self.reader.readline()
                if len(body) > 65535:
                    raise ValueError("DoH answer too large")
        else:
            length = int(headers.get(b"content-length", b"-1"))
            if not 0 <= length <= 65535:
                raise ValueError("DoH answer without a usable Content-Length")
            body = await self.reader.readexactly(length)
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        if parts[1] != b"200":
            raise ConnectionError(f"DoH server answered HTTP {parts[1].decode(errors='replace')}")
        return body

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
            if self.reader_task is not None and self.reader_task is not asyncio.current_task():
                self.reader_task.cancel()
            self._fail_waiting("connection closed")


async def _bootstrap_lookup(host: str, servers: tuple[str, ...]) -> str:
    """Resolve an encrypted upstream's host name through plain-DNS bootstrap servers."""
    from dnslib import QTYPE, DNSRecord

    question = wire.encode_name(host) + struct.pack(">HH", wire.TYPE_A, wire.CLASS_IN)
    for server in servers:
        spec = UpstreamSpec(f"udp://{server}", "udp", server, 53)
        try:
            answer = await Upstream(spec)._udp(wire.build_query(question, False, _random.getrandbits(16)), 2.0)
            for rr in DNSRecord.parse(answer).rr:
                if rr.rtype == QTYPE.A:
                    return str(rr.rdata)
        except (OSError, asyncio.TimeoutError, Exception) as exc:  # try the next one
            log.warning("bootstrap %s could not resolve %s: %s", server, host, exc)
    raise ConnectionError(f"cannot resolve {host} through bootstrap servers")


def _not_yet_valid(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError) and getattr(exc, "verify_code", None) == CERT_NOT_YET_VALID


class UpstreamPool:
    """The configured upstreams, tried in order with failover and health tracking.

    A Pi without a real-time clock boots at 1970 and NTP needs DNS to set it; meanwhile every
    certificate is "not yet valid" and DoT/DoH cannot be verified. While the clock reads before
    the release day (rules/clock), or after an encrypted upstream's certificate was refused as not
    yet valid (a clock behind, re-tried every BRIDGE_RECHECK_S), the plain upstreams of the list
    are asked instead — or, when there are none, the `bootstrap` servers — and the log says so
    once; once the clock is believed, the encrypted upstreams are asked again at once.
    """

    def __init__(self, specs: tuple[UpstreamSpec, ...], timeout_s: float,
                 tls_ca_file: str | None = None, bootstrap: tuple[str, ...] = (), wall=time.time):
        self.upstreams = [Upstream(spec, tls_ca_file, bootstrap) for spec in specs]
        self.timeout_s = timeout_s
        self.settings = (specs, timeout_s, tls_ca_file, bootstrap)
        self.wall = wall
        self.encrypted = any(spec.scheme in ENCRYPTED for spec in specs)
        plain = [u for u in self.upstreams if u.spec.scheme not in ENCRYPTED]
        self.plain = plain or [Upstream(UpstreamSpec(f"udp://{ip}", "udp", ip, 53)) for ip in bootstrap]
        self.bridging: str | None = None      # why the plain ones stand in, while they do
        self.bridge_until = 0.0               # monotonic: a refused certificate's bridge ends
        self.bridged_at = (0.0, 0.0)          # (wall, monotonic) when a certificate was refused

    def _clock_stepped(self, wall: float, now: float) -> bool:
        """The wall clock moved a minute further than the monotonic one since a certificate was
        refused: it was set (NTP), so the certificate is worth asking again at once."""
        return (wall - self.bridged_at[0]) - (now - self.bridged_at[1]) > BRIDGE_RECHECK_S

    def candidates(self, now: float) -> list[Upstream]:
        """The upstreams to ask, in order: `ordered`, or the plain stand-ins while bridging."""
        ordered = self.ordered(now)
        if not self.encrypted:
            return ordered
        wall = self.wall()
        if not clock.plausible(wall):
            why = f"the clock reads {time.strftime('%Y-%m-%d', time.gmtime(wall))}, not set yet"
        elif now < self.bridge_until and not self._clock_stepped(wall, now):
            why = self.bridging or "a certificate is not valid yet"
        else:
            if self.bridging:
                log.warning("the clock is set: asking the encrypted upstreams again")
                self.bridging = None
                for upstream in self.upstreams:
                    if upstream.spec.scheme in ENCRYPTED:
                        upstream.succeeded()
            return ordered
        if not self.plain:
            return ordered          # nothing plain to ask: the encrypted ones it is
        if self.bridging is None:
            log.warning("%s: encrypted upstreams cannot be verified, asking %s until it is set", why,
                        ", ".join(u.name for u in self.plain))
        self.bridging = why
        plain = set(map(id, self.plain))
        return [u for u in ordered if id(u) in plain] or list(self.plain)

    def serves(self, specs: tuple[UpstreamSpec, ...], timeout_s: float, tls_ca_file: str | None = None,
               bootstrap: tuple[str, ...] = ()) -> bool:
        """Whether this pool is what these settings would build (a reload can keep it, with its
        open connections and each upstream's health)."""
        return self.settings == (specs, timeout_s, tls_ca_file, bootstrap)

    def ordered(self, now: float) -> list[Upstream]:
        """Healthy upstreams in config order, then the resting ones, soonest back first."""
        healthy = [u for u in self.upstreams if u.down_until <= now]
        resting = sorted((u for u in self.upstreams if u.down_until > now), key=lambda u: u.down_until)
        return healthy + resting

    async def exchange(self, question: bytes, do: bool) -> bytes:
        """Ask for `question` (wire bytes of name, type, class); the first usable answer wins."""
        last_error = "no upstream configured"
        for upstream in self.candidates(time.monotonic()):
            query = wire.build_query(question, do, _random.getrandbits(16))
            try:
                answer = await upstream.exchange(query, self.timeout_s)
            except asyncio.TimeoutError:
                last_error = f"{upstream.name}: timed out"
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError,
                    IndexError, wire.WireError) as exc:
                last_error = f"{upstream.name}: {exc or type(exc).__name__}"
                if _not_yet_valid(exc) and self.plain:
                    # A clock behind the certificate (a Pi booted at its last saved time): bridge
                    # with the plain ones and look again later; this query goes on to them.
                    self.bridge_until = time.monotonic() + BRIDGE_RECHECK_S
                    self.bridged_at = (self.wall(), time.monotonic())
                    if self.bridging is None:
                        self.bridging = f"{upstream.name}'s certificate is not valid yet (is the clock behind?)"
                        log.warning("%s: asking %s meanwhile", self.bridging, ", ".join(u.name for u in self.plain))
            else:
                rcode = wire.rcode_of(answer)
                if rcode not in (wire.SERVFAIL, wire.REFUSED):
                    upstream.succeeded()
                    return answer
                last_error = f"{upstream.name}: answered {'SERVFAIL' if rcode == 2 else 'REFUSED'}"
            upstream.failed(time.monotonic())
            log.debug("upstream failed: %s", last_error)
        raise UpstreamError(last_error)

    def close(self) -> None:
        for upstream in self.upstreams:
            upstream.close()
