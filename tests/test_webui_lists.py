"""The Lists page: adding a list by URL (SSRF guard, per-field errors, config edited safely) and
"Update now" with visible progress, against a real HTTP server on 127.0.0.1 serving fixture lists."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from webui_fixtures import CONFIG_TEXT, Env, admin, env, page_csrf, version_from  # noqa: F401

from filterd.lists import sources
from filterd.rules.config import load_config
from filterd.lists.urlcheck import UrlGuard

LIST = b"".join(b"site%d.example.com\n" % i for i in range(4000))   # ~80 KB, sent in two halves
DEADLINE_S = 20


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        site = self.server.site
        site["seen"].append(self.path)
        self.path = self.path.removeprefix("/lists.test")   # asked through lists_mirror
        if self.path == "/slow.txt":           # half the list, then wait for the test to release it
            self.send_response(200)
            self.send_header("Content-Length", str(len(LIST)))
            self.end_headers()
            self.wfile.write(LIST[: len(LIST) // 2])
            self.wfile.flush()
            site["release"].wait(DEADLINE_S)
            self.wfile.write(LIST[len(LIST) // 2:])
        elif self.path == "/list.txt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(LIST)))
            self.end_headers()
            self.wfile.write(LIST)
        elif self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def list_server() -> Iterator[dict]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.site = {"seen": [], "release": threading.Event(), "port": httpd.server_address[1]}
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd.site
    httpd.site["release"].set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def url(site: dict, path: str) -> str:
    return f"http://127.0.0.1:{site['port']}{path}"


def add_form(admin, **fields) -> dict:
    html = admin.get("/lists").get_data(as_text=True)
    form = {"csrf_token": page_csrf(admin, "/lists"), "version": version_from(html), "category": "gambling"}
    form.update(fields)
    return form


def poll(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def error_beside(html: str, field: str) -> str:
    import re
    match = re.search(rf'<p class="error" id="list-{field}-error" role="alert">([^<]*)</p>', html)
    assert match, f"no error beside {field}"
    return match.group(1)


# ---------------------------------------------------------------- adding a list by URL


def test_add_list_downloads_it_and_adds_it_to_the_config_keeping_comments(env, admin, list_server):
    env.app.config["LIST_URL_GUARD"] = UrlGuard(allow_loopback=True)   # the stand-in server is on loopback
    before = env.config_text()
    response = admin.post("/lists/add", data=add_form(admin, id="big-gambling", url=url(list_server, "/list.txt")))
    assert response.status_code == 302
    config = load_config(env.config_path)
    assert [(s.id, s.url, s.category) for s in config.rules.lists] == [
        ("big-gambling", url(list_server, "/list.txt"), "gambling")]
    assert "# Emma and Noah" in env.config_text() and env.config_text() != before
    assert (sources.lists_dir(config) / "big-gambling.txt").read_bytes() == LIST
    assert env.audit()[-1][1] == "config" and "big-gambling" in env.audit()[-1][2]
    assert "big-gambling" in admin.get("/lists").get_data(as_text=True)


def test_add_list_on_loopback_is_refused_beside_the_url_and_nothing_is_written(env, admin, list_server):
    before = env.config_text()
    response = admin.post("/lists/add", data=add_form(admin, id="sneaky", url=url(list_server, "/list.txt")))
    html = response.get_data(as_text=True)
    assert "loopback" in error_beside(html, "url")
    assert list_server["seen"] == []
    assert env.config_text() == before
    assert not (env.data_dir / "lists" / "sneaky.txt").exists()


def test_add_list_redirected_to_link_local_is_refused(env, admin, list_server):
    first_hop = {"count": 0}
    strict = UrlGuard()

    def guard(target: str):          # the stand-in server passes (it is on loopback); redirects meet the real guard
        first_hop["count"] += 1
        return ["127.0.0.1"] if first_hop["count"] == 1 else strict(target)
    env.app.config["LIST_URL_GUARD"] = guard
    before = env.config_text()
    html = admin.post("/lists/add", data=add_form(admin, id="meta", url=url(list_server, "/to-metadata"))
                      ).get_data(as_text=True)
    assert "169.254.169.254" in error_beside(html, "url") and "link-local" in error_beside(html, "url")
    assert env.config_text() == before


@pytest.mark.parametrize("fields, field, message", [
    ({"id": "Bad Id!", "url": "https://example.org/a.txt"}, "id", "lower-case"),
    ({"id": "seed-adult", "url": "https://example.org/a.txt"}, "id", "seed-"),
    ({"id": "ok", "url": "ftp://example.org/a.txt"}, "url", "https://"),
    ({"id": "ok", "url": "file:///etc/passwd"}, "url", "https://"),
    ({"id": "ok", "url": "https://user:pw@example.org/a.txt"}, "url", "user name"),
    ({"id": "ok", "url": "https://example.org/a.txt", "category": "nope"}, "category", "categories"),
    ({"id": "ok", "url": "https://example.org/a.txt", "category": "csam"}, "category", "categories"),
])
def test_add_list_field_errors_show_beside_their_field_and_nothing_is_written(env, admin, fields, field, message):
    before = env.config_text()
    response = admin.post("/lists/add", data=add_form(admin, **fields))
    assert response.status_code == 200
    assert message in error_beside(response.get_data(as_text=True), field)
    assert env.config_text() == before


def test_add_list_with_a_taken_name_is_refused_beside_the_name(tmp_path, list_server):
    text = CONFIG_TEXT.format(data_dir=tmp_path / "var") + "lists:\n  - {id: mine, path: /dev/null, category: adult}\n"
    environment = Env(tmp_path, text)
    client = environment.logged_in()
    html = client.post("/lists/add", data=add_form(client, id="mine", url="https://example.org/a.txt")).get_data(as_text=True)
    assert "exists already" in error_beside(html, "id")


def test_add_list_without_csrf_token_changes_nothing(env, admin):
    before = env.config_text()
    response = admin.post("/lists/add", data={"id": "x", "url": "https://example.org/a.txt", "category": "adult"})
    assert response.status_code == 400
    assert env.config_text() == before


def test_add_list_escapes_the_url_it_shows_back(env, admin):
    html = admin.post("/lists/add", data=add_form(admin, id="x", url='https://"><script>alert(1)</script>/'),
                      ).get_data(as_text=True)
    assert "<script>alert(1)" not in html


# ---------------------------------------------------------------- update now, with progress


def config_with_lists(tmp_path, site) -> Env:
    """Two lists fetched through a lists_mirror on 127.0.0.1 (addresses of this machine are
    refused otherwise); the categories' own lists switched off."""
    blocked = load_config_catalog_ids()
    text = CONFIG_TEXT.format(data_dir=tmp_path / "var") + (
        f"lists_mirror: \"{url(site, '')}\"\n"
        f"lists:\n  - {{id: slow-list, url: \"https://lists.test/slow.txt\", category: gambling}}\n"
        f"  - {{id: gone-list, url: \"https://lists.test/missing.txt\", category: adult}}\n"
        + "".join(f"  - {{id: {list_id}, enabled: false}}\n" for list_id in blocked))
    return Env(tmp_path, text)


def load_config_catalog_ids() -> list[str]:
    from filterd.rules.catalog import load_catalog
    return [source.id for category in load_catalog().categories.values() for source in category.sources]


def test_update_progress_shows_bytes_percent_then_counts_and_errors(tmp_path, list_server):
    environment = config_with_lists(tmp_path, list_server)
    client = environment.logged_in()
    config = load_config(environment.config_path)
    worker = threading.Thread(target=sources.update, args=(config,), kwargs={"stream": open("/dev/null", "w")})
    worker.start()
    try:
        status = poll(lambda: (s := sources.read_update_status(config)) and s["lists"][0]["done"] > 0 and s,
                      "the first half of the slow list")
        assert status["running"] and status["lists"][0]["state"] == "downloading"
        assert status["lists"][0]["total"] == len(LIST) and status["lists"][0]["percent"] == 50
        assert status["lists"][1]["state"] == "waiting"
        page = client.get("/lists")
        html = page.get_data(as_text=True)
        assert page.headers.get("Refresh") == "2"
        assert "Updating the lists" in html and "(50 %)" in html
        assert '<progress id="progress-1" max="100" value="50">' in html
        assert "slow-list" in html and "waiting" in html
    finally:
        list_server["release"].set()
        worker.join(DEADLINE_S)
    status = sources.read_update_status(config)
    assert not status["running"] and status["finished"] is not None
    assert [item["state"] for item in status["lists"]] == ["done", "error"]
    assert status["lists"][0]["domains"] == 4000
    page = client.get("/lists")
    html = page.get_data(as_text=True)
    assert "Refresh" not in page.headers
    assert "4,000 domains (4,000 plain-domain lines)" in html and "HTTP 404" in html
    assert '<progress id="progress-1" max="100" value="100">' in html


def test_update_now_runs_filterd_lists_update_and_the_page_follows_it(tmp_path, list_server):
    environment = config_with_lists(tmp_path, list_server)
    list_server["release"].set()        # served at full speed here
    client = environment.logged_in()
    config = load_config(environment.config_path)
    response = client.post("/lists/update", data={"csrf_token": page_csrf(client, "/lists")})
    assert response.status_code == 302
    status = poll(lambda: (s := sources.read_update_status(config)) and s["finished"] and s, "the update to finish")
    assert [item["state"] for item in status["lists"]] == ["done", "error"]
    html = client.get("/lists").get_data(as_text=True)
    assert "Last update" in html and "4,000 domains" in html
    assert environment.audit()[-1][1:] == ("lists update", "started")


def test_update_now_is_refused_while_one_runs(tmp_path, list_server):
    environment = config_with_lists(tmp_path, list_server)
    client = environment.logged_in()
    config = load_config(environment.config_path)
    worker = threading.Thread(target=sources.update, args=(config,), kwargs={"stream": open("/dev/null", "w")})
    worker.start()
    try:
        poll(lambda: (s := sources.read_update_status(config)) and s["lists"][0]["done"] > 0, "the download to start")
        client.post("/lists/update", data={"csrf_token": page_csrf(client, "/lists")})
        assert "running already" in client.get("/lists").get_data(as_text=True)
    finally:
        list_server["release"].set()
        worker.join(DEADLINE_S)
    assert [a for a in environment.audit() if a[1] == "lists update"] == []


def test_an_update_whose_process_died_is_shown_as_stopped(tmp_path, list_server):
    environment = config_with_lists(tmp_path, list_server)
    config = load_config(environment.config_path)
    path = sources.update_status_path(config)
    status = sources.UpdateStatus(path, config.rules.lists)
    status.data["pid"] = 2**22 + 12345          # no such process
    status._write()
    status.close()
    html = environment.logged_in().get("/lists").get_data(as_text=True)
    assert "stopped before the end" in html


def test_the_lists_page_shows_each_blocked_categorys_own_lists_and_their_licences(env, admin):
    html = admin.get("/lists").get_data(as_text=True)
    section = html[html.index('id="category-lists"'):]
    assert "ut1-gambling" in section and "CC BY-SA 4.0" in section and "not downloaded yet" in section
    row = section[section.index("ut1-adult"):]
    assert row.index("not downloaded yet") < row.index("</tr>")    # a list in numbered parts too
    assert 'href="https://dsi.ut-capitole.fr/blacklists/"' in section
    assert "ut1-games" not in section            # no profile blocks games
