"""DNS over HTTPS (RFC 8484): GET and POST on `/dns-query` and `/dns-query/<client-id>`, over
HTTP/1.1 with keep-alive and pipelining (answers go back in the order asked, as HTTP/1.1 wants).

A small, strict HTTP/1.1 reader rather than a web framework: the request head is capped at
8 KiB, a body at one DNS message (65,535 bytes), no chunked bodies, no folded headers; a
malformed request gets its 4xx and, when its framing cannot be trusted, the connection closes.
Nothing a client sends can raise out of this module into the worker. The query itself goes to
the same `Resolver.answer` as UDP and TCP (access list, rate limit, policy, cache, log).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from filterd.dns.tls import client_id_from_path, client_id_from_server_name, server_name_of

log = logging.getLogger("filterd.doh")

MAX_HEAD = 8 * 1024
MAX_MESSAGE = 65535
MAX_WAITING = 128           # pipelined requests not yet answered, per connection
MAX_BUFFERED = 256 * 1024   # answers a client does not read
CONTENT_TYPE = "application/dns-message"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Content Too Large", 415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}


class HttpError(Exception):
    """A request answered with `status`; `close` when the connection's framing is lost."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status = status
        self.close = close


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]     # lower-case names
    body: bytes
    keep_alive: bool


# ---------------------------------------------------------------- pure: bytes → request → DNS message


def parse_request(buffer: bytes | bytearray) -> tuple[Request, int] | None:
    """The first complete request in `buffer` and the bytes it took, None until it is complete."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HttpError(431, "the request head is over 8 KiB", close=True)
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN(parts[0]) or not parts[1].startswith(b"/"):
        raise HttpError(400, "not an HTTP request line", close=True)
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(505, "only HTTP/1.1 is spoken here", close=True)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN(name):
            raise HttpError(400, "a malformed header line", close=True)
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in ("content-length", "host", "content-type"):
                raise HttpError(400, f"{key} given twice", close=True)
            text = headers[key] + ", " + text
        headers[key] = text
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked bodies are not taken: send Content-Length", close=True)
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or len(length_text) > 9:
        raise HttpError(400, "Content-Length is not a number", close=True)
    length = int(length_text)
    if length > MAX_MESSAGE:
        raise HttpError(413, "the body is larger than a DNS message can be", close=True)
    start = end + 4
    if len(buffer) < start + length:
        return None
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == b"HTTP/1.1" else "keep-alive" in connection
    request = Request(method.decode("ascii"), target.decode("latin-1"), headers,
                      bytes(buffer[start:start + length]), keep_alive)
    return request, start + length


def dns_message(request: Request) -> tuple[bytes, str | None]:
    """(the DNS query, the client ID from the path) of a DoH request; HttpError when it is none."""
    parts = urlsplit(request.target)
    is_doh, client_id = client_id_from_path(parts.path)
    if not is_doh:
        raise HttpError(404, "DNS queries go to /dns-query or /dns-query/<client-id>")
    if request.method == "GET":
        values = parse_qs(parts.query, keep_blank_values=True).get("dns")
        if not values or len(values) != 1 or not values[0]:
            raise HttpError(400, "a GET needs one ?dns= parameter")
        message = _base64url(values[0])
    elif request.method == "POST":
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != CONTENT_TYPE:
            raise HttpError(415, f"the body must be {CONTENT_TYPE}")
        message = request.body
    else:
        raise HttpError(405, "only GET and POST")
    if len(message) < 12:
        raise HttpError(400, "not a DNS message")
    return message, client_id


def _base64url(text: str) -> bytes:
    """RFC 8484 §4.1: base64url without padding (padding tolerated); anything else is a 400."""
    if len(text) > (MAX_MESSAGE * 4 + 2) // 3 + 2 or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise HttpError(400, "dns= is not base64url")
    text = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise HttpError(400, "dns= is not base64url") from None


def response(status: int, body: bytes = b"", content_type: str = CONTENT_TYPE, close: bool = False) -> bytes:
    """One HTTP/1.1 response, head and body."""
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"Content-Length: {len(body)}"]
    if body:
        head.append(f"Content-Type: {content_type}")
    if status == 200:
        head.append("Cache-Control: max-age=0")   # the DNS answer's TTLs speak for it
    elif status == 405:
        head.append("Allow: GET, POST")
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


# ---------------------------------------------------------------- the connection


class DohConnection(asyncio.Protocol):
    """One client's HTTPS connection; admitted against the same limits as DNS over TCP."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.server_id: str | None = None    # the client ID in the SNI, for a path without one
        self.idle_handle: asyncio.TimerHandle | None = None
        self.admitted = False
        self.waiting: deque = deque()        # [response bytes or None, close after it]
        self.closing = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        if not self.daemon.tcp_admit(self):
            transport.abort()
            self.transport = None
            return
        tls = self.daemon.tls
        self.server_id = client_id_from_server_name(server_name_of(transport), tls.names) if tls else None
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        timeout = self.daemon.resolver.config.dns.tcp.idle_timeout_s
        self.idle_handle = asyncio.get_running_loop().call_later(timeout, self._idle)

    def _idle(self) -> None:
        if not self.waiting and self.transport is not None:
            self.transport.close()
        else:
            self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.closing:
            return
        self.buffer += data
        self._arm_idle()
        while self.buffer and not self.closing:
            try:
                parsed = parse_request(self.buffer)
            except HttpError as exc:
                self._queue(response(exc.status, f"{exc}\n".encode(), "text/plain; charset=utf-8", True), True)
                return
            if parsed is None:
                return
            request, used = parsed
            del self.buffer[:used]
            if len(self.waiting) >= MAX_WAITING:
                self._queue(response(503, b"too many requests in flight\n", "text/plain; charset=utf-8", True),
                            True)
                return
            self._handle(request)

    def _handle(self, request: Request) -> None:
        close = not request.keep_alive
        try:
            message, client_id = dns_message(request)
        except HttpError as exc:
            self._queue(response(exc.status, f"{exc}\n".encode(), "text/plain; charset=utf-8", close), close)
            return
        try:
            reply = self.daemon.resolver.answer(message, self.ip, MAX_MESSAGE, client_id or self.server_id)
        except Exception:
            log.exception("error answering a DoH query from %s: %s", self.ip, message[:32].hex())
            reply = None
        if reply is None or reply.__class__ is bytes:
            self._queue(self._reply(reply, close), close)
            return
        slot = [None, close]
        self.waiting.append(slot)
        self.daemon.spawn(self._later(reply, slot))

    def _reply(self, reply: bytes | None, close: bool) -> bytes:
        if reply is None:
            return response(400, b"not a DNS query\n", "text/plain; charset=utf-8", close)
        return response(200, reply, CONTENT_TYPE, close)

    async def _later(self, pending, slot: list) -> None:
        reply = None
        try:
            reply = await pending
        except Exception:
            log.exception("error resolving a DoH query from %s", self.ip)
        slot[0] = self._reply(reply, slot[1]) if reply is not None else \
            response(503, b"no answer\n", "text/plain; charset=utf-8", slot[1])
        self._flush()

    def _queue(self, data: bytes, close: bool) -> None:
        self.waiting.append([data, close])
        self._flush()

    def _flush(self) -> None:
        """Send the answers that are ready, in the order their requests came."""
        transport = self.transport
        while self.waiting and self.waiting[0][0] is not None:
            data, close = self.waiting.popleft()
            if transport is None or transport.is_closing():
                continue
            transport.write(data)
            if close:
                self.closing = True
                self.waiting.clear()
                transport.close()
                return
            if transport.get_write_buffer_size() > MAX_BUFFERED:
                transport.abort()   # pipelines requests, never reads the answers
                return

    def eof_received(self) -> bool:
        """The client is done sending: answer what it asked, then close."""
        self.closing = True
        if not self.waiting:
            return False
        self.waiting.append([b"", True])
        return True

    def connection_lost(self, exc) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        self.daemon.tcp_release(self)
        self.transport = None
