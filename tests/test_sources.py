"""Which files make up the index, compiling them, and `filterd lists update` against a real
HTTP server on 127.0.0.1 serving fixture lists."""
from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from filterd import cli
from filterd.lists import sources
from filterd.rules.config import ConfigError, load_config
from filterd.lists.index import DomainIndex
from filterd.rules.catalog import load_catalog

FIXTURES = Path(__file__).parent / "fixtures" / "policy"


CATALOG = load_catalog()


def catalog_off(*categories: str) -> str:
    """`lists:` lines switching off the catalog sources of these categories."""
    return "".join(f"  - {{id: {source.id}, enabled: false}}\n"
                   for c in categories for source in CATALOG.categories[c].sources)


def write_config(folder: Path, list_entries: str = "", name: str = "filterd.yaml", mirror: str | None = None,
                 catalog: bool = False) -> Path:
    """A config whose data_dir is inside `folder`, with these `lists:` entries (YAML flow lines);
    the catalog sources of the blocked categories switched off unless `catalog`."""
    path = folder / name
    entries = (list_entries + "\n" if list_entries else "") + ("" if catalog else catalog_off("gambling", "adult"))
    path.write_text(f"""\
timezone: Europe/London
data_dir: {folder / 'var'}
dns: {{upstreams: ["udp://127.0.0.1:53"]}}
{f'lists_mirror: "{mirror}"' if mirror else ''}
lists:
{entries.rstrip() or '  []'}
profiles:
  kids: {{block_categories: [gambling, adult]}}
default_profile: kids
""")
    return path


def seed_ids(config) -> set[str]:
    return {f"seed-{c.id}" for c in config.catalog.categories.values() if c.seed_domains}


# ---------------------------------------------------------------- sources


def test_seed_lists_are_always_sources(tmp_path):
    config = load_config(write_config(tmp_path))
    files, missing = sources.sources(config)
    assert missing == []
    assert {f.id for f in files} == seed_ids(config)
    assert "seed-gambling" in seed_ids(config) and "seed-csam" not in seed_ids(config)
    for f in files:
        assert f.category == f.id.removeprefix("seed-") and f.format == "domains" and f.path.is_file()


def test_configured_lists_come_after_the_seeds(tmp_path):
    config = load_config(write_config(
        tmp_path, f"  - {{id: local-gambling, path: {FIXTURES / 'gambling.txt'}, category: gambling}}"))
    files, missing = sources.sources(config)
    assert missing == []
    assert [f.id for f in files][-1] == "local-gambling"
    assert {f.id for f in files} == seed_ids(config) | {"local-gambling"}


def test_lists_without_a_file_are_reported_and_left_out(tmp_path):
    config = load_config(write_config(tmp_path, (
        "  - {id: remote, url: 'https://lists.example/gambling.txt', category: gambling}\n"
        f"  - {{id: gone, path: {tmp_path / 'nowhere.txt'}, category: adult}}")))
    files, missing = sources.sources(config)
    assert {f.id for f in files} == seed_ids(config)
    assert missing == ["remote: not downloaded yet (run `filterd lists update`)",
                       f"gone: {tmp_path / 'nowhere.txt'} does not exist"]


def test_a_downloaded_url_list_is_read_from_the_data_dir(tmp_path):
    config = load_config(write_config(
        tmp_path, "  - {id: remote, url: 'https://lists.example/gambling.txt', category: gambling, format: domains}"))
    (tmp_path / "var" / "lists").mkdir(parents=True)
    (tmp_path / "var" / "lists" / "remote.txt").write_text("remote-listed.test\n")
    files, missing = sources.sources(config)
    assert missing == []
    (remote,) = [f for f in files if f.id == "remote"]
    assert remote.path == tmp_path / "var" / "lists" / "remote.txt"
    assert remote.url == "https://lists.example/gambling.txt"


# ---------------------------------------------------------------- compiling


def test_compiled_index_holds_the_seeds_and_the_lists(tmp_path):
    config = load_config(write_config(
        tmp_path, f"  - {{id: local-games, path: {FIXTURES / 'games.adblock'}, category: games, format: adblock}}"))
    with DomainIndex.open(sources.ensure_compiled(config)) as index:
        assert index.match("www.pokerstars.com").list_ids == ("seed-gambling",)
        assert index.match("cdn.game-cdn.test").list_ids == ("local-games",)
        assert index.match("edu.games-portal.test") is None        # the adblock exception
        assert index.match("example.org") is None


def test_a_downloaded_list_cannot_block_what_every_device_needs(tmp_path, caplog):
    listed = tmp_path / "doh.txt"
    listed.write_text("bad-doh.test\napple-dns.net\ngoogleapis.com\ncom\nmask.apple-dns.net\n")
    config = load_config(write_config(tmp_path, f"  - {{id: doh, path: {listed}, category: gambling}}"))
    with DomainIndex.open(sources.ensure_compiled(config)) as index:
        assert index.match("bad-doh.test").list_ids == ("doh",)
        assert index.match("www.apple-dns.net") is None          # iCloud's servers sit behind it
        assert index.match("storage.googleapis.com") is None
        assert index.match("example.com") is None
        assert index.match("mask.apple-dns.net").list_ids == ("doh",)   # a name below one is fine
    assert "left out 3 entries" in caplog.text and "apple-dns.net" in caplog.text


def test_a_changed_list_file_gives_a_new_index_with_its_names(tmp_path):
    listed = tmp_path / "mine.txt"
    listed.write_text("first.test\n")
    config = load_config(write_config(tmp_path, f"  - {{id: mine, path: {listed}, category: gambling}}"))
    first = sources.ensure_compiled(config)
    assert sources.current_signature_path(config) == first
    listed.write_text("first.test\nsecond.test\n")
    assert sources.current_signature_path(config) != first
    second = sources.ensure_compiled(config)
    assert second != first and second == sources.current_signature_path(config)
    with DomainIndex.open(second) as index:
        assert index.match("second.test").list_ids == ("mine",)
    with DomainIndex.open(first) as index:                        # kept for workers still mapping it
        assert index.match("second.test") is None


def test_unchanged_sources_reuse_the_compiled_index(tmp_path):
    config = load_config(write_config(tmp_path))
    path = sources.ensure_compiled(config)
    stamp = path.stat().st_mtime_ns
    assert sources.ensure_compiled(load_config(write_config(tmp_path))) == path
    assert path.stat().st_mtime_ns == stamp


def test_old_indexes_are_removed_but_the_previous_one_is_kept(tmp_path):
    listed = tmp_path / "mine.txt"
    config = load_config(write_config(tmp_path, f"  - {{id: mine, path: {listed}, category: gambling}}"))
    made = []
    for i in range(4):
        listed.write_text("".join(f"name{j}.test\n" for j in range(i + 1)))
        made.append(sources.ensure_compiled(config))
    on_disk = sorted((tmp_path / "var" / "lists").glob("index-*.idx"))
    assert made[-1] in on_disk
    assert len(on_disk) <= sources.KEEP_OLD_INDEXES


def test_open_index_without_compiling_says_the_file_is_missing(tmp_path):
    config = load_config(write_config(tmp_path))
    with pytest.raises(FileNotFoundError):
        sources.open_index(config, compile_if_missing=False)


# ---------------------------------------------------------------- `filterd lists update`


class ListServer(ThreadingHTTPServer):
    """A `lists_mirror` on 127.0.0.1: serves `routes[path](handler)` for the list at
    `https://lists.test{path}` (asked as `/lists.test{path}`); remembers every request's path
    (without that prefix) and headers."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ListHandler)
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []

    @property
    def mirror(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        """The address the config names."""
        return f"https://lists.test{path}"

    def fetched(self, path: str) -> str:
        """The address actually fetched, through the mirror."""
        return f"{self.mirror}/lists.test{path}"


class ListHandler(BaseHTTPRequestHandler):
    server: ListServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.removeprefix("/lists.test")
        self.server.requests.append((path, dict(self.headers)))
        route = self.server.routes.get(path)
        if route is None:
            send(self, 404, b"not here\n")
        else:
            route(self)

    def log_message(self, format: str, *args) -> None:
        pass


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", length: int | None = None,
         etag: str | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    if etag:
        handler.send_header("ETag", etag)
    handler.end_headers()
    handler.wfile.write(body)


def serve_list(body: bytes, etag: str = '"v1"'):
    """A list with an ETag: 304 to a request that names it."""
    def route(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("If-None-Match") == etag:
            send(handler, 304)
        else:
            send(handler, 200, body, etag=etag)
    return route


def serve_truncated(body: bytes):
    """Promises more than it sends, then closes the connection (HTTP/1.0)."""
    return lambda handler: send(handler, 200, body, length=len(body) + 4096)


@pytest.fixture
def list_server() -> Iterator[ListServer]:
    server = ListServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


FIRST = b"# downloaded gambling list\ndownloaded-one.test\ndownloaded-two.test\n"
SECOND = b"downloaded-one.test\ndownloaded-two.test\ndownloaded-three.test\n"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    args = cli.build_parser().parse_args(list(argv))
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


def explain(capsys, config: Path, name: str) -> str:
    status, out, err = run(capsys, "explain", name, "--config", str(config), "--at", "2026-03-03 12:00")
    assert status == 0, err
    return out


@pytest.fixture
def downloaded(tmp_path, list_server, capsys) -> Path:
    """A config with one url list, after a first successful `filterd lists update`."""
    list_server.routes["/gambling.txt"] = serve_list(FIRST)
    config = write_config(tmp_path, (
        f"  - {{id: dl-gambling, url: '{list_server.url('/gambling.txt')}', category: gambling, format: domains}}"),
        mirror=list_server.mirror)
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 0, err
    assert "dl-gambling: updated (" in err
    return config


def test_lists_update_downloads_and_compiles_so_explain_blocks(downloaded, tmp_path, capsys):
    assert (tmp_path / "var" / "lists" / "dl-gambling.txt").read_bytes() == FIRST
    out = explain(capsys, downloaded, "www.downloaded-two.test")
    assert "  BLOCK: category Gambling (list dl-gambling, downloaded-two.test)" in out
    assert "list: dl-gambling" in out
    assert "ALLOW" in explain(capsys, downloaded, "downloaded-three.test")


def test_lists_update_again_asks_conditionally_and_keeps_the_list(downloaded, list_server, tmp_path, capsys):
    status, out, err = run(capsys, "lists", "update", "--config", str(downloaded))
    assert status == 0, err
    assert "dl-gambling: unchanged (304)" in err
    path, headers = list_server.requests[-1]
    assert path == "/gambling.txt" and headers.get("If-None-Match") == '"v1"'
    assert (tmp_path / "var" / "lists" / "dl-gambling.txt").read_bytes() == FIRST
    assert "BLOCK" in explain(capsys, downloaded, "downloaded-one.test")


def test_lists_update_takes_a_changed_list(downloaded, list_server, capsys):
    list_server.routes["/gambling.txt"] = serve_list(SECOND, etag='"v2"')
    status, out, err = run(capsys, "lists", "update", "--config", str(downloaded))
    assert status == 0, err
    assert "dl-gambling: updated" in err
    assert "BLOCK" in explain(capsys, downloaded, "downloaded-three.test")


def test_lists_update_404_exits_non_zero_and_keeps_the_last_good_copy(downloaded, list_server, tmp_path, capsys):
    del list_server.routes["/gambling.txt"]
    status, out, err = run(capsys, "lists", "update", "--config", str(downloaded))
    assert status != 0
    line = next(line for line in err.splitlines() if line.startswith("dl-gambling: "))
    assert f"HTTP 404 from {list_server.fetched('/gambling.txt')}" in line
    assert "kept the copy from " in line
    assert (tmp_path / "var" / "lists" / "dl-gambling.txt").read_bytes() == FIRST
    assert "BLOCK" in explain(capsys, downloaded, "downloaded-one.test")


def test_lists_update_truncated_body_keeps_the_last_good_copy(downloaded, list_server, tmp_path, capsys):
    list_server.routes["/gambling.txt"] = serve_truncated(SECOND)
    status, out, err = run(capsys, "lists", "update", "--config", str(downloaded))
    assert status != 0
    line = next(line for line in err.splitlines() if line.startswith("dl-gambling: "))
    assert "cut off" in line and "kept the copy from " in line
    assert (tmp_path / "var" / "lists" / "dl-gambling.txt").read_bytes() == FIRST
    assert not list((tmp_path / "var" / "lists").glob(".*.part"))
    assert "BLOCK" in explain(capsys, downloaded, "downloaded-one.test")
    assert "ALLOW" in explain(capsys, downloaded, "downloaded-three.test")


def test_lists_update_first_download_failing_says_nothing_is_kept(tmp_path, list_server, capsys):
    config = write_config(tmp_path, (
        f"  - {{id: never, url: '{list_server.url('/missing.txt')}', category: gambling}}"), mirror=list_server.mirror)
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status != 0
    assert "never: HTTP 404" in err and "no copy downloaded yet" in err
    # The seeds are compiled all the same.
    assert "BLOCK: category Gambling (list seed-gambling, pokerstars.com)" in explain(capsys, config, "pokerstars.com")


def test_lists_update_one_failure_of_two_still_takes_the_other(tmp_path, list_server, capsys):
    list_server.routes["/good.txt"] = serve_list(FIRST)
    config = write_config(tmp_path, (
        f"  - {{id: broken, url: '{list_server.url('/broken.txt')}', category: adult}}\n"
        f"  - {{id: good, url: '{list_server.url('/good.txt')}', category: gambling}}"), mirror=list_server.mirror)
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status != 0
    assert "broken: HTTP 404" in err and "good: updated" in err
    assert "list: good" in explain(capsys, config, "downloaded-one.test")


def test_lists_update_with_no_url_lists_compiles_the_seeds(tmp_path, capsys):
    config = write_config(tmp_path, f"  - {{id: local, path: {FIXTURES / 'gambling.txt'}, category: gambling}}")
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 0
    assert "no lists with a url" in err
    assert sources.current_signature_path(load_config(config)).exists()


def test_lists_update_command_names_the_failed_list(tmp_path, list_server):
    """The real command line: exit status and message as a parent running it sees them."""
    config = write_config(tmp_path, f"  - {{id: gone-list, url: '{list_server.url('/gone.txt')}', category: gambling}}",
                          mirror=list_server.mirror)
    result = subprocess.run([sys.executable, "-m", "filterd", "lists", "update", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "gone-list: HTTP 404 from" in result.stderr
    assert "Traceback" not in result.stderr


def test_more_lists_than_an_index_holds_are_refused_or_compiled(tmp_path):
    entries = []
    for i in range(50):
        (tmp_path / f"list{i}.txt").write_text(f"many{i}.test\n")
        entries.append(f"  - {{id: list{i}, path: {tmp_path / f'list{i}.txt'}, category: gambling}}")
    try:
        config = load_config(write_config(tmp_path, "\n".join(entries)))
    except ConfigError as exc:
        assert any(problem.startswith("lists") for problem in exc.problems), exc.problems
        return
    with DomainIndex.open(sources.ensure_compiled(config)) as index:
        assert index.match("many49.test").list_ids == ("list49",)


def test_a_list_named_like_a_seed_list_is_refused_or_compiled(tmp_path):
    config_path = write_config(tmp_path, f"  - {{id: seed-gambling, path: {FIXTURES / 'gambling.txt'}, "
                                         f"category: gambling}}")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        assert any(problem.startswith("lists[0].id:") for problem in exc.problems), exc.problems
        return
    with DomainIndex.open(sources.ensure_compiled(config)) as index:
        assert index.match("pokerstars.test") is not None
        assert index.match("pokerstars.com") is not None
