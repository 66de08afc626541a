"""Downloading block lists safely, keeping the last good copy.

A family's filter must never get weaker because a list server had a bad day: a download is
written beside the kept copy and only renamed over it once the whole body arrived and passed
the checks (complete, not empty, not a web page, under the size cap). Anything else leaves the
kept copy untouched and returns a `FetchResult` whose `message()` says what happened in one line.

Files in `store_dir` for a list id `ut1-adult`:
  ut1-adult.txt        the last good copy (what gets compiled)
  ut1-adult.meta.json  its URL, ETag, Last-Modified, size and download time (for 304s)
  ut1-adult.lock       held while a download runs, so the daemon and the CLI never interleave
  .ut1-adult.*.part    work in progress (.txt.part, .meta.json.part); a power cut's leftover
                       is overwritten by the next run
"""
from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import socket
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import BinaryIO, Literal, TextIO
from urllib.parse import urljoin, urlsplit

from filterd.files import fsync_directory, write_atomically
from filterd.lists.domains import LIST_ID

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024
PROGRESS_INTERVAL_S = 0.1  # progress callbacks at most ~10 times a second
_MB = 2**20
_REDIRECTS = {301, 302, 303, 307, 308}

Progress = Callable[[int, int | None], None]
Status = Literal["updated", "unchanged", "failed"]


def _user_agent() -> str:
    try:
        version = metadata.version("filterd")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"filterd/{version} (home parental-control DNS filter; block list download)"


USER_AGENT = _user_agent()


@dataclass(frozen=True)
class FetchResult:
    """What one download did; `path` is the file to compile (new or kept), None if there is none."""

    list_id: str
    status: Status
    path: Path | None
    error: str | None = None
    size: int = 0
    fetched_at: datetime | None = None
    http_status: int | None = None

    def message(self) -> str:
        """One line for a parent or an engineer, e.g. in `filterd lists update` or the web UI."""
        if self.status == "updated":
            return f"{self.list_id}: updated ({_format_size(self.size)})"
        if self.status == "unchanged":
            return f"{self.list_id}: unchanged ({self.http_status or 304})"
        if self.path is not None and self.fetched_at is not None:
            day = self.fetched_at.astimezone().strftime("%Y-%m-%d")
            kept = f"kept the copy from {day} ({_format_size(self.size)})"
        else:
            kept = "no copy downloaded yet, so this list blocks nothing for now"
        return f"{self.list_id}: {self.error} — {kept}"


def check_list_id(list_id: str) -> str:
    """Return list_id if it is safe as a file name in store_dir; raise ValueError otherwise.

    Config validation can call this too, so a bad id is refused with its YAML path early.
    """
    if not isinstance(list_id, str) or not LIST_ID.fullmatch(list_id):
        raise ValueError(
            f"invalid list id {list_id!r}: use 1-64 lower-case letters, digits, '-', '_' or '.' (not first)"
        )
    return list_id


def fetch_list(
    list_id: str,
    url: str,
    store_dir: Path,
    *,
    timeout_s: float = 30,
    deadline_s: float = 600,
    max_bytes: int = 200 * _MB,
    progress: Progress | None = None,
    check_url: Callable[[str], Sequence[str] | None] | None = None,
    progress_interval_s: float | None = None,
) -> FetchResult:
    """Download url into `<store_dir>/<list_id>.txt` unless it is unchanged; never raises on
    network or server trouble (only on a bad list_id, which is a programming/config error).

    progress(bytes received, Content-Length or None) is called at most every
    progress_interval_s (default PROGRESS_INTERVAL_S; 0: after every chunk, for a caller that
    keeps the latest figures and shows them on its own clock, as lists.UpdateStatus does),
    plus at the start and the end.
    timeout_s bounds connecting and each read; deadline_s bounds the whole download including
    redirects, so a server trickling a byte now and then cannot hold an update forever.
    check_url(url) may raise to refuse a URL (e.g. an SSRF guard); it sees every redirect target.
    When it returns addresses, the connection goes to those (and only those) instead of
    resolving the host again, so a DNS answer changed after the check cannot be followed
    (urlcheck.UrlGuard does this).
    """
    check_list_id(list_id)
    store = Path(store_dir)
    try:
        store.mkdir(parents=True, exist_ok=True)
        with _exclusive(store / f"{list_id}.lock"):
            return _fetch_locked(
                list_id, url, store, timeout_s=timeout_s, deadline_s=deadline_s,
                max_bytes=max_bytes, progress=progress, check_url=check_url,
                progress_interval_s=progress_interval_s,
            )
    except _Failure as failure:
        error, http_status = failure.args
    except OSError as exc:  # store_dir not writable, disk full, ...
        error, http_status = f"cannot save into {store}: {exc.strerror or exc}", None
    kept = _read_kept(store, list_id)
    return FetchResult(
        list_id, "failed", kept.path if kept else None, " ".join(str(error).split()),
        kept.size if kept else 0, kept.fetched_at if kept else None, http_status,
    )


# ---------------------------------------------------------------- one download


class _Failure(Exception):
    """A failed download: args are (one-line error, HTTP status or None)."""

    def __init__(self, error: str, http_status: int | None = None):
        super().__init__(error, http_status)


@dataclass(frozen=True)
class _Kept:
    path: Path
    size: int
    fetched_at: datetime
    url: str | None
    etag: str | None
    last_modified: str | None


def _fetch_locked(
    list_id: str, url: str, store: Path, *, timeout_s: float, deadline_s: float,
    max_bytes: int, progress: Progress | None, check_url: Callable[[str], Sequence[str] | None] | None,
    progress_interval_s: float | None = None,
) -> FetchResult:
    target = store / f"{list_id}.txt"
    part = store / f".{list_id}.txt.part"
    kept = _read_kept(store, list_id)
    headers = {"User-Agent": USER_AGENT, "Accept": "text/plain, */*",
               "Accept-Encoding": "gzip", "Connection": "close"}
    conditional = False
    if kept is not None and kept.url == url:  # validators belong to the URL they came from
        for name, value in (("If-None-Match", kept.etag), ("If-Modified-Since", kept.last_modified)):
            if value:
                headers[name] = value
                conditional = True
    deadline = _Deadline(deadline_s)
    tls = ssl.create_default_context()
    current = url
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            _check_url_shape(current)
            pinned: Sequence[str] | None = None
            if check_url is not None:
                try:
                    pinned = check_url(current)
                except Exception as exc:  # the hook's own reason is the message
                    raise _Failure(f"refused {current}: {exc}") from None
            if deadline.over:
                raise _Failure(deadline.message(current))
            try:
                with _connect(current, tls, min(timeout_s, deadline.remaining()), pinned) as conn:
                    with deadline.watching(conn.sock):
                        conn.request("GET", _request_target(current), headers=headers)
                        response = conn.getresponse()
                        status = response.status
                        if status in _REDIRECTS:
                            location = response.getheader("Location")
                            if not location:
                                raise _Failure(f"HTTP {status} without a Location from {current}", status)
                            current = urljoin(current, location.strip())
                            continue
                        if status == 304 and conditional and kept is not None:
                            return FetchResult(list_id, "unchanged", kept.path, None, kept.size,
                                               kept.fetched_at, 304)
                        if status != 200:
                            raise _Failure(f"HTTP {status} from {current}", status)
                        with _open_part(part) as out:
                            size = _receive(response, out, url=current, max_bytes=max_bytes,
                                            progress=Throttled(progress, progress_interval_s),
                                            deadline=deadline)
            except (OSError, http.client.HTTPException) as exc:
                if deadline.over:
                    raise _Failure(deadline.message(current)) from None
                raise _Failure(_describe(exc, current, timeout_s)) from None
            if size == 0:
                raise _Failure(f"empty answer (0 bytes) from {current}", 200)
            if _looks_like_web_page(part):
                raise _Failure(f"got a web page instead of a list from {current}", 200)
            fetched_at = datetime.now(timezone.utc)
            os.replace(part, target)
            fsync_directory(store)  # the list is on disk before the sidecar that describes it
            _save_meta(store / f"{list_id}.meta.json", {
                "url": url, "final_url": current, "etag": response.getheader("ETag"),
                "last_modified": response.getheader("Last-Modified"),
                "fetched_at": fetched_at.isoformat(), "size": size,
            })
            return FetchResult(list_id, "updated", target, None, size, fetched_at, 200)
        raise _Failure(f"more than {MAX_REDIRECTS} redirects, the last to {current}")
    finally:
        deadline.cancel()
        part.unlink(missing_ok=True)


def _receive(
    response: http.client.HTTPResponse, out: _PartFile, *, url: str, max_bytes: int,
    progress: Throttled, deadline: _Deadline,
) -> int:
    """Copy the body into out (gunzipped if need be) with every cap applied; return bytes written."""
    total = response.length  # Content-Length on the wire; None when unknown or chunked
    too_big = f"the list at {url} is larger than the {_format_size(max_bytes)} limit"
    if total is not None and total > max_bytes:
        raise _Failure(too_big, 200)
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise _Failure(f"unsupported Content-Encoding {encoding!r} from {url}", 200)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding != "identity" else None
    report = progress
    report(0, total, force=True)
    received = written = 0
    while chunk := response.read1(CHUNK_BYTES):
        received += len(chunk)
        if received > max_bytes:
            raise _Failure(too_big, 200)
        pending = chunk
        while pending:  # gunzip at most the room left, so a zip bomb stops at the cap
            room = max_bytes - written
            try:
                data = inflater.decompress(pending, room + 1) if inflater else pending
            except zlib.error as exc:
                raise _Failure(f"damaged gzip data from {url}: {exc}", 200) from None
            if len(data) > room:
                raise _Failure(too_big, 200)
            out.write(data)
            written += len(data)
            pending = inflater.unconsumed_tail if inflater else b""
        report(received, total)
    if deadline.over:
        raise _Failure(deadline.message(url))
    if total is not None and received < total:
        raise _Failure(f"download from {url} was cut off after {_format_size(received)} "
                       f"of {_format_size(total)}", 200)
    if inflater is not None and not inflater.eof:
        raise _Failure(f"download from {url} was cut off (incomplete gzip data)", 200)
    report(received, total, force=True)
    return written


class _Deadline:
    """The overall time limit of one fetch.

    Per-read timeouts cannot stop a server that sends a byte every few seconds forever (in the
    body or in the headers), so when time is up a timer shuts the watched socket down: any read
    blocked on it returns at once, and `expired` tells the reader why.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def over(self) -> bool:
        """Time is up (the timer may not have run yet when a short last read timed out)."""
        return self.expired or time.monotonic() >= self._ends

    def remaining(self) -> float:
        return max(self._ends - time.monotonic(), 0.001)

    def message(self, url: str) -> str:
        return f"download from {url} took longer than {self.seconds:g} s, stopped"

    @contextmanager
    def watching(self, sock: socket.socket | None) -> Iterator[None]:
        with self._lock:  # the lock keeps shutdown() off a socket being closed meanwhile
            self._sock = sock
            if self.expired and sock is not None:
                _shut_down(sock)
        try:
            yield
        finally:
            with self._lock:
                self._sock = None

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shut_down(self._sock)


def _shut_down(sock: socket.socket) -> None:
    try:  # the plain socket's shutdown: SSLSocket.shutdown would also drop its TLS state
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Throttled:
    """Forwards progress at most every interval_s, plus the first and last call."""

    def __init__(self, progress: Progress | None, interval_s: float | None = None):
        self._progress = progress
        self._interval_s = PROGRESS_INTERVAL_S if interval_s is None else interval_s
        self._last = float("-inf")

    def __call__(self, done: int, total: int | None, *, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if force or now - self._last >= self._interval_s:
            self._last = now
            self._progress(done, total)


# ---------------------------------------------------------------- URLs and connections


def _check_url_shape(url: str) -> None:
    """Only plain http(s) URLs to a host: no file://, ftp://, no credentials that would leak in logs."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _Failure(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme}://" if scheme else "a URL without a scheme"
        raise _Failure(f"only http:// and https:// URLs can be downloaded, not {shown} ({url})")
    if not parts.hostname:
        raise _Failure(f"no host name in the URL {url}")
    if parts.username is not None or parts.password is not None:
        raise _Failure(f"user names and passwords in list URLs are not supported ({parts.hostname})")


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _open_pinned(addresses: Sequence[str], port: int, timeout_s: float | None) -> socket.socket:
    """A TCP connection to the first of `addresses` that answers (no name resolution here)."""
    error: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout_s)
            sock.connect((address, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"no address to connect to on port {port}")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to checked addresses; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, addresses: Sequence[str], **kwargs: object):
        super().__init__(host, port, **kwargs)  # type: ignore[arg-type]
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _open_pinned(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to checked addresses; the certificate is still verified for the URL's host."""

    def __init__(self, host: str, port: int, addresses: Sequence[str], *, context: ssl.SSLContext,
                 **kwargs: object):
        super().__init__(host, port, context=context, **kwargs)  # type: ignore[arg-type]
        self._addresses = addresses
        self._tls = context

    def connect(self) -> None:
        sock = _open_pinned(self._addresses, self.port, self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@contextmanager
def _connect(url: str, tls: ssl.SSLContext, timeout_s: float,
             pinned: Sequence[str] | None = None) -> Iterator[http.client.HTTPConnection]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    if pinned:
        conn = (_PinnedHTTPSConnection(host, port, pinned, timeout=timeout_s, context=tls) if https
                else _PinnedHTTPConnection(host, port, pinned, timeout=timeout_s))
    elif https:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=tls)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.connect()
        yield conn
    finally:
        conn.close()


def _describe(exc: BaseException, url: str, timeout_s: float) -> str:
    """A network exception as one line a parent can act on."""
    host = urlsplit(url).hostname
    if isinstance(exc, TimeoutError):
        return f"no answer from {url} within {timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return f"cannot find the server {host} (DNS: {exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"{host} refused the connection ({url})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        clock = " (is this device's clock right?)" if exc.verify_code in (9, 10) else ""
        return f"the TLS certificate of {host} was not accepted: {exc.verify_message}{clock}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return f"{url} closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return f"download from {url} was cut off"
    if isinstance(exc, http.client.HTTPException):   # its text would quote what the server sent
        return f"bad HTTP answer from {url} ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"network error with {url}: {exc.strerror}"
    return f"network error with {url}: {exc}"


# ---------------------------------------------------------------- files


class _PartFile:
    """The download in progress; a local write error becomes a _Failure so that it is not
    mistaken for a network one."""

    def __init__(self, out: BinaryIO, path: Path):
        self._out = out
        self._path = path

    def write(self, data: bytes) -> None:
        try:
            self._out.write(data)
        except OSError as exc:
            raise _Failure(f"cannot save the download as {self._path}: {exc.strerror or exc}") from None


@contextmanager
def _open_part(path: Path) -> Iterator[_PartFile]:
    """Open the work file; on a clean exit flush and fsync it, so the rename that follows
    can never put a half-written list in place."""
    try:
        out = open(path, "wb")
    except OSError as exc:
        raise _Failure(f"cannot save the download as {path}: {exc.strerror or exc}") from None
    with out:
        yield _PartFile(out, path)
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise _Failure(f"cannot save the download as {path}: {exc.strerror or exc}") from None


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One download per list at a time across processes (the daemon and `filterd lists update`)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _Failure("another download of this list is still running") from None
        yield
    finally:
        os.close(fd)


def _read_kept(store: Path, list_id: str) -> _Kept | None:
    """The last good copy and what its sidecar says about it (sidecar ignored if it describes
    another copy, e.g. after a power cut between the two renames)."""
    path = store / f"{list_id}.txt"
    try:
        stat = path.stat()
    except OSError:
        return None
    try:
        meta = json.loads((store / f"{list_id}.meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    if not isinstance(meta, dict) or meta.get("size") != stat.st_size:
        meta = {}

    def text(key: str) -> str | None:
        value = meta.get(key)
        return value if isinstance(value, str) and value else None

    fetched_at = None
    if (stamp := text("fetched_at")) is not None:
        try:
            fetched_at = datetime.fromisoformat(stamp)
        except ValueError:
            pass
    if fetched_at is None or fetched_at.tzinfo is None:
        fetched_at = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
    return _Kept(path, stat.st_size, fetched_at, text("url"), text("etag"), text("last_modified"))


def _save_meta(path: Path, meta: dict[str, object]) -> None:
    """Write the sidecar atomically (files.write_atomically). A failure only costs a full
    download next time, so it is logged rather than turning a good update into a failed one."""
    try:
        write_atomically(path, json.dumps(meta, indent=1).encode("utf-8"))
    except OSError as exc:
        log.warning("cannot write %s: %s (the next update downloads the list in full)", path, exc)


def _looks_like_web_page(path: Path) -> bool:
    """A 200 carrying an HTML page (a rate-limit or login page) would compile to an empty list."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _format_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < _MB:
        return f"{size / 1024:.1f} kB"
    return f"{size / _MB:.1f} MB"


# ---------------------------------------------------------------- terminal progress


class ProgressBar:
    """Download progress for `filterd lists update`: a redrawn bar on a terminal, and in logs
    (not a TTY) only a start and an end line, with no control characters.

    Use: `bar = ProgressBar(list_id); result = fetch_list(..., progress=bar); bar.finish(result.message())`
    """

    _SPINNER = "|/-\\"

    def __init__(self, label: str, stream: TextIO | None = None, *, width: int = 20):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        isatty = getattr(self.stream, "isatty", None)
        self._tty = bool(isatty and isatty())
        self._started = False
        self._drawn = 0  # length of the line on screen, to blank what a shorter one leaves
        self._spins = 0

    def __call__(self, done: int, total: int | None) -> None:
        if self._tty:
            self._draw(self._bar(done, total))
        elif not self._started:
            size = f" ({_format_size(total)})" if total else ""
            self.stream.write(f"{self.label}  downloading{size}\n")
            self.stream.flush()
        self._started = True

    def finish(self, message: str) -> None:
        """Replace the bar (if any) with the final one-line message."""
        if self._tty and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self._drawn = 0
        self.stream.write(message + "\n")
        self.stream.flush()

    def _bar(self, done: int, total: int | None) -> str:
        if total:
            filled = min(self.width, done * self.width // total)
            bar = "#" * filled + "." * (self.width - filled)
            return f"{self.label}  [{bar}]  {done / _MB:.1f}/{total / _MB:.1f} MB"
        self._spins += 1
        return f"{self.label}  [{self._SPINNER[self._spins % 4]}]  {_format_size(done)}"

    def _draw(self, line: str) -> None:
        self.stream.write("\r" + line + " " * max(self._drawn - len(line), 0))
        self.stream.flush()
        self._drawn = len(line)
