"""filterd.family.site_opening: what an approval opens — a service's domains, or the site and its
companions (curated, and the names the same device was refused around its request), over a real
state DB with real query-log rows."""
from __future__ import annotations

import pytest

from filterd.family import site_opening
from filterd.rules.config import parse_config, read_yaml
from filterd.store import state

NOW = 1_790_000_000.0

CONFIG = """
timezone: Europe/London
data_dir: /tmp/unused
dns: {upstreams: ["udp://127.0.0.1:1"]}
profiles:
  kids: {preset: child}
devices:
  - {name: tablet, ip: 192.168.1.23, profile: kids}
  - {name: laptop, ip: 192.168.1.24, profile: kids}
default_profile: kids
"""


@pytest.fixture
def config():
    data, lines = read_yaml(CONFIG)
    return parse_config(data, lines)


@pytest.fixture
def db(tmp_path):
    conn = state.connect(tmp_path / "state.db")
    yield conn
    conn.close()


def refused(db, name, category, device="tablet", ts=NOW - 5, rule="category"):
    db.execute("INSERT INTO queries (ts, device, client, name, qtype, action, rule, reason, category)"
               " VALUES (?, ?, '192.168.1.23', ?, 1, 'block', ?, 'blocked', ?)", (ts, device, name, rule, category))


def test_a_name_of_a_catalog_service_opens_the_whole_service(config, db):
    opening = site_opening.plan(config, db, "www.reddit.com", "reddit.com", device="tablet", around=NOW)
    assert (opening.opens, opening.service, opening.companions) == ("reddit", "reddit", ())
    assert site_opening.plan(config, db, "i.ytimg.com", "i.ytimg.com").opens == "youtube"


def test_a_curated_site_brings_its_companions_ticked(config, db):
    opening = site_opening.plan(config, db, "games.poki.com", "games.poki.com", device="tablet", around=NOW)
    assert opening.opens == "poki.com" and opening.service is None
    assert opening.ticked() == ["poki-cdn.com", "poki-gdn.com"]


def test_names_refused_around_the_request_are_offered_ticked_when_blocked_for_the_same_reason(config, db):
    refused(db, "www.gamesite.example", "games")
    for name in ("cdn.gamesite-static.example", "img.gamesite-static.example", "api.gamehost.example"):
        refused(db, name, "games")
    refused(db, "ads.tracker.example", "ads")                         # another reason: offered, not ticked
    refused(db, "pics.adultsite.example", "adult")                    # stronger: offered, never ticked
    refused(db, "abuse.example", "csam")                              # never offered at all
    refused(db, "late.games.example", "games", ts=NOW - 120)           # outside the window
    refused(db, "cdn.other-device.example", "games", device="laptop")  # another device's
    opening = site_opening.plan(config, db, "www.gamesite.example", "www.gamesite.example",
                                device="tablet", around=NOW)
    offered = {c.domain: c.ticked for c in opening.companions}
    assert opening.opens == "gamesite.example"
    assert offered == {"gamesite-static.example": True, "gamehost.example": True, "tracker.example": False,
                       "adultsite.example": False}
    assert opening.companions[0].why == "refused 2 times around the request (games)"
