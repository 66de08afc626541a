"""filterd.lists.fetch against a real HTTP server on 127.0.0.1, scripted per test."""
from __future__ import annotations

import email.message
import fcntl
import gzip
import io
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from filterd.lists import fetch
from filterd.lists.fetch import FetchResult, ProgressBar, fetch_list

LIST = b"# a block list\nexample.com\nads.example.net\n"
MB = 2**20

Route = Callable[["_Handler"], None]


# ---------------------------------------------------------------- the stand-in list server


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        site = self.server.site
        site.requests.append((self.path, self.headers))
        route = site.routes.get(self.path)
        try:
            if route is None:
                reply(self, 404, b"not here\n")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as several tests intend

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread: nothing outlives a test
    site: Site


class Site:
    def __init__(self, port: int):
        self.port = port
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, email.message.Message]] = []
        self.release = threading.Event()  # set at teardown: frees handlers that hang on purpose
        self.hung_up = threading.Event()  # a trickling handler saw the client go away

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


@pytest.fixture
def site() -> Iterator[Site]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.site = Site(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server.site
    server.site.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def reply(h: BaseHTTPRequestHandler, status: int = 200, body: bytes = b"", *,
          headers: dict[str, str] | None = None, length: bool = True) -> None:
    h.send_response(status)
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    if length:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def serve(body: bytes = LIST, status: int = 200, **kwargs: object) -> Route:
    return lambda h: reply(h, status, body, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "lists"


def first_copy(site: Site, store: Path) -> FetchResult:
    """A good copy to keep, fetched from /list.txt."""
    site.routes["/list.txt"] = serve(LIST, headers={"ETag": '"v1"'})
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert result.status == "updated"
    return result


def assert_kept(result: FetchResult, first: FetchResult) -> None:
    assert result.status == "failed"
    assert result.path == first.path and result.path is not None
    assert result.path.read_bytes() == LIST
    assert result.fetched_at == first.fetched_at
    assert result.size == len(LIST)
    assert_no_leftovers(result.path.parent)


def assert_no_leftovers(store: Path) -> None:
    assert not [p.name for p in store.iterdir() if p.name.endswith(".part")]


# ---------------------------------------------------------------- the happy paths


def test_success_saves_the_list_and_names_filterd(site: Site, store: Path) -> None:
    result = first_copy(site, store)
    assert result.path == store / "ut1-adult.txt"
    assert result.path.read_bytes() == LIST
    assert (result.size, result.http_status, result.error) == (len(LIST), 200, None)
    assert result.fetched_at is not None and result.fetched_at.tzinfo is not None
    assert result.message() == f"ut1-adult: updated ({len(LIST)} B)"
    headers = site.requests[0][1]
    assert "filterd" in headers["User-Agent"]
    assert "gzip" in headers["Accept-Encoding"]
    assert "If-None-Match" not in headers
    assert_no_leftovers(store)


def test_second_fetch_sends_validators_and_304_keeps_the_file(site: Site, store: Path) -> None:
    stamp = "Wed, 18 Nov 2026 10:00:00 GMT"

    def conditional(h: _Handler) -> None:
        if h.headers.get("If-None-Match") == '"v1"':
            reply(h, 304, length=False, headers={"ETag": '"v1"'})
        else:
            reply(h, 200, LIST, headers={"ETag": '"v1"', "Last-Modified": stamp})

    site.routes["/list.txt"] = conditional
    first = fetch_list("ut1-adult", site.url("/list.txt"), store)
    second = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert first.status == "updated"
    assert second.status == "unchanged"
    assert second.message() == "ut1-adult: unchanged (304)"
    assert (second.path, second.fetched_at, second.size) == (first.path, first.fetched_at, len(LIST))
    assert second.path is not None and second.path.read_bytes() == LIST
    sent = site.requests[1][1]
    assert sent["If-None-Match"] == '"v1"'
    assert sent["If-Modified-Since"] == stamp


def test_validators_are_not_sent_to_a_new_url(site: Site, store: Path) -> None:
    first_copy(site, store)
    site.routes["/moved.txt"] = serve(b"other.example\n")
    result = fetch_list("ut1-adult", site.url("/moved.txt"), store)
    assert result.status == "updated"
    assert "If-None-Match" not in site.requests[1][1]


def test_gzip_body_is_decompressed(site: Site, store: Path) -> None:
    body = b"example.com\n" * 5000
    site.routes["/list.txt"] = serve(gzip.compress(body), headers={"Content-Encoding": "gzip"})
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert result.status == "updated", result.error
    assert result.path is not None and result.path.read_bytes() == body
    assert result.size == len(body)


def test_chunked_body_is_read_whole(site: Site, store: Path) -> None:
    def chunked(h: _Handler) -> None:
        h.protocol_version = "HTTP/1.1"
        reply(h, 200, headers={"Transfer-Encoding": "chunked", "Connection": "close"}, length=False)
        for piece in (LIST[:10], LIST[10:]):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        h.wfile.write(b"0\r\n\r\n")

    site.routes["/list.txt"] = chunked
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert result.status == "updated", result.error
    assert result.path is not None and result.path.read_bytes() == LIST


def test_redirect_to_a_second_path_is_followed(site: Site, store: Path) -> None:
    site.routes["/old"] = serve(b"", 302, headers={"Location": "/list.txt"})
    site.routes["/list.txt"] = serve(LIST)
    result = fetch_list("ut1-adult", site.url("/old"), store)
    assert result.status == "updated", result.error
    assert result.path is not None and result.path.read_bytes() == LIST
    assert site.paths() == ["/old", "/list.txt"]


def test_progress_reports_increasing_byte_counts(site: Site, store: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "PROGRESS_INTERVAL_S", 0)  # every chunk, not ~10 a second
    body = b"x" * (4 * fetch.CHUNK_BYTES + 17)
    site.routes["/list.txt"] = serve(body)
    calls: list[tuple[int, int | None]] = []
    result = fetch_list("ut1-adult", site.url("/list.txt"), store,
                        progress=lambda done, total: calls.append((done, total)))
    assert result.status == "updated", result.error
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) >= 3
    assert calls[0] == (0, len(body)) and calls[-1] == (len(body), len(body))
    assert {total for _, total in calls} == {len(body)}


# ---------------------------------------------------------------- server trouble keeps the last good copy


def test_404_keeps_the_copy_and_says_so(site: Site, store: Path) -> None:
    first = first_copy(site, store)
    site.routes["/list.txt"] = serve(b"gone\n", 404)
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert_kept(result, first)
    assert result.http_status == 404
    assert first.fetched_at is not None
    day = first.fetched_at.astimezone().strftime("%Y-%m-%d")
    assert result.message() == (f"ut1-adult: HTTP 404 from {site.url('/list.txt')}"
                                f" — kept the copy from {day} ({len(LIST)} B)")


def test_500_keeps_the_copy(site: Site, store: Path) -> None:
    first = first_copy(site, store)
    site.routes["/list.txt"] = serve(b"oops\n", 500)
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert_kept(result, first)
    assert result.http_status == 500 and "HTTP 500" in (result.error or "")


def test_failure_without_any_copy_says_the_list_is_not_in_use(site: Site, store: Path) -> None:
    site.routes["/list.txt"] = serve(b"gone\n", 404)
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert (result.status, result.path, result.size, result.fetched_at) == ("failed", None, 0, None)
    assert "no copy downloaded yet" in result.message()


def test_server_that_never_answers_times_out(site: Site, store: Path) -> None:
    first = first_copy(site, store)
    site.routes["/list.txt"] = lambda h: site.release.wait(10)  # bounded: a regression fails, not hangs
    result = fetch_list("ut1-adult", site.url("/list.txt"), store, timeout_s=0.5)
    assert_kept(result, first)
    assert result.error == f"no answer from {site.url('/list.txt')} within 0.5 s"


def _trickle(h: _Handler, first: bytes, then: bytes, times: int) -> None:
    """Send first, then `then` every 50 ms, `times` times (bounded, so a regression fails
    rather than hangs); note when the client hangs up before the end."""
    try:
        h.wfile.write(first)
        for _ in range(times):
            if h.server.site.release.wait(0.05):
                return
            h.wfile.write(then)
    except (BrokenPipeError, ConnectionResetError):
        h.server.site.hung_up.set()


def _trickle_body(h: _Handler) -> None:
    _trickle(h, b"HTTP/1.0 200 OK\r\n\r\n", b"x", 200)


def _trickle_headers(h: _Handler) -> None:
    # under http.client's 100-header limit, so only the deadline can stop it
    _trickle(h, b"HTTP/1.0 200 OK\r\n", b"X-Slow: 1\r\n", 90)


@pytest.mark.parametrize("route", [_trickle_body, _trickle_headers], ids=["body", "headers"])
def test_trickling_server_is_stopped_by_the_overall_deadline(site: Site, store: Path,
                                                             route: Route) -> None:
    first = first_copy(site, store)
    site.routes["/list.txt"] = route
    result = fetch_list("ut1-adult", site.url("/list.txt"), store, timeout_s=0.5, deadline_s=1)
    assert_kept(result, first)
    assert "took longer than 1 s" in (result.error or "")
    assert site.hung_up.wait(5), "the client should hang up at the deadline, not when the server stops"


def test_truncated_body_fails_and_keeps_the_copy(site: Site, store: Path) -> None:
    first = first_copy(site, store)
    site.routes["/list.txt"] = lambda h: (reply(h, 200, headers={"Content-Length": "1000"},
                                                length=False), h.wfile.write(b"half.example\n"))
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert_kept(result, first)
    assert "cut off after 13 B of 1000 B" in (result.error or "")
    assert sorted(p.name for p in store.iterdir()) == [
        "ut1-adult.lock", "ut1-adult.meta.json", "ut1-adult.txt"]


@pytest.mark.parametrize("length", [True, False], ids=["with-content-length", "without"])
def test_size_cap_stops_the_download(site: Site, store: Path, length: bool) -> None:
    first = first_copy(site, store)
    site.routes["/list.txt"] = serve(b"a.example\n" * 1000, length=length)
    result = fetch_list("ut1-adult", site.url("/list.txt"), store, max_bytes=5000)
    assert_kept(result, first)
    assert "larger than the 4.9 kB limit" in (result.error or "")


def test_gzip_bomb_stops_at_the_size_cap(site: Site, store: Path) -> None:
    first = first_copy(site, store)
    bomb = gzip.compress(b"\0" * (20 * MB))
    assert len(bomb) < MB
    site.routes["/list.txt"] = serve(bomb, headers={"Content-Encoding": "gzip"})
    result = fetch_list("ut1-adult", site.url("/list.txt"), store, max_bytes=MB)
    assert_kept(result, first)
    assert "larger than the 1.0 MB limit" in (result.error or "")


def test_empty_body_fails_and_keeps_the_copy(site: Site, store: Path) -> None:
    first = first_copy(site, store)
    site.routes["/list.txt"] = serve(b"")
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert_kept(result, first)
    assert "empty answer (0 bytes)" in (result.error or "")


def test_web_page_instead_of_a_list_fails(site: Site, store: Path) -> None:
    first = first_copy(site, store)
    site.routes["/list.txt"] = serve(b"\n<!DOCTYPE html><html><body>Rate limited</body></html>")
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert_kept(result, first)
    assert "web page instead of a list" in (result.error or "")


def test_a_second_download_of_the_same_list_is_refused_while_one_runs(site: Site,
                                                                      store: Path) -> None:
    first = first_copy(site, store)
    fd = os.open(store / "ut1-adult.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    finally:
        os.close(fd)
    assert_kept(result, first)
    assert "still running" in (result.error or "")


# ---------------------------------------------------------------- what is refused


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/list.txt",
                                 "javascript:alert(1)", "//127.0.0.1/list.txt"])
def test_non_http_url_is_refused(store: Path, url: str) -> None:
    result = fetch_list("ut1-adult", url, store)
    assert result.status == "failed" and result.path is None
    assert "only http:// and https:// URLs" in (result.error or "")


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/list.txt"])
def test_redirect_to_another_scheme_is_refused(site: Site, store: Path, target: str) -> None:
    site.routes["/list.txt"] = serve(b"", 302, headers={"Location": target})
    result = fetch_list("ut1-adult", site.url("/list.txt"), store)
    assert result.status == "failed" and result.path is None
    assert f"not {target.split(':')[0]}://" in (result.error or "")


def test_redirect_loop_stops_after_five(site: Site, store: Path) -> None:
    site.routes["/loop"] = serve(b"", 302, headers={"Location": "/loop"})
    result = fetch_list("ut1-adult", site.url("/loop"), store)
    assert result.status == "failed"
    assert "more than 5 redirects" in (result.error or "")
    assert len(site.requests) == 6


def test_check_url_hook_refuses_a_redirect_target(site: Site, store: Path) -> None:
    site.routes["/start"] = serve(b"", 302, headers={"Location": "/internal"})
    site.routes["/internal"] = serve(LIST)
    seen: list[str] = []

    def check_url(url: str) -> None:
        seen.append(url)
        if url.endswith("/internal"):
            raise ValueError("points into the home network")

    result = fetch_list("ut1-adult", site.url("/start"), store, check_url=check_url)
    assert result.status == "failed" and result.path is None
    assert result.error == f"refused {site.url('/internal')}: points into the home network"
    assert seen == [site.url("/start"), site.url("/internal")]
    assert site.paths() == ["/start"]


@pytest.mark.parametrize("list_id", ["../evil", "a/b", "a\\b", ".hidden", "", "a\0b",
                                     "über", "x" * 101, "a\n"])
def test_bad_list_id_is_refused(tmp_path: Path, list_id: str) -> None:
    store = tmp_path / "lists"
    with pytest.raises(ValueError, match="invalid list id"):
        fetch_list(list_id, "http://127.0.0.1:9/list.txt", store)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- ProgressBar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    screen = _Terminal()
    bar = ProgressBar("ut1-adult", screen, width=10)
    bar(0, int(3.4 * MB))
    bar(int(1.2 * MB), int(3.4 * MB))
    bar.finish("ut1-adult: updated (3.4 MB)")
    out = screen.getvalue()
    assert "\rut1-adult  [###.......]  1.2/3.4 MB" in out
    assert "\n" not in out.removesuffix("ut1-adult: updated (3.4 MB)\n")
    assert out.endswith("\rut1-adult: updated (3.4 MB)\n")


def test_progress_bar_spins_when_the_size_is_unknown() -> None:
    screen = _Terminal()
    bar = ProgressBar("ut1-adult", screen)
    bar(int(1.2 * MB), None)
    assert "ut1-adult  [" in screen.getvalue() and "]  1.2 MB" in screen.getvalue()


def test_progress_bar_in_a_log_prints_only_start_and_end() -> None:
    log = io.StringIO()
    bar = ProgressBar("ut1-adult", log)
    for done in range(0, 3 * MB, 64 * 1024):
        bar(done, 3 * MB)
    bar.finish("ut1-adult: updated (3.0 MB)")
    assert log.getvalue() == "ut1-adult  downloading (3.0 MB)\nut1-adult: updated (3.0 MB)\n"


def test_progress_bar_drives_from_a_real_download(site: Site, store: Path) -> None:
    site.routes["/list.txt"] = serve(LIST)
    log = io.StringIO()
    bar = ProgressBar("ut1-adult", log)
    result = fetch_list("ut1-adult", site.url("/list.txt"), store, progress=bar)
    bar.finish(result.message())
    assert log.getvalue() == f"ut1-adult  downloading ({len(LIST)} B)\n{result.message()}\n"


def test_a_server_that_is_not_http_is_named_without_quoting_what_it_sent(tmp_path: Path) -> None:
    """A URL pointed at another service (SSH, Redis…): its banner never reaches the message."""
    import socketserver

    class Banner(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(1024)
            self.request.sendall(b"SSH-2.0-OpenSSH_9.2 SECRET-BANNER\r\n")

    server = socketserver.TCPServer(("127.0.0.1", 0), Banner)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        result = fetch_list("l", f"http://127.0.0.1:{server.server_address[1]}/list.txt", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert result.status == "failed"
    assert "bad HTTP answer" in result.message() and "SECRET" not in result.message()
