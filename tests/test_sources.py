"""Which files make up the index, compiling them, and `filterd lists update` against a real
HTTP server on 127.0.0.1 serving fixture lists."""
from __future__ import annotations

import gzip
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
from filterd.lists.essential import ESSENTIAL_DOMAINS, NEVER_BLOCKED_BY_LISTS
from filterd.rules.catalog import load_catalog

FIXTURES = Path(__file__).parent / "fixtures" / "policy"
REPO = Path(__file__).resolve().parents[1]


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
    assert "no list to download" in err
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


# ---------------------------------------------------------------- categories bring their lists

UT1 = "/raw.githubusercontent.com/olbat/ut1-blacklists/master/blacklists"


def serve_raw(body: bytes, content_encoding: str | None = None):
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        if content_encoding:
            handler.send_header("Content-Encoding", content_encoding)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return route


def test_a_blocked_categorys_catalog_sources_are_downloaded_with_no_config(tmp_path, list_server, capsys):
    """Gambling is blocked: its three catalog sources are fetched (through the mirror), one of
    them gzip-encoded on the wire; adult's are switched off; games (not blocked) is not fetched."""
    list_server.routes[f"{UT1}/gambling/domains"] = serve_raw(b"ut1-casino.test\n")
    list_server.routes["/blocklistproject.github.io/Lists/alt-version/gambling-nl.txt"] = serve_raw(
        gzip.compress(b"# Title: BLP gambling\nblp-casino.test\n"), "gzip")
    list_server.routes["/raw.githubusercontent.com/StevenBlack/hosts/master/alternates/gambling-only/hosts"] = \
        serve_raw(b"0.0.0.0 sb-casino.test\nplain-line-in-hosts.test\n")
    config = tmp_path / "filterd.yaml"
    config.write_text(f"""\
data_dir: {tmp_path / 'var'}
dns: {{upstreams: ["udp://127.0.0.1:53"]}}
lists_mirror: "{list_server.mirror}"
lists:
{catalog_off('adult')}
profiles:
  kids: {{block_categories: [adult], schedules: [{{name: evening, start: "18:00", end: "20:00", block: [gambling]}}]}}
""")
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 0, err
    asked = {path for path, _ in list_server.requests}
    assert asked == set(list_server.routes)          # gambling only: from a schedule, no games
    assert "stevenblack-gambling: 2 domains (1 plain-domain line, 1 hosts line)" in err
    with DomainIndex.open(sources.current_signature_path(load_config(config))) as index:
        assert index.match("www.ut1-casino.test").list_ids == ("ut1-gambling",)
        assert index.match("blp-casino.test").list_ids == ("blp-gambling",)
        assert index.match("plain-line-in-hosts.test").list_ids == ("stevenblack-gambling",)


def test_a_list_split_in_parts_is_read_as_one_and_a_gz_file_is_unpacked(tmp_path, list_server, capsys):
    parts = [b"first.test\nsplit-acr", b"oss-parts.test\nlast", b".test\n"]
    for number, part in enumerate(parts):
        list_server.routes[f"{UT1}/adult/domains.{number}"] = serve_list(part, etag=f'"p{number}"')
    list_server.routes["/big.txt.gz"] = serve_raw(gzip.compress(b"zipped.test\n" * 3))
    config = write_config(tmp_path, (
        f"  - {{id: zipped, url: 'https://lists.test/big.txt.gz', category: adult}}\n"
        + "".join(f"  - {{id: {s.id}, enabled: false}}\n" for s in CATALOG.categories["adult"].sources
                  if s.id != "ut1-adult")
        + catalog_off("gambling")), mirror=list_server.mirror, catalog=True)
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 0, err
    store = tmp_path / "var" / "lists"
    assert sorted(p.name for p in store.glob("ut1-adult.*.txt")) == ["ut1-adult.0.txt", "ut1-adult.1.txt",
                                                                      "ut1-adult.2.txt"]
    assert (store / "zipped.txt").read_bytes()[:2] == b"\x1f\x8b"      # kept as sent
    with DomainIndex.open(sources.current_signature_path(load_config(config))) as index:
        for name in ("first.test", "split-across-parts.test", "last.test"):
            assert index.match(name).list_ids == ("ut1-adult",), name
        assert index.match("zipped.test").list_ids == ("zipped",)
        (info,) = [i for i in index.lists if i.id == "ut1-adult"]
        assert info.counts["domains"] == 3
    assert f"{UT1}/adult/domains.3" in {path for path, _ in list_server.requests}   # asked: the end
    # The list is re-split in two parts: the third part's old copy goes.
    list_server.routes[f"{UT1}/adult/domains.1"] = serve_list(b"oss-parts.test\nnow-last.test\n", etag='"q1"')
    del list_server.routes[f"{UT1}/adult/domains.2"]
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 0, err
    assert sorted(p.name for p in store.glob("ut1-adult.*.txt")) == ["ut1-adult.0.txt", "ut1-adult.1.txt"]
    with DomainIndex.open(sources.current_signature_path(load_config(config))) as index:
        assert index.match("now-last.test").list_ids == ("ut1-adult",)
        assert index.match("last.test") is None


def test_a_catalog_list_can_be_replaced_by_the_parents_own(tmp_path, list_server, capsys):
    list_server.routes["/mine.txt"] = serve_list(b"parents-pick.test\n")
    config = write_config(tmp_path, (
        f"  - {{id: ut1-gambling, url: '{list_server.url('/mine.txt')}'}}\n"
        + "".join(f"  - {{id: {s.id}, enabled: false}}\n" for s in CATALOG.categories["gambling"].sources
                  if s.id != "ut1-gambling")
        + catalog_off("adult")), mirror=list_server.mirror, catalog=True)
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 0, err
    assert "list ut1-gambling, parents-pick.test" in explain(capsys, config, "parents-pick.test")


def test_a_catalog_list_takes_only_enabled_without_an_address(tmp_path):
    with pytest.raises(ConfigError, match=r"lists\[0\].format: \"ut1-gambling\" is a catalog list"):
        load_config(write_config(tmp_path, "  - {id: ut1-gambling, format: hosts}"))


# ---------------------------------------------------------------- every download checked


def test_a_list_on_this_machine_is_refused_without_a_request(tmp_path, list_server, capsys):
    config = write_config(tmp_path, f"  - {{id: local-web, url: '{list_server.mirror}/x.txt', category: gambling}}")
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 1
    assert "local-web: refused " in err and "loopback" in err
    assert list_server.requests == []


@pytest.mark.parametrize("target", ["http://localhost:{port}/secret", "http://127.0.0.1:{other}/secret",
                                    "http://[::ffff:127.0.0.1]:{port}/secret", "http://169.254.169.254/secret"])
def test_a_redirect_from_the_mirror_to_this_machine_is_refused(tmp_path, list_server, capsys, target):
    other = list_server.server_address[1] + 1 if list_server.server_address[1] < 65535 else 1

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", target.format(port=list_server.server_address[1], other=other))
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    list_server.routes["/moved.txt"] = redirect
    list_server.routes["/secret"] = serve_list(b"admin-token-should-never-be-read\n")
    config = write_config(tmp_path, f"  - {{id: moved, url: '{list_server.url('/moved.txt')}', category: gambling}}",
                          mirror=list_server.mirror)
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 1
    line = next(line for line in err.splitlines() if line.startswith("moved: "))
    assert line.startswith("moved: refused http://") and ("loopback" in line or "link-local" in line), line
    assert [path for path, _ in list_server.requests] == ["/moved.txt"]


def test_what_a_server_answers_is_never_shown_back(tmp_path, list_server, capsys):
    list_server.routes["/page.txt"] = serve_list(b"SECRET-1 is not a domain\nSECRET-2: another line\n")
    config = write_config(tmp_path, f"  - {{id: page, url: '{list_server.url('/page.txt')}', category: gambling}}",
                          mirror=list_server.mirror)
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert "page: 0 domains (2 invalid lines)" in err
    status_file = sources.update_status_path(load_config(config)).read_text()
    assert "SECRET" not in out + err + status_file


def test_a_private_address_needs_allow_private(tmp_path):
    config = load_config(write_config(tmp_path, (
        "  - {id: nas, url: 'http://192.168.1.10/list.txt', category: gambling}\n"
        "  - {id: nas-ok, url: 'http://192.168.1.10/list.txt', category: gambling, allow_private: true}")))
    nas, nas_ok = [s for s in sources.wanted_lists(config) if s.id.startswith("nas")]
    with pytest.raises(ValueError, match="private"):
        sources.url_guard(config, nas)("http://192.168.1.10/list.txt")
    assert sources.url_guard(config, nas_ok)("http://192.168.1.10/list.txt") == ["192.168.1.10"]
    with pytest.raises(ValueError, match="loopback"):
        sources.url_guard(config, nas_ok)("http://127.0.0.1/list.txt")


# ---------------------------------------------------------------- serving meanwhile


def test_changed_lists_are_served_from_the_last_good_index_until_compiled(tmp_path):
    listed = tmp_path / "mine.txt"
    listed.write_text("first.test\n")
    config = load_config(write_config(tmp_path, f"  - {{id: mine, path: {listed}, category: gambling}}"))
    first = sources.ensure_compiled(config)
    listed.write_text("first.test\nsecond.test\n")
    with sources.open_index(config, compile_if_missing=False, last_good=True) as index:
        assert index.path == first != sources.current_signature_path(config)
        assert index.match("first.test").list_ids == ("mine",)
    with pytest.raises(FileNotFoundError):
        sources.open_index(config, compile_if_missing=False)


def test_the_never_blocked_names_survive_the_stored_default_sources(tmp_path):
    """No stored snapshot of a default source blocks an essential or never-blocked name."""
    mirror = REPO.parent / "shared" / "data" / "lists"
    if not mirror.is_dir():
        pytest.skip(f"{mirror} missing")
    config = load_config(write_config(tmp_path, catalog=True))
    store = tmp_path / "var" / "lists"
    store.mkdir(parents=True)
    wanted = [s for c in CATALOG.categories.values() for s in c.sources if s.urls]
    files = []
    for source in wanted:
        stored = [mirror / url.split("://", 1)[1] for url in source.urls]
        if all(p.is_file() for p in stored):
            files.append(sources.SourceFile(source.id, "x", tuple(stored), source.format))
    assert len(files) >= 20
    path = tmp_path / "all.idx"
    sources.compile_sources(files, path)
    with DomainIndex.open(path) as index:
        for name in sorted(set(NEVER_BLOCKED_BY_LISTS) | ESSENTIAL_DOMAINS):
            assert index.match(name) is None, (name, index.match(name))
            assert index.match(f"www.{name}") is None, name


def test_explain_names_the_list_and_where_to_report_a_wrong_block(tmp_path, list_server, capsys):
    list_server.routes[f"{UT1}/gambling/domains"] = serve_raw(b"wrongly-listed.test\n")
    config = write_config(tmp_path, "".join(
        f"  - {{id: {s.id}, enabled: false}}\n" for s in CATALOG.categories["gambling"].sources
        if s.id != "ut1-gambling") + catalog_off("adult"), mirror=list_server.mirror, catalog=True)
    status, out, err = run(capsys, "lists", "update", "--config", str(config))
    assert status == 0, err
    out = explain(capsys, config, "www.wrongly-listed.test")
    assert "BLOCK: category Gambling (list ut1-gambling, wrongly-listed.test)" in out
    assert ("list ut1-gambling: the Gambling category's list from https://raw.githubusercontent.com/olbat/"
            "ut1-blacklists/master/blacklists/gambling/domains (CC BY-SA 4.0); a wrong block? report it at "
            "https://dsi.ut-capitole.fr/blacklists/") in out
    assert "list seed-gambling: filterd's own starter list" in explain(capsys, config, "pokerstars.com")


def test_the_web_ui_policy_uses_the_last_good_index_while_lists_compile(tmp_path):
    from filterd.lists.build import build_policy
    listed = tmp_path / "mine.txt"
    listed.write_text("first.test\n")
    config = load_config(write_config(tmp_path, f"  - {{id: mine, path: {listed}, category: gambling}}"))
    first = sources.ensure_compiled(config)
    listed.write_text("first.test\nsecond.test\n")
    policy = build_policy(config, compile_if_missing=False, missing_ok=True)
    assert policy.index.path == first and policy.index.lookup("first.test")


def test_an_update_in_progress_is_known_to_the_daemon_until_it_finishes(tmp_path):
    config = load_config(write_config(tmp_path))
    assert not sources.update_running(config)
    status = sources.UpdateStatus(sources.update_status_path(config), sources.wanted_lists(config))
    try:
        assert sources.update_running(config)      # the daemon leaves the compile to it
        status.finish({})
        assert not sources.update_running(config)
    finally:
        status.close()


def test_a_gzip_list_unpacking_beyond_the_cap_is_cut_and_named(tmp_path, caplog):
    bomb = tmp_path / "bomb.txt"
    bomb.write_bytes(gzip.compress(b"ok.test\n" + b"\0" * (4 << 20)))
    chunks = sources.read_chunks((bomb,), max_unpacked=2 << 20)
    with pytest.raises(ValueError, match="unpacks to more than 2 MB"):
        for _ in chunks:
            pass


def test_catalog_lists_not_downloaded_yet_are_named(tmp_path):
    config = load_config(write_config(tmp_path, catalog_off("gambling"), catalog=True))
    files, missing = sources.sources(config)
    assert {f.id for f in files} == seed_ids(config)
    assert "ut1-adult: not downloaded yet (run `filterd lists update`)" in missing
    (adult,) = [spec for spec in sources.wanted_lists(config) if spec.id == "ut1-adult"]
    assert adult.url.endswith("/blacklists/adult/domains.0") and adult.origin == "catalog"


def test_a_damaged_index_is_compiled_again_not_fatal(tmp_path, caplog):
    config = load_config(write_config(tmp_path))
    path = sources.ensure_compiled(config)
    raw = bytearray(path.read_bytes())
    raw[200] ^= 0xFF
    path.write_bytes(bytes(raw))
    with sources.open_index(config) as index:
        assert index.path == path and index.match("pokerstars.com") is not None
    assert "checksum mismatch" in caplog.text and "compiled again" in caplog.text
