"""Access requests in a real state DB: merging, the hourly limit, the decline cool-down, and
approvals that become the same overrides the daemon reads."""
from __future__ import annotations

import pytest

from filterd.family import access_requests
from filterd.store import overrides, state
from filterd.family.access_requests import RequestError, RequestRefused
from filterd.rules.config import parse_config, read_yaml
from filterd.rules.policy import Decision

NOW = 1_790_000_000.0

CONFIG = """
timezone: Europe/London
data_dir: /tmp/unused
dns: {upstreams: ["udp://127.0.0.1:1"]}
profiles:
  kids: {preset: child, block: [games.example]}
  adults: {preset: adult}
devices:
  - {name: tablet, ip: 192.168.1.23, profile: kids}
  - {name: laptop, ip: 192.168.1.24, profile: kids}
default_profile: kids
"""

CATEGORY = Decision("block", "category", "category Games (list ut1-games, games.example)", category="games",
                    matched="games.example")
PROFILE_BLOCK = Decision("block", "profile_block", "blocked by the kids profile's block list (games.example)",
                         matched="games.example")
SERVICE = Decision("block", "service", "service TikTok (tiktok.com)", service="tiktok", matched="tiktok.com")
SCHEDULE = Decision("block", "schedule", "bedtime: the internet is off until 07:00", schedule="bedtime")
PAUSE = Decision("block", "pause", "internet paused for this device")


@pytest.fixture
def config():
    data, lines = read_yaml(CONFIG)
    return parse_config(data, lines)


@pytest.fixture
def db(tmp_path):
    conn = state.connect(tmp_path / "state.db")
    yield conn
    conn.close()


def ask(db, domain="www.games.example", device="tablet", decision=PROFILE_BLOCK, message="", now=NOW,
        client="192.168.1.23"):
    return access_requests.submit(db, device=device, domain=domain, decision=decision, reason="blocked",
                                  message=message, client=client, now=now)


def test_asking_again_for_the_same_site_merges_into_the_pending_request(db):
    first, new = ask(db, message="for homework")
    assert new and first.status == "pending" and first.asks == 1
    again, new = ask(db, message="please, it is for school", now=NOW + 60)
    assert not new and again.id == first.id
    assert again.asks == 2 and again.message == "please, it is for school" and again.updated == NOW + 60
    kept, _ = ask(db, message="", now=NOW + 120)
    assert kept.message == "please, it is for school"   # an empty ask keeps the words already given
    assert len(access_requests.pending(db)) == 1


def test_eleventh_new_request_within_an_hour_is_refused_until_the_first_is_an_hour_old(db):
    for number in range(access_requests.MAX_PER_HOUR):
        ask(db, domain=f"site{number}.example", now=NOW + number)
    with pytest.raises(RequestRefused) as refused:
        ask(db, domain="one-more.example", now=NOW + 100)
    assert refused.value.retry_at == NOW + 3600
    ask(db, domain="site3.example", now=NOW + 200)       # a merge is not a new request
    _, new = ask(db, domain="one-more.example", now=NOW + 3601)
    assert new
    ask(db, domain="other.example", device="laptop", now=NOW + 100)   # another device has its own limit


def test_after_a_decline_the_same_device_waits_an_hour_for_that_site_only(db):
    item, _ = ask(db)
    access_requests.decline(db, item.id, "ask me after homework", NOW + 10, "web UI")
    with pytest.raises(RequestRefused) as refused:
        ask(db, now=NOW + 20)
    assert refused.value.retry_at == NOW + 10 + access_requests.DECLINE_COOLDOWN_S
    ask(db, domain="other.example", now=NOW + 20)                     # another site: fine
    ask(db, device="laptop", client="192.168.1.24", now=NOW + 20)     # another device: fine
    again, new = ask(db, now=NOW + 10 + access_requests.DECLINE_COOLDOWN_S + 1)
    assert new and again.id != item.id


def test_approval_for_an_hour_is_a_temporary_allow_of_the_listed_domain_for_that_device(db, config):
    item, _ = ask(db, domain="www.games.example", decision=CATEGORY)
    assert item.unblocks == "games.example"     # the listed domain: its sub-domains open too
    approved = access_requests.approve(db, config, item.id, NOW + 3600, NOW, "web UI")
    assert approved.status == "approved" and approved.until == NOW + 3600 and approved.decided_by == "web UI"
    active = overrides.active(db, NOW + 1)
    assert [(o.kind, o.subject_kind, o.subject, o.value, o.until) for o in active] == \
        [("allow", "device", "tablet", "games.example", NOW + 3600)]
    assert overrides.active(db, NOW + 3601) == ()
    assert ("web UI", "approve") in [(a, b) for a, b in db.execute("SELECT actor, action FROM audit")]


def test_a_blocked_service_is_approved_as_the_service_and_bedtime_as_more_time(db, config):
    tiktok, _ = ask(db, domain="www.tiktok.com", decision=SERVICE)
    bedtime, _ = ask(db, domain="minecraft.net", decision=SCHEDULE)
    assert tiktok.unblocks == "tiktok" and not tiktok.more_time
    assert bedtime.unblocks == access_requests.SCHEDULES and bedtime.more_time
    access_requests.approve(db, config, tiktok.id, NOW + 900, NOW, "api")
    access_requests.approve(db, config, bedtime.id, NOW + 900, NOW, "api")
    kinds = {(o.kind, o.value) for o in overrides.active(db, NOW + 1)}
    assert kinds == {("allow", "tiktok"), ("bonus", None)}


def test_an_answered_request_cannot_be_answered_again_and_nothing_more_is_allowed(db, config):
    item, _ = ask(db)
    access_requests.decline(db, item.id, "", NOW, "web UI")
    with pytest.raises(RequestError, match="already declined"):
        access_requests.approve(db, config, item.id, NOW + 3600, NOW, "web UI")
    with pytest.raises(RequestError, match="no request 999"):
        access_requests.decline(db, 999, "", NOW, "web UI")
    assert overrides.active(db, NOW + 1) == ()


def test_an_unnamed_device_is_answered_through_the_default_profile_and_known_by_its_address(db, config):
    item, _ = ask(db, device="", client="192.168.1.77")
    assert access_requests.latest(db, "", "192.168.1.77", "www.games.example").id == item.id
    assert access_requests.latest(db, "", "192.168.1.78", "www.games.example") is None
    assert access_requests.subject_name(config, item) == "kids"
    access_requests.approve(db, config, item.id, NOW + 60, NOW, "web UI")
    assert [(o.subject_kind, o.subject) for o in overrides.active(db, NOW)] == [("profile", "kids")]


def test_what_an_approval_lets_through():
    assert access_requests.unblocks_for(PAUSE, "www.wikipedia.org") == "wikipedia.org"
    assert access_requests.unblocks_for(PAUSE, "www.org") == "www.org"       # not a bare suffix
    assert access_requests.unblocks_for(CATEGORY, "cdn.games.example") == "games.example"
    wildcard = Decision("block", "profile_block", "x", matched="*.games.example")
    assert access_requests.unblocks_for(wildcard, "a.games.example") == "a.games.example"
    unrelated = Decision("block", "category", "x", category="games", matched="other.example")
    assert access_requests.unblocks_for(unrelated, "games.example") == "games.example"


def test_messages_lose_control_and_direction_characters_and_are_capped(db):
    item, _ = ask(db, message="hi\x00 there\u202e\n\nplease" + "x" * 500)
    assert item.message.startswith("hi there please")
    assert len(item.message) == access_requests.MESSAGE_MAX
    assert "\u202e" not in item.message and "\x00" not in item.message


def test_until_tonight_is_the_next_local_midnight():
    import datetime
    from zoneinfo import ZoneInfo
    evening = datetime.datetime(2026, 11, 25, 18, 30, tzinfo=ZoneInfo("Europe/London")).timestamp()
    midnight = datetime.datetime(2026, 11, 26, 0, 0, tzinfo=ZoneInfo("Europe/London")).timestamp()
    assert access_requests.tonight(evening, "Europe/London") == midnight


def test_until_bedtime_and_until_morning_follow_the_childs_own_bedtime():
    """Approved at 02:38 "until the morning" lasts until 07:00 that day, not 21 hours; "until
    bedtime" is the child's next all-blocking schedule, on the day it next starts."""
    import datetime
    from zoneinfo import ZoneInfo
    tz = ZoneInfo("Europe/London")
    data, lines = read_yaml(CONFIG.replace(
        "kids: {preset: child, block: [games.example]}",
        "kids: {preset: child, schedules: [{name: bedtime, days: [sun, mon, tue, wed, thu], start: '20:30',"
        " end: '06:45', block: all}, {name: homework, days: [mon], start: '16:00', end: '18:00', block: [games]}]}"))
    family = parse_config(data, lines)
    from types import SimpleNamespace
    request = SimpleNamespace(device="tablet")       # approval_ends reads who asked, nothing else

    def at(*when):
        return datetime.datetime(*when, tzinfo=tz).timestamp()
    small_hours = access_requests.approval_ends(family, request, at(2026, 11, 24, 2, 38))      # a Tuesday
    assert small_hours == {"bedtime": at(2026, 11, 24, 20, 30), "morning": at(2026, 11, 24, 6, 45)}
    friday = access_requests.approval_ends(family, request, at(2026, 11, 27, 17, 0))
    assert friday == {"bedtime": at(2026, 11, 29, 20, 30), "morning": at(2026, 11, 28, 6, 45)}
    laptop = access_requests.approval_ends(family, SimpleNamespace(device="laptop"), at(2026, 11, 24, 19, 0))
    assert laptop == {"bedtime": at(2026, 11, 24, 20, 30), "morning": at(2026, 11, 25, 6, 45)}
    data, lines = read_yaml(CONFIG)
    no_bedtime = access_requests.approval_ends(parse_config(data, lines), request, at(2026, 11, 24, 19, 0))
    assert no_bedtime == {"morning": at(2026, 11, 25, 7, 0)}
