"""A small, bounded HTTPS server for the block page: the web UI's own WSGI app over TLS.

waitress speaks no TLS, and the usual TLS-capable WSGI servers do the TLS handshake in their
accept loop, where one client that connects and stays silent holds up everyone else for the
whole timeout. Here the accept loop only accepts: every connection gets its own thread (at most
`max_connections`, and `max_per_client` per address), which does the handshake against a
deadline and then serves HTTP/1.1 requests with keep-alive until the client goes quiet.

The TLS peer's address is the WSGI REMOTE_ADDR (the block page identifies the device by it),
and the Host header is passed as sent; no proxy headers are trusted.
"""
from __future__ import annotations

import io
import itertools
import logging
import re
import select
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Callable, Iterable
from urllib.parse import unquote

log = logging.getLogger("filterd.webui.https")

MAX_REQUEST_LINE = 8192
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 100
MAX_BODY = 2 * 2**20
MAX_REQUESTS_PER_CONNECTION = 100
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")   # an HTTP method (RFC 9110 token)


class HttpsServer:
    """Serves `app` over TLS on each (address, port); `context()` gives the TLS context a new
    connection starts with (its SNI hook picks the certificate for the name asked for)."""

    def __init__(self, app: Callable, addresses: list[tuple[str, int]], context: Callable[[], ssl.SSLContext],
                 max_connections: int = 64, max_per_client: int = 8, handshake_timeout_s: float = 10.0,
                 idle_timeout_s: float = 15.0):
        self.app = app
        self.addresses = addresses
        self.context = context
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.handshake_timeout_s = handshake_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.bound: list[tuple[str, int]] = []
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._per_client: Counter[str] = Counter()
        self._open = 0

    # ------------------------------------------------ listening

    def start(self) -> list[tuple[str, int]]:
        """Bind every address and start accepting in background threads. An address that cannot
        be bound is logged and skipped (the web UI keeps running); returns those bound."""
        for host, port in self.addresses:
            try:
                listener = _listen(host, port)
            except OSError as exc:
                shown = f"[{host}]" if ":" in host else host
                log.error("HTTPS block page: cannot listen on %s:%d (%s); HTTPS to blocked sites will fail "
                          "as without it", shown, port, exc.strerror or exc)
                continue
            self._listeners.append(listener)
            self.bound.append(listener.getsockname()[:2])
            thread = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True,
                                      name=f"https-accept-{host}")
            thread.start()
            self._threads.append(thread)
        for host, port in self.bound:
            log.info("HTTPS block page on %s:%d", f"[{host}]" if ":" in host else host, port)
        return self.bound

    def stop(self) -> None:
        """Stop accepting (connections being served finish on their own timeouts)."""
        self._stopping.set()
        for listener in self._listeners:
            try:
                listener.shutdown(socket.SHUT_RDWR)    # wakes a blocked accept() on Linux
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
        for listener in self._listeners:
            listener.close()

    def open_connections(self) -> int:
        with self._lock:
            return self._open

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                connection, peer = listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.warning("HTTPS accept failed: %s", exc)   # e.g. out of file descriptors
                self._stopping.wait(0.1)
                continue
            client = peer[0]
            with self._lock:
                refused = self._open >= self.max_connections or self._per_client[client] >= self.max_per_client
                if not refused:
                    self._open += 1
                    self._per_client[client] += 1
            if refused:
                log.debug("HTTPS: too many connections (from %s); closed one", client)
                connection.close()
                continue
            worker = threading.Thread(target=self._serve, args=(connection, peer), daemon=True, name="https-conn")
            try:
                worker.start()
            except RuntimeError:          # cannot start a thread: give the slot back
                self._release(client)
                connection.close()

    def _release(self, client: str) -> None:
        with self._lock:
            self._open -= 1
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]

    # ------------------------------------------------ one connection (in its own thread)

    def _serve(self, connection: socket.socket, peer: tuple) -> None:
        tls = None
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.context().wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
            _handshake(tls, self.handshake_timeout_s)
            tls.settimeout(self.idle_timeout_s)
            _WsgiHandler(tls, peer, self)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("HTTPS connection from %s ended: %s", peer[0], exc)
        except Exception:
            log.exception("HTTPS connection from %s failed", peer[0])
        finally:
            try:
                (tls or connection).close()
            except OSError:
                pass
            self._release(peer[0])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind((host, port))
        listener.listen(128)
        listener.settimeout(0.5)     # the accept loop looks at the stop flag this often
    except OSError:
        listener.close()
        raise
    return listener


def _handshake(tls: ssl.SSLSocket, timeout_s: float) -> None:
    """The TLS handshake against one deadline for the whole of it (a client that trickles its
    hello byte by byte does not get a fresh timeout per byte)."""
    deadline = time.monotonic() + timeout_s
    tls.setblocking(False)
    poller = select.poll()
    poller.register(tls.fileno(), select.POLLIN)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            poller.modify(tls.fileno(), select.POLLIN)
        except ssl.SSLWantWriteError:
            poller.modify(tls.fileno(), select.POLLOUT)
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise TimeoutError("TLS handshake timed out")
    tls.setblocking(True)


# ---------------------------------------------------------------- HTTP/1.1 → WSGI


class _BodyReader(io.RawIOBase):
    """wsgi.input: exactly Content-Length bytes of the connection, no more; what the app leaves
    unread is drained so the next request on the connection starts where it should."""

    def __init__(self, stream, length: int):
        self.stream = stream
        self.left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            return 0
        data = self.stream.read(min(len(buffer), self.left))
        if not data:
            raise ConnectionError("the client closed the connection in the middle of the body")
        buffer[:len(data)] = data
        self.left -= len(data)
        return len(data)

    def drain(self) -> None:
        while self.left > 0:
            if not self.read(min(self.left, 65536)):
                break


class _WsgiHandler(BaseHTTPRequestHandler):
    """Reads HTTP/1.1 requests from the TLS connection and runs the WSGI app for each."""

    protocol_version = "HTTP/1.1"
    server: HttpsServer

    def setup(self) -> None:
        super().setup()
        self.requests_served = 0

    def handle_one_request(self) -> None:
        self.command, self.requestline, self.request_version = "", "", "HTTP/1.1"
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            header_block = self._read_header_block()
            if header_block is None:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                return
            connection_stream, self.rfile = self.rfile, io.BytesIO(header_block)
            try:
                parsed = self.parse_request()
            finally:
                self.rfile = connection_stream
            if not parsed:
                return
            if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
                self.close_connection = True     # HTTP/0.9: not spoken here
                return
            if not _TOKEN.fullmatch(self.command):
                self.send_error(HTTPStatus.BAD_REQUEST)
                return
            self.requests_served += 1
            if self.requests_served >= MAX_REQUESTS_PER_CONNECTION:
                self.close_connection = True
            self.run_app()
            self.wfile.flush()
        except (TimeoutError, ConnectionError, ssl.SSLError) as exc:
            log.debug("HTTPS request from %s: %s", self.client_address[0], exc)
            self.close_connection = True

    def _read_header_block(self) -> bytes | None:
        """The header lines up to the blank line, or None when there are too many or too long."""
        lines, size = [], 0
        while True:
            line = self.rfile.readline(MAX_HEADER_BYTES + 1)
            size += len(line)
            if size > MAX_HEADER_BYTES or len(lines) > MAX_HEADERS:
                return None
            lines.append(line)
            if line in (b"\r\n", b"\n", b""):
                return b"".join(lines)

    # ------------------------------------------------ one request

    def run_app(self) -> None:
        if "Transfer-Encoding" in self.headers:
            # Browsers send forms with Content-Length; chunked bodies are refused rather than
            # risking two readings of where a request ends.
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, "Chunked request bodies are not accepted")
            return
        length_header = self.headers.get("Content-Length", "0").strip() or "0"
        if not length_header.isdigit() or len(self.headers.get_all("Content-Length", [])) > 1:
            self.send_error(HTTPStatus.BAD_REQUEST)
            return
        length = int(length_header)
        if length > MAX_BODY:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        body = _BodyReader(self.rfile, length)
        environ = self.environ(io.BufferedReader(body), length)
        if environ is None:
            self.send_error(HTTPStatus.BAD_REQUEST)
            return
        response = _Response(self)
        result = None
        try:
            result = self.server.app(environ, response.start_response)
            response.send(result)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            raise
        except Exception:
            log.exception("HTTPS: the web UI failed on %s %s", self.command, self.path[:200])
            if response.headers_sent:
                self.close_connection = True
                return
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        finally:
            if hasattr(result, "close"):
                result.close()
        body.drain()
        if response.close_after:
            self.close_connection = True

    def environ(self, stream, length: int) -> dict | None:
        target = self.path
        if not target.startswith("/"):
            return None          # absolute-form and "*" targets: this is not a proxy
        path, _, query = target.partition("?")
        server_host, server_port = self.connection.getsockname()[:2]
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, encoding="latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": server_host,
            "SERVER_PORT": str(server_port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "REQUEST_URI": target,
            "HTTPS": "on",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https",
            "wsgi.input": stream,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if "Content-Type" in self.headers:
            environ["CONTENT_TYPE"] = self.headers["Content-Type"]
        if length or "Content-Length" in self.headers:
            environ["CONTENT_LENGTH"] = str(length)
        for name in set(self.headers.keys()):
            if "_" in name:       # X-Forwarded_For must not pass as X-Forwarded-For
                continue
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue
            environ[key] = ",".join(self.headers.get_all(name))
        return environ

    # ------------------------------------------------ low-level output

    def send_response(self, code, message=None) -> None:
        """Status and Date, but no Server banner."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def send_error(self, code, message=None, explain=None) -> None:
        """A plain-text error that echoes nothing of the request."""
        status = HTTPStatus(code)
        if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            self.request_version = "HTTP/1.1"     # a status line even for HTTP/0.9 or /2 attempts
        log.debug("HTTPS %s from %s: %d", self.command, self.client_address[0], status.value)
        self.close_connection = True
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status.value, status.phrase)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


class _Response:
    """start_response and the writing of status, headers and body (Content-Length when the app
    gives one, else chunked; nothing after the headers for HEAD, 1xx, 204 and 304)."""

    def __init__(self, handler: _WsgiHandler):
        self.handler = handler
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.chunked = False
        self.close_after = False

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        for name, value in headers:
            if any(c in name + value for c in "\r\n\0"):
                raise ValueError("header with a line break")
        self.status, self.headers = status, list(headers)
        return self._write

    def _write(self, data: bytes) -> None:
        """The legacy write() callable of PEP 3333 (the length is not known: chunked)."""
        self._send_headers(None)
        self._send_body(data)

    def _has_length(self) -> bool:
        return any(name.lower() == "content-length" for name, _ in self.headers)

    def _no_body(self) -> bool:
        code = int(self.status.split(" ", 1)[0])
        return self.handler.command == "HEAD" or code < 200 or code in (204, 304)

    def send(self, result: Iterable[bytes]) -> None:
        chunks = iter(result)
        first = next((chunk for chunk in chunks if chunk), b"")
        if self.status is None:
            raise AssertionError("the app returned without calling start_response")
        if self.headers_sent or self._has_length():
            self._send_headers(None)
            rest: Iterable[bytes] = chunks
        else:
            # A body of one piece (the usual Flask response) gets an exact Content-Length;
            # a longer one is streamed chunked.
            second = next((chunk for chunk in chunks if chunk), None)
            if second is None:
                self._send_headers(len(first))
                rest = ()
            else:
                self._send_headers(None)
                rest = itertools.chain((second,), chunks)
        self._send_body(first)
        for chunk in rest:
            self._send_body(chunk)
        self._finish()

    def _send_headers(self, length: int | None) -> None:
        if self.headers_sent:
            return
        handler = self.handler
        code, _, reason = self.status.partition(" ")
        handler.send_response_only(int(code), reason)
        names = set()
        for name, value in self.headers:
            names.add(name.lower())
            handler.send_header(name, value)
        if "date" not in names:
            handler.send_header("Date", formatdate(usegmt=True))
        if "content-length" not in names and not self._no_body():
            if length is not None:
                handler.send_header("Content-Length", str(length))
            elif handler.request_version == "HTTP/1.1":
                self.chunked = True
                handler.send_header("Transfer-Encoding", "chunked")
            else:
                self.close_after = True
        if handler.close_connection or self.close_after:
            handler.send_header("Connection", "close")
            self.close_after = True
        handler.end_headers()
        self.headers_sent = True

    def _send_body(self, data: bytes) -> None:
        if not data or self._no_body():
            return
        if self.chunked:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.handler.wfile.write(data)

    def _finish(self) -> None:
        self._send_headers(0)
        if self.chunked and not self._no_body():
            self.handler.wfile.write(b"0\r\n\r\n")
