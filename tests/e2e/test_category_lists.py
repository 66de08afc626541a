"""Categories bring their lists, end to end: the default config, every list fetched through
`lists_mirror` from a real HTTP server (`python3 -m http.server`) serving the stored snapshots
in ../shared/data/lists, the real `filterd lists update` command, then the real daemon over UDP.

A device on the `child` preset is refused names drawn from each stored source of each category
it blocks; a device on the `adult` preset is not (malware aside, which both block). The figures
per category are printed. Sources the snapshot does not hold (UT1 adult, the Block List
Project's porn list… too large to store) answer 404: the update says so and exits 1, and the
rest is compiled all the same.
"""
from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dnslib import QTYPE, RCODE

from conftest import Daemon, wait_until
from filterd.lists.build import build_policy
from filterd.lists.domains import parse_list
from filterd.lists.essential import ESSENTIAL_DOMAINS, NEVER_BLOCKED_BY_LISTS, list_conflict
from filterd.rules import policy as policy_module
from filterd.rules.config import load_config
from filterd.rules.presets import PRESETS
from standin import free_port

REPO = Path(__file__).resolve().parents[2]
MIRROR_DIR = REPO.parent / "shared" / "data" / "lists"
FILTER_ADDRESS = "192.168.1.2"
CHILD, GROWN_UP = "127.0.0.2", "127.0.0.3"
SAMPLE = 40          # names drawn from each stored source

pytestmark = pytest.mark.skipif(not MIRROR_DIR.is_dir(), reason=f"{MIRROR_DIR} (the list snapshots) is missing")


@pytest.fixture(scope="module")
def mirror():
    """`python3 -m http.server` on 127.0.0.1 serving the snapshots, URL-keyed (HOST/PATH)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(MIRROR_DIR)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    try:
        wait_until(up, timeout=10, message="the list mirror to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def updated(tmp_path_factory, module_standins, mirror):
    """The default config (schedules dropped: the test must not depend on the time of day),
    a child and a grown-up device, lists fetched through the mirror by `filterd lists update`."""
    default = yaml.safe_load((REPO / "config" / "filterd.yaml").read_text())
    upstream, upstream_port = module_standins()
    dns = {key: value for key, value in default["dns"].items()
           if key not in ("listen", "workers", "rate_limit", "bootstrap", "upstreams")}
    dns["upstreams"] = [f"udp://127.0.0.1:{upstream_port}"]
    extra = {key: value for key, value in default.items() if key not in ("dns", "data_dir", "timezone")}
    extra["lists_mirror"] = mirror
    extra["web"] = {**default["web"], "address": FILTER_ADDRESS}
    extra["profiles"] = {"kids": {"preset": "child"}, "adults": {"preset": "adult"}}
    extra["devices"] = [{"name": "kids-tablet", "ip": CHILD, "profile": "kids"},
                        {"name": "parent-laptop", "ip": GROWN_UP, "profile": "adults"}]
    extra["default_profile"] = "adults"
    daemon = Daemon(tmp_path_factory.mktemp("category-lists"), dns, extra)
    result = subprocess.run([sys.executable, "-m", "filterd", "lists", "update", "--config", str(daemon.config_path)],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    daemon.update = result
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def daemon(updated):
    return updated.start()


def stored_sources(config, category_id: str) -> list:
    """The catalog sources of a category whose files the snapshot holds, with that file."""
    out = []
    for source in config.catalog.categories[category_id].sources:
        files = [MIRROR_DIR / url.split("://", 1)[1] for url in source.urls]
        if files and all(f.is_file() for f in files):
            out.append((source, files))
    return out


def drawn_names(files: list[Path], seed: str) -> list[str]:
    """A fixed sample of a list's names: ones a list may block (not guarded)."""
    domains = set()
    for path in files:
        domains |= parse_list(path.read_bytes()).domains
    candidates = sorted(name for name in domains if list_conflict(name) is None)
    return random.Random(seed).sample(candidates, min(SAMPLE, len(candidates)))


def refused(daemon, name: str, source: str) -> bool:
    """The block page's address came back (blockpage mode), with its Extended DNS Error."""
    reply = daemon.ask(name, "A", source=source, edns=1232)
    return reply.header.rcode == RCODE.NOERROR and \
        [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A] == [FILTER_ADDRESS]


def suffixes(name: str) -> list[str]:
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def test_lists_update_fetches_every_stored_source_through_the_mirror(updated):
    config = load_config(updated.config_path)
    err = updated.update.stderr
    blocked = set(PRESETS["child"]["block_categories"]) | set(PRESETS["adult"]["block_categories"]) | {"csam"}
    assert "Traceback" not in err
    for category_id in blocked:
        for source in config.catalog.categories[category_id].sources:
            addresses = source.urls or ((source.parts.replace("{n}", "0"),) if source.parts else ())
            if not addresses:
                continue
            stored = [(MIRROR_DIR / url.split("://", 1)[1]).is_file() for url in addresses]
            line = next((line for line in err.splitlines() if line.startswith(f"{source.id}")
                         and "downloading" not in line), "")
            if all(stored):
                assert line.startswith((f"{source.id}: updated", f"{source.id}: unchanged")), line
                assert f"{source.id}: " in err and " domains (" in err
            else:
                assert "HTTP 404" in line, line
    # Sources of categories no profile blocks are not downloaded.
    assert "ut1-games" not in err and "ut1-audio-video" not in err
    # The missing sources make the update fail (exit 1) but the rest is compiled.
    assert updated.update.returncode == 1


def test_a_child_is_refused_names_from_every_stored_source_and_a_grown_up_is_not(daemon, capsys):
    config = load_config(daemon.config_path)
    malware = set()
    for source, files in stored_sources(config, "malware"):
        for path in files:
            malware |= parse_list(path.read_bytes()).domains
    malware |= set(config.catalog.categories["malware"].seed_domains)
    figures = []
    for category_id in PRESETS["child"]["block_categories"]:
        stored = stored_sources(config, category_id)
        child_total = child_refused = grown_total = grown_refused = 0
        per_source = []
        for source, files in stored:
            names = drawn_names(files, source.id)
            refused_here = sum(refused(daemon, name, CHILD) for name in names)
            missed = [name for name in names if not refused(daemon, name, CHILD)]
            assert not missed, f"{source.id}: not refused for the child: {missed[:5]}"
            child_total += len(names)
            child_refused += refused_here
            per_source.append(f"{source.id} {refused_here}/{len(names)}")
            if category_id not in PRESETS["adult"]["block_categories"]:
                clean = [name for name in names if not malware.intersection(suffixes(name))]
                wrongly = [name for name in clean if refused(daemon, name, GROWN_UP)]
                assert not wrongly, f"{source.id}: refused for the grown-up: {wrongly[:5]}"
                grown_total += len(clean)
                grown_refused += len(wrongly)
        grown = f"grown-up {grown_refused}/{grown_total} refused" if grown_total else "grown-up blocks it too"
        figures.append(f"  {category_id:16} child {child_refused}/{child_total} refused "
                       f"({', '.join(per_source) or 'no stored source: seed list only'}); {grown}")
    with capsys.disabled():
        print("\nnames drawn from each stored source, asked over UDP:\n" + "\n".join(figures))


def test_no_default_source_blocks_what_every_device_needs_for_the_child_preset(daemon):
    config = load_config(daemon.config_path)
    policy = build_policy(config, compile_if_missing=False)
    now = __import__("datetime").datetime.now(policy.tz)
    for name in sorted(set(NEVER_BLOCKED_BY_LISTS) | ESSENTIAL_DOMAINS):
        for candidate in (name, f"www.{name}"):
            decision = policy_module.decide(policy, "kids", candidate, QTYPE.A, now, "kids-tablet", ())
            assert decision.rule != "category", (candidate, decision.reason)


def test_explain_names_the_list_that_matched(daemon):
    config = load_config(daemon.config_path)
    (source, files), *_ = stored_sources(config, "dating")
    name = drawn_names(files, source.id)[0]
    result = subprocess.run([sys.executable, "-m", "filterd", "explain", name, "--device", "kids-tablet",
                             "--config", str(daemon.config_path)], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert f"list {source.id}" in result.stdout or "list seed-dating" in result.stdout, result.stdout


# ---------------------------------------------------------------- serving through restarts and updates


def test_after_a_restart_the_last_good_index_answers_while_changed_lists_compile(tmp_path, module_standins):
    """The daemon answers at once from the last good index when the lists changed while it was
    down, compiles the new one in the background, and every query meanwhile is answered."""
    big = tmp_path / "big.txt"
    big.write_text("".join(f"site{i}.listed.test\n" for i in range(300_000)))
    _, upstream_port = module_standins()
    daemon = Daemon(tmp_path / "daemon", {"upstreams": [f"udp://127.0.0.1:{upstream_port}"]}, {
        "web": {"address": FILTER_ADDRESS},
        "lists": [{"id": "big", "path": str(big), "category": "gambling"}]
        + [{"id": source.id, "enabled": False} for source in load_config(REPO / "config" / "filterd.yaml")
           .catalog.categories["gambling"].sources],
        "profiles": {"kids": {"block_categories": ["gambling"]}},
        "default_profile": "kids",
    })
    try:
        daemon.start()
        assert refused(daemon, "www.site123.listed.test", "127.0.0.1")
        daemon.terminate()
        with big.open("a") as out:                       # the lists change while it is down
            out.write("".join(f"late{i}.listed.test\n" for i in range(300_000)))
        daemon.start()
        # The first answers come from the last good index: the old names are refused already.
        assert refused(daemon, "www.site123.listed.test", "127.0.0.1")
        answered = []

        def new_names_refused() -> bool:
            reply = daemon.ask("www.site7.listed.test", "A", source="127.0.0.1")
            answered.append(reply.header.rcode == RCODE.NOERROR)
            return refused(daemon, "late299999.listed.test", "127.0.0.1")
        wait_until(new_names_refused, timeout=120, interval=0.05, message="the changed lists to be compiled")
        assert all(answered)
        assert "serving the last good lists" in daemon.stderr()
    finally:
        daemon.stop()


def test_during_an_update_the_daemon_leaves_the_compile_to_it_and_applies_rule_changes_at_once(
        tmp_path, module_standins):
    from filterd.lists import sources

    listed = tmp_path / "mine.txt"
    listed.write_text("old-name.test\n")
    _, upstream_port = module_standins()
    gambling_off = [{"id": source.id, "enabled": False} for source in
                    load_config(REPO / "config" / "filterd.yaml").catalog.categories["gambling"].sources]
    settings = {
        "web": {"address": FILTER_ADDRESS},
        "lists": [{"id": "mine", "path": str(listed), "category": "gambling"}] + gambling_off,
        "profiles": {"kids": {"block_categories": ["gambling"]}},
        "default_profile": "kids",
    }
    daemon = Daemon(tmp_path / "daemon", {"upstreams": [f"udp://127.0.0.1:{upstream_port}"]}, settings)
    try:
        daemon.start()
        assert refused(daemon, "old-name.test", "127.0.0.1")
        config = load_config(daemon.config_path)
        store = sources.lists_dir(config)
        status = sources.UpdateStatus(sources.update_status_path(config), sources.wanted_lists(config))
        try:                                          # an update is running (this process)
            listed.write_text("old-name.test\nnew-name.test\n")
            indexes = sorted(store.glob("index-*.idx"))
            changed = dict(settings, profiles={"kids": {"block_categories": ["gambling"],
                                                        "block": ["rules-change.test"]}})
            daemon.write_config(daemon.config_for({"upstreams": [f"udp://127.0.0.1:{upstream_port}"]}, changed))
            wait_until(lambda: refused(daemon, "rules-change.test", "127.0.0.1"), timeout=20,
                       message="the changed rules to apply during the update")
            assert refused(daemon, "old-name.test", "127.0.0.1")            # the last good index
            assert not refused(daemon, "new-name.test", "127.0.0.1")        # not compiled by the daemon
            assert sorted(store.glob("index-*.idx")) == indexes
            status.compiling()
        finally:
            status.finish({})                         # the update is over (it compiled nothing here)
            status.close()
        wait_until(lambda: refused(daemon, "new-name.test", "127.0.0.1"), timeout=60,
                   message="the daemon to compile the changed list once the update is over")
    finally:
        daemon.stop()
