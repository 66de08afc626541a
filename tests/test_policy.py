"""policy.decide: the order in which rules apply, and what each decision says.

Every test is a pure call to `decide` with a Policy built from the family config
(tests/fixtures/policy/family.yaml) and a small index compiled in a temporary folder from the
fixture lists beside it — no seed lists, so only the names below are listed:

    fx-gambling (domains)  pokerstars.test, casino-royale.test, lucky-casino.test, bet.example
    fx-adult    (hosts)    adult-site.test, cdn.adult-cdn.test
    fx-games    (adblock)  games-portal.test, game-cdn.test, except edu.games-portal.test
    fx-csam     (sha256)   csam-listed.test, hidden-csam.test (hashed)

Profiles: kids (alice-tablet by IP, bob-phone by MAC; child preset, gambling and adult blocked,
TikTok blocked, bedtime Sun–Thu 21:00–07:00 blocking all, homework on weekdays 16:00–18:00
blocking games and YouTube) and teens (carol-laptop; gambling allowed, pokerstars.test on its
own block list, SafeSearch and bypass protection off, YouTube moderate, Friday 23:00–06:00).
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dnslib import QTYPE

from conftest import write_fixture_config
from filterd.rules import policy as policy_module
from filterd.rules.config import ConfigError, load_config
from filterd.lists.domains import parse_list
from filterd.lists.index import DomainIndex, IndexList, compile_index
from filterd.rules.policy import (ALLOW, BLOCK, EDE_BLOCKED, EDE_FILTERED, LOCAL, NXDOMAIN, REWRITE, Override,
                            Policy)

FIXTURES = Path(__file__).parent / "fixtures" / "policy"
LONDON = ZoneInfo("Europe/London")
UTC = datetime.timezone.utc


def at(text: str, fold: int = 0) -> datetime.datetime:
    """'2026-03-03 12:00' as a London wall-clock time (fold=1: the second 01:30 in October)."""
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=LONDON, fold=fold)


# Moments in the first week of March 2026 (GMT): 1 March is a Sunday.
NOON = at("2026-03-03 12:00")              # Tuesday: no schedule runs
BEDTIME = at("2026-03-01 21:30")           # Sunday evening: bedtime (Sun–Thu 21:00–07:00)
SUNDAY_NIGHT = at("2026-03-02 03:00")      # Monday 03:00, inside Sunday's bedtime window
THURSDAY_NIGHT = at("2026-03-06 03:00")    # Friday 03:00, inside Thursday's bedtime window
FRIDAY_NIGHT = at("2026-03-07 03:00")      # Saturday 03:00: Friday has no bedtime (teens: friday-late)
FRIDAY_EVENING = at("2026-03-06 21:30")
HOMEWORK = at("2026-03-03 17:00")          # Tuesday: homework (weekdays 16:00–18:00)
SATURDAY_AFTERNOON = at("2026-03-07 17:00")
WEDNESDAY_NIGHT = at("2026-03-05 03:00")   # Thursday 03:00


def test_the_moments_fall_on_the_days_they_are_named_after():
    days = {NOON: "Tue", BEDTIME: "Sun", SUNDAY_NIGHT: "Mon", THURSDAY_NIGHT: "Fri",
            FRIDAY_NIGHT: "Sat", FRIDAY_EVENING: "Fri", HOMEWORK: "Tue", SATURDAY_AFTERNOON: "Sat",
            WEDNESDAY_NIGHT: "Thu"}
    assert {moment: f"{moment:%a}" for moment in days} == days


def compile_fixture_lists(config, folder: Path) -> DomainIndex:
    """The config's own lists (not the seed lists) compiled into one index file."""
    entries = [IndexList(source.id, source.category, parse_list(Path(source.path).read_bytes(), source.format))
               for source in config.rules.lists]
    path = folder / "index.idx"
    compile_index(entries, path)
    return DomainIndex.open(path)


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Policy:
    folder = tmp_path_factory.mktemp("family")
    config = load_config(write_fixture_config("family.yaml", folder))
    index = compile_fixture_lists(config, folder)
    yield Policy(config.rules, config.catalog, index, config.timezone)
    index.close()


@pytest.fixture(scope="module")
def dst(tmp_path_factory) -> Policy:
    folder = tmp_path_factory.mktemp("dst")
    config = load_config(write_fixture_config("dst.yaml", folder))
    return Policy(config.rules, config.catalog, DomainIndex.empty(), config.timezone)


DEVICE_PROFILES = {"alice-tablet": "kids", "bob-phone": "kids", "carol-laptop": "teens"}


def decide(policy: Policy, name: str, device: str = "alice-tablet", when: datetime.datetime = NOON,
           overrides: tuple[Override, ...] = (), qtype: int = QTYPE.A):
    return policy_module.decide(policy, DEVICE_PROFILES[device], name, qtype, when, device, overrides)


def override(kind: str, subject: str, when: datetime.datetime, minutes: float | None = 30,
             value: str | None = None) -> Override:
    """A pause, allow or bonus for a device (a name with '-') or a profile, ending `minutes`
    after `when` (None: until resumed; negative: already over)."""
    subject_kind = "device" if "-" in subject else "profile"
    until = None if minutes is None else when.timestamp() + minutes * 60
    return Override(kind, subject_kind, subject, until, value)


# ---------------------------------------------------------------- the precedence table

# (what it shows, name, device, moment, overrides as (kind, subject, minutes, value),
#  expected action, rule, and further Decision fields)
TABLE = [
    # 1. csam: above the allow list, temporary allows, pauses and every profile
    ("csam beats the allow list", "csam-listed.test", "alice-tablet", NOON, [], BLOCK, "csam", {}),
    ("csam beats a temporary allow", "csam-listed.test", "alice-tablet", NOON,
     [("allow", "alice-tablet", 30, "csam-listed.test")], BLOCK, "csam", {}),
    ("csam covers subdomains", "www.csam-listed.test", "bob-phone", NOON, [], BLOCK, "csam", {}),
    ("csam for the teens too", "hidden-csam.test", "carol-laptop", NOON, [], BLOCK, "csam", {}),
    ("csam during a pause at bedtime", "hidden-csam.test", "alice-tablet", BEDTIME,
     [("pause", "alice-tablet", 30, None)], BLOCK, "csam", {}),
    # 2. the filter's own web page
    ("filter.home at bedtime", "filter.home", "alice-tablet", BEDTIME, [], LOCAL, "filter_host", {}),
    ("filter.home during a pause", "filter.home", "bob-phone", NOON, [("pause", "kids", None, None)],
     LOCAL, "filter_host", {}),
    ("filter.home for the teens", "filter.home", "carol-laptop", FRIDAY_NIGHT, [], LOCAL, "filter_host", {}),
    ("a device's DoT host name at bedtime", "alice-tablet.filter.home", "alice-tablet", BEDTIME, [], LOCAL,
     "filter_host", {}),
    # 3. the allow list, then temporary allows
    ("allow list beats bedtime", "khanacademy.org", "alice-tablet", BEDTIME, [], ALLOW, "allow_list",
     {"matched": "khanacademy.org"}),
    ("allow list covers subdomains, beats a pause", "www.khanacademy.org", "alice-tablet", NOON,
     [("pause", "alice-tablet", 30, None)], ALLOW, "allow_list", {"matched": "khanacademy.org"}),
    ("allow list beats the block pattern and the category", "lucky-casino.test", "bob-phone", NOON, [],
     ALLOW, "allow_list", {}),
    ("allow list beats the homework schedule", "khanacademy.org", "alice-tablet", HOMEWORK, [], ALLOW,
     "allow_list", {}),
    ("temporary allow for the device", "pokerstars.test", "alice-tablet", NOON,
     [("allow", "alice-tablet", 30, "pokerstars.test")], ALLOW, "temporary_allow", {"matched": "pokerstars.test"}),
    ("temporary allow for another device does not apply", "pokerstars.test", "bob-phone", NOON,
     [("allow", "alice-tablet", 30, "pokerstars.test")], BLOCK, "category", {}),
    ("temporary allow for the profile applies to each of its devices", "www.pokerstars.test", "bob-phone",
     NOON, [("allow", "kids", 30, "pokerstars.test")], ALLOW, "temporary_allow", {}),
    ("temporary allow for a profile does not apply to another profile", "pokerstars.test", "carol-laptop",
     NOON, [("allow", "kids", 30, "pokerstars.test")], BLOCK, "profile_block", {}),
    ("an expired temporary allow does not apply", "pokerstars.test", "alice-tablet", NOON,
     [("allow", "alice-tablet", -1, "pokerstars.test")], BLOCK, "category", {}),
    ("temporary allow of a service covers its domains", "v16.tiktokcdn.com", "alice-tablet", NOON,
     [("allow", "kids", 30, "tiktok")], ALLOW, "temporary_allow", {"matched": "tiktok"}),
    ("temporary allow beats a pause", "example.org", "alice-tablet", NOON,
     [("pause", "alice-tablet", 30, None), ("allow", "alice-tablet", 30, "example.org")], ALLOW,
     "temporary_allow", {}),
    ("temporary allow beats bedtime", "example.org", "alice-tablet", BEDTIME,
     [("allow", "alice-tablet", 30, "example.org")], ALLOW, "temporary_allow", {}),
    # 4. pauses, then schedules
    ("a device pause blocks everything", "example.org", "alice-tablet", NOON,
     [("pause", "alice-tablet", 30, None)], BLOCK, "pause", {}),
    ("a profile pause blocks each of its devices", "example.org", "bob-phone", NOON,
     [("pause", "kids", None, None)], BLOCK, "pause", {"until": None}),
    ("a device pause leaves the other devices alone", "example.org", "bob-phone", NOON,
     [("pause", "alice-tablet", 30, None)], ALLOW, "default", {}),
    ("an expired pause does not apply", "example.org", "alice-tablet", NOON,
     [("pause", "alice-tablet", -1, None)], ALLOW, "default", {}),
    ("pause beats bedtime", "example.org", "alice-tablet", BEDTIME, [("pause", "alice-tablet", 30, None)],
     BLOCK, "pause", {}),
    ("pause beats the profile's block list", "example.com", "alice-tablet", NOON,
     [("pause", "alice-tablet", 30, None)], BLOCK, "pause", {}),
    ("bonus time does not lift a pause", "example.org", "alice-tablet", BEDTIME,
     [("pause", "alice-tablet", 30, None), ("bonus", "alice-tablet", 30, None)], BLOCK, "pause", {}),
    ("bedtime blocks everything", "example.org", "alice-tablet", BEDTIME, [], BLOCK, "schedule",
     {"schedule": "bedtime"}),
    ("bedtime beats the category", "pokerstars.test", "bob-phone", BEDTIME, [], BLOCK, "schedule", {}),
    ("bedtime beats SafeSearch", "www.google.com", "alice-tablet", BEDTIME, [], BLOCK, "schedule", {}),
    ("bedtime lets the schedule's own allow list through", "homework-help.test", "alice-tablet", BEDTIME,
     [], ALLOW, "default", {}),
    ("Sunday's bedtime still runs on Monday at 03:00", "example.org", "alice-tablet", SUNDAY_NIGHT, [],
     BLOCK, "schedule", {"schedule": "bedtime"}),
    ("Thursday's bedtime still runs on Friday at 03:00", "example.org", "alice-tablet", THURSDAY_NIGHT, [],
     BLOCK, "schedule", {}),
    ("no bedtime on Friday night, so Saturday 03:00 is free", "example.org", "alice-tablet", FRIDAY_NIGHT,
     [], ALLOW, "default", {}),
    ("no bedtime on Friday evening", "example.org", "alice-tablet", FRIDAY_EVENING, [], ALLOW, "default", {}),
    ("bedtime ends at 07:00", "example.org", "alice-tablet", at("2026-03-02 07:00"), [], ALLOW, "default", {}),
    ("bedtime still runs at 06:59", "example.org", "alice-tablet", at("2026-03-02 06:59"), [], BLOCK,
     "schedule", {}),
    ("bedtime starts at 21:00", "example.org", "alice-tablet", at("2026-03-01 21:00"), [], BLOCK,
     "schedule", {}),
    ("bedtime has not started at 20:59", "example.org", "alice-tablet", at("2026-03-01 20:59"), [], ALLOW,
     "default", {}),
    ("bonus time for the device lifts bedtime", "example.org", "alice-tablet", BEDTIME,
     [("bonus", "alice-tablet", 30, None)], ALLOW, "default", {}),
    ("bonus time for the profile lifts bedtime", "example.org", "bob-phone", BEDTIME,
     [("bonus", "kids", 30, None)], ALLOW, "default", {}),
    ("bonus time lifts the schedule, not the category", "pokerstars.test", "alice-tablet", BEDTIME,
     [("bonus", "alice-tablet", 30, None)], BLOCK, "category", {}),
    ("expired bonus time lifts nothing", "example.org", "alice-tablet", BEDTIME,
     [("bonus", "alice-tablet", -1, None)], BLOCK, "schedule", {}),
    ("homework blocks the games category (from a list)", "games-portal.test", "alice-tablet", HOMEWORK, [],
     BLOCK, "schedule", {"schedule": "homework", "category": "games"}),
    ("homework blocks the YouTube service instead of restricting it", "www.youtube.com", "bob-phone",
     HOMEWORK, [], BLOCK, "schedule", {"schedule": "homework", "service": "youtube"}),
    ("homework blocks every YouTube domain", "r3.googlevideo.com", "alice-tablet", HOMEWORK, [], BLOCK,
     "schedule", {"service": "youtube"}),
    ("homework follows the games list's exception", "edu.games-portal.test", "alice-tablet", HOMEWORK, [],
     ALLOW, "default", {}),
    ("homework leaves other names alone", "example.org", "alice-tablet", HOMEWORK, [], ALLOW, "default", {}),
    ("homework does not hide the profile's categories", "pokerstars.test", "alice-tablet", HOMEWORK, [],
     BLOCK, "category", {}),
    ("games are allowed outside homework", "games-portal.test", "alice-tablet", NOON, [], ALLOW, "default", {}),
    ("homework is on weekdays only", "games-portal.test", "alice-tablet", SATURDAY_AFTERNOON, [], ALLOW,
     "default", {}),
    ("bonus time lifts homework", "games-portal.test", "alice-tablet", HOMEWORK,
     [("bonus", "alice-tablet", 30, None)], ALLOW, "default", {}),
    ("the teens' Friday window runs on Saturday at 03:00", "example.org", "carol-laptop", FRIDAY_NIGHT, [],
     BLOCK, "schedule", {"schedule": "friday-late"}),
    ("a Friday-only window does not block Thursday 03:00", "example.org", "carol-laptop", WEDNESDAY_NIGHT, [],
     ALLOW, "default", {}),
    ("a Friday-only window does not block Friday 03:00", "example.org", "carol-laptop", THURSDAY_NIGHT, [],
     ALLOW, "default", {}),
    ("kids' bedtime does not apply to the teens", "example.org", "carol-laptop", BEDTIME, [], ALLOW,
     "default", {}),
    # 5. the profile's own block list
    ("block list", "example.com", "alice-tablet", NOON, [], BLOCK, "profile_block", {"matched": "example.com"}),
    ("block list covers subdomains", "www.example.com", "bob-phone", NOON, [], BLOCK, "profile_block",
     {"matched": "example.com"}),
    ("a look-alike is not a subdomain", "notexample.com", "alice-tablet", NOON, [], ALLOW, "default", {}),
    ("a name that merely contains the domain", "example.com.other.test", "alice-tablet", NOON, [], ALLOW,
     "default", {}),
    ("block list beats the category", "casino-royale.test", "alice-tablet", NOON, [], BLOCK, "profile_block",
     {"matched": "*casino*"}),
    ("wildcard pattern", "www.online-casino.test", "alice-tablet", NOON, [], BLOCK, "profile_block",
     {"matched": "*casino*"}),
    ("the teens' block list", "pokerstars.test", "carol-laptop", NOON, [], BLOCK, "profile_block", {}),
    ("the kids' pattern is not the teens'", "www.online-casino.test", "carol-laptop", NOON, [], ALLOW,
     "default", {}),
    # 6. bypass protection, categories (lists), services
    ("category from a domains list", "pokerstars.test", "alice-tablet", NOON, [], BLOCK, "category",
     {"category": "gambling", "list_id": "fx-gambling", "matched": "pokerstars.test"}),
    ("category covers subdomains", "www.pokerstars.test", "bob-phone", NOON, [], BLOCK, "category",
     {"matched": "pokerstars.test"}),
    ("a longer name is not a listed one", "xpokerstars.test", "alice-tablet", NOON, [], ALLOW, "default", {}),
    ("a listed name inside another is not a suffix", "pokerstars.test.example.org", "alice-tablet", NOON, [],
     ALLOW, "default", {}),
    ("category from a hosts list", "img.cdn.adult-cdn.test", "alice-tablet", NOON, [], BLOCK, "category",
     {"category": "adult", "list_id": "fx-adult", "matched": "cdn.adult-cdn.test"}),
    ("the teens block adult too", "adult-site.test", "carol-laptop", NOON, [], BLOCK, "category",
     {"category": "adult"}),
    ("the teens' categories override their preset: gambling allowed", "casino-royale.test", "carol-laptop",
     NOON, [], ALLOW, "default", {}),
    ("service domain", "tiktok.com", "alice-tablet", NOON, [], BLOCK, "service", {"service": "tiktok"}),
    ("service covers subdomains of each of its domains", "v16-webapp.tiktokcdn.com", "bob-phone", NOON, [],
     BLOCK, "service", {"service": "tiktok", "matched": "tiktokcdn.com"}),
    ("a service look-alike", "nottiktok.com", "alice-tablet", NOON, [], ALLOW, "default", {}),
    ("the teens do not block TikTok", "www.tiktok.com", "carol-laptop", NOON, [], ALLOW, "default", {}),
    ("Firefox's DoH canary", "use-application-dns.net", "alice-tablet", NOON, [], NXDOMAIN, "bypass", {}),
    ("iCloud Private Relay canary", "mask.icloud.com", "bob-phone", NOON, [], NXDOMAIN, "bypass", {}),
    ("iCloud Private Relay HTTP/2 canary", "mask-h2.icloud.com", "alice-tablet", NOON, [], NXDOMAIN, "bypass", {}),
    ("no bypass protection for the teens", "use-application-dns.net", "carol-laptop", NOON, [], ALLOW,
     "default", {}),
    ("no bypass protection for the teens (iCloud)", "mask.icloud.com", "carol-laptop", NOON, [], ALLOW,
     "default", {}),
    # 7. SafeSearch and YouTube
    ("Google is rewritten to its safe host", "www.google.com", "alice-tablet", NOON, [], REWRITE,
     "safesearch", {"target": "forcesafesearch.google.com"}),
    ("bare google.com too", "google.com", "alice-tablet", NOON, [], REWRITE, "safesearch",
     {"target": "forcesafesearch.google.com"}),
    ("Google's country domains", "www.google.co.uk", "bob-phone", NOON, [], REWRITE, "safesearch",
     {"target": "forcesafesearch.google.com"}),
    ("another country domain", "google.de", "alice-tablet", NOON, [], REWRITE, "safesearch",
     {"target": "forcesafesearch.google.com"}),
    ("other Google hosts are not rewritten", "mail.google.com", "alice-tablet", NOON, [], ALLOW, "default", {}),
    ("no SafeSearch for the teens", "www.google.com", "carol-laptop", NOON, [], ALLOW, "default", {}),
    ("an engine without a safe mode is blocked", "www.ecosia.org", "alice-tablet", NOON, [], BLOCK,
     "safesearch", {"matched": "ecosia.org"}),
    ("engines without a safe mode are fine without SafeSearch", "www.ecosia.org", "carol-laptop", NOON, [],
     ALLOW, "default", {}),
    ("YouTube strict", "www.youtube.com", "alice-tablet", NOON, [], REWRITE, "safesearch",
     {"target": "restrict.youtube.com"}),
    ("YouTube strict, mobile site", "m.youtube.com", "bob-phone", NOON, [], REWRITE, "safesearch",
     {"target": "restrict.youtube.com"}),
    ("YouTube strict, app API", "youtubei.googleapis.com", "alice-tablet", NOON, [], REWRITE, "safesearch",
     {"target": "restrict.youtube.com"}),
    ("YouTube moderate", "www.youtube.com", "carol-laptop", NOON, [], REWRITE, "safesearch",
     {"target": "restrictmoderate.youtube.com"}),
    # 8. the rest
    ("anything else is allowed", "example.org", "alice-tablet", NOON, [], ALLOW, "default", {}),
    ("anything else, teens", "example.org", "carol-laptop", NOON, [], ALLOW, "default", {}),
]


@pytest.mark.parametrize("shows, name, device, when, changes, action, rule, fields", TABLE,
                         ids=[row[0] for row in TABLE])
def test_precedence(family, shows, name, device, when, changes, action, rule, fields):
    overrides = tuple(override(kind, subject, when, minutes, value) for kind, subject, minutes, value in changes)
    decision = decide(family, name, device, when, overrides)
    assert (decision.action, decision.rule) == (action, rule), decision.reason
    for field, expected in fields.items():
        assert getattr(decision, field) == expected, f"{field}: {decision}"
    # Every decision holds at most until the next minute boundary.
    assert decision.valid_until <= (when.timestamp() // 60 + 1) * 60


def test_every_record_type_gets_the_same_decision(family):
    for qtype in (QTYPE.A, QTYPE.AAAA, QTYPE.HTTPS, QTYPE.MX, QTYPE.TXT, QTYPE.ANY):
        decision = decide(family, "pokerstars.test", qtype=qtype)
        assert (decision.action, decision.rule) == (BLOCK, "category")


# ---------------------------------------------------------------- what a decision says


def test_csam_decision_never_reveals_the_matched_name(family):
    for name in ("csam-listed.test", "www.csam-listed.test", "hidden-csam.test"):
        decision = decide(family, name, overrides=(override("allow", "alice-tablet", NOON, value=name),))
        assert decision.matched is None
        assert decision.list_id is None
        assert decision.category == "csam"
        assert "csam-listed" not in decision.reason and "hidden-csam" not in decision.reason
        assert ".test" not in decision.reason
        assert decision.ede == EDE_BLOCKED


def test_category_reason_names_category_list_and_listed_name(family):
    decision = decide(family, "www.pokerstars.test")
    assert decision.reason == "category Gambling (list fx-gambling, pokerstars.test)"


def test_schedule_reason_names_the_schedule_and_its_end(family):
    decision = decide(family, "example.org", when=BEDTIME)
    assert decision.reason == "bedtime: the internet is off until 07:00"
    assert decision.until.timestamp() == at("2026-03-02 07:00").timestamp()


def test_schedules_wait_while_the_clock_reads_before_its_floor_but_lists_still_block(family):
    """A Pi booted at 1970 (a Thursday: 03:00 is inside Wednesday's bedtime) with a floor set:
    no bedtime computed from a wrong clock; categories block as ever. Once the clock reads past
    the floor, bedtime is back."""
    unset = datetime.datetime(1970, 1, 1, 2, 0, tzinfo=UTC)    # 03:00 in London (BST all year then)
    floored = Policy(family.rules, family.catalog, family.index, "Europe/London", clock_floor=BEDTIME.timestamp() - 60)
    assert decide(family, "example.org", when=unset).rule == "schedule"            # no floor: any clock
    assert decide(floored, "example.org", when=unset).action == ALLOW
    assert decide(floored, "www.pokerstars.test", when=unset).rule == "category"
    assert decide(floored, "example.org", when=BEDTIME).rule == "schedule"


def test_schedule_block_list_reason_names_what_is_off(family):
    decision = decide(family, "games-portal.test", when=HOMEWORK)
    assert decision.reason == "homework: Games is off until 18:00"
    assert decision.until.timestamp() == at("2026-03-03 18:00").timestamp()


def test_friday_window_until_is_saturday_morning(family):
    decision = decide(family, "example.org", "carol-laptop", FRIDAY_NIGHT)
    assert decision.until.timestamp() == at("2026-03-07 06:00").timestamp()


def test_temporary_allow_says_until_when(family):
    decision = decide(family, "pokerstars.test", overrides=(override("allow", "alice-tablet", NOON, 90,
                                                                      "pokerstars.test"),))
    assert decision.until.timestamp() == NOON.timestamp() + 90 * 60
    assert decision.reason == "allowed for now (pokerstars.test) until 13:30"


def test_pause_until_is_the_latest_end_or_none_when_one_is_open_ended(family):
    two = (override("pause", "alice-tablet", NOON, 10), override("pause", "kids", NOON, 45))
    decision = decide(family, "example.org", overrides=two)
    assert decision.until.timestamp() == NOON.timestamp() + 45 * 60
    assert decision.reason == "internet paused for this device until 12:45"
    open_ended = two + (override("pause", "kids", NOON, None),)
    decision = decide(family, "example.org", overrides=open_ended)
    assert decision.until is None
    assert decision.reason == "internet paused for this device until resumed"


# ---------------------------------------------------------------- EDE codes per rule kind

EDE_TABLE = [
    ("csam", "hidden-csam.test", NOON, (), EDE_BLOCKED),
    ("category", "pokerstars.test", NOON, (), EDE_BLOCKED),
    ("service", "tiktok.com", NOON, (), EDE_BLOCKED),
    ("bypass", "use-application-dns.net", NOON, (), EDE_BLOCKED),
    ("schedule", "example.org", BEDTIME, (), EDE_FILTERED),
    ("schedule", "games-portal.test", HOMEWORK, (), EDE_FILTERED),
    ("pause", "example.org", NOON, (("pause", "alice-tablet"),), EDE_FILTERED),
    ("profile_block", "example.com", NOON, (), EDE_FILTERED),
    ("profile_block", "www.online-casino.test", NOON, (), EDE_FILTERED),
    ("allow_list", "khanacademy.org", NOON, (), None),
    ("default", "example.org", NOON, (), None),
    ("safesearch", "www.google.com", NOON, (), None),
    ("filter_host", "filter.home", NOON, (), None),
]


@pytest.mark.parametrize("rule, name, when, changes, ede", EDE_TABLE,
                         ids=[f"{row[0]}-{row[1]}" for row in EDE_TABLE])
def test_ede_code_follows_the_kind_of_rule(family, rule, name, when, changes, ede):
    overrides = tuple(override(kind, subject, when) for kind, subject in changes)
    decision = decide(family, name, when=when, overrides=overrides)
    assert decision.rule == rule
    assert decision.ede == ede


# ---------------------------------------------------------------- how long a decision holds


def test_valid_until_is_the_next_minute_boundary(family):
    moment = at("2026-03-03 12:34") + datetime.timedelta(seconds=56.5)
    for name in ("example.org", "pokerstars.test", "www.google.com", "khanacademy.org"):
        assert decide(family, name, when=moment).valid_until == at("2026-03-03 12:35").timestamp()


def test_valid_until_is_never_later_than_an_override_expiry(family):
    moment = at("2026-03-03 12:34") + datetime.timedelta(seconds=10)
    soon = Override("allow", "device", "alice-tablet", moment.timestamp() + 20, "pokerstars.test")
    decision = decide(family, "pokerstars.test", when=moment, overrides=(soon,))
    assert decision.rule == "temporary_allow"
    assert decision.valid_until == moment.timestamp() + 20
    # Also for a decision the override does not (yet) change: the memo must not outlive it.
    pause_ending = Override("pause", "device", "alice-tablet", moment.timestamp() + 5)
    assert decide(family, "example.org", when=moment, overrides=(pause_ending,)).valid_until == \
        moment.timestamp() + 5


def test_an_override_ending_after_the_minute_does_not_extend_validity(family):
    moment = at("2026-03-03 12:34")
    later = Override("pause", "device", "alice-tablet", moment.timestamp() + 3600)
    assert decide(family, "example.org", when=moment, overrides=(later,)).valid_until == \
        at("2026-03-03 12:35").timestamp()


def test_an_expired_override_does_not_shorten_validity(family):
    moment = at("2026-03-03 12:34")
    gone = Override("pause", "device", "alice-tablet", moment.timestamp() - 10)
    assert decide(family, "example.org", when=moment, overrides=(gone,)).valid_until == \
        at("2026-03-03 12:35").timestamp()


# ---------------------------------------------------------------- daylight-saving days (Europe/London)


def decide_dst(dst: Policy, profile: str, when: datetime.datetime):
    return policy_module.decide(dst, profile, "example.org", QTYPE.A, when)


SPRING = [  # Saturday 28 March 21:00 GMT → Sunday 29 March 07:00 BST
    ("2026-03-28 20:59", 0, ALLOW),
    ("2026-03-28 21:00", 0, BLOCK),
    ("2026-03-29 00:59", 0, BLOCK),     # the last GMT minute
    ("2026-03-29 02:00", 0, BLOCK),     # the first BST minute
    ("2026-03-29 06:59", 0, BLOCK),
    ("2026-03-29 07:00", 0, ALLOW),
    ("2026-03-29 19:59", 0, ALLOW),     # Sunday evening window, in BST
    ("2026-03-29 20:00", 0, BLOCK),
    ("2026-03-29 22:00", 0, ALLOW),
]
AUTUMN = [  # Saturday 24 October 21:00 BST → Sunday 25 October 07:00 GMT
    ("2026-10-24 20:59", 0, ALLOW),
    ("2026-10-24 21:00", 0, BLOCK),
    ("2026-10-25 01:30", 0, BLOCK),     # the first 01:30 (BST)
    ("2026-10-25 01:30", 1, BLOCK),     # the second 01:30 (GMT)
    ("2026-10-25 06:59", 0, BLOCK),
    ("2026-10-25 07:00", 0, ALLOW),
    ("2026-10-25 19:59", 0, ALLOW),
    ("2026-10-25 20:00", 0, BLOCK),
    ("2026-10-25 22:00", 0, ALLOW),
]


@pytest.mark.parametrize("text, fold, action", SPRING + AUTUMN,
                         ids=[f"{text}{' (second)' if fold else ''}" for text, fold, _ in SPRING + AUTUMN])
def test_schedules_follow_the_wall_clock_on_dst_days(dst, text, fold, action):
    assert decide_dst(dst, "night", at(text, fold)).action == action


def test_spring_forward_night_ends_at_0700_bst_after_nine_hours(dst):
    decision = decide_dst(dst, "night", at("2026-03-29 03:00"))
    assert decision.until.astimezone(UTC) == datetime.datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    assert decision.until.timestamp() - at("2026-03-28 21:00").timestamp() == 9 * 3600
    assert decision.reason == "saturday-night: the internet is off until 07:00"


def test_fall_back_night_ends_at_0700_gmt_after_eleven_hours(dst):
    decision = decide_dst(dst, "night", at("2026-10-25 01:30", fold=1))
    assert decision.until.astimezone(UTC) == datetime.datetime(2026, 10, 25, 7, 0, tzinfo=UTC)
    assert decision.until.timestamp() - at("2026-10-24 21:00").timestamp() == 11 * 3600
    assert decision.reason == "saturday-night: the internet is off until 07:00"


def test_decisions_hold_one_minute_on_dst_days(dst):
    moment = datetime.datetime(2026, 3, 29, 0, 59, 30, tzinfo=UTC)   # 30 s before the clocks jump
    decision = decide_dst(dst, "night", moment.astimezone(LONDON))
    assert decision.valid_until == datetime.datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()


def first_allowed_minute(policy: Policy, profile: str, start: datetime.datetime) -> datetime.datetime:
    moment = start
    for _ in range(24 * 60):
        if decide_dst(policy, profile, moment).action == ALLOW:
            return moment
        moment = (moment.astimezone(UTC) + datetime.timedelta(minutes=1)).astimezone(LONDON)
    raise AssertionError("still blocked a day later")


def test_fall_back_window_ending_in_the_repeated_hour_ends_at_its_first_occurrence(dst):
    decision = decide_dst(dst, "film", at("2026-10-25 00:30"))
    assert decision.action == BLOCK
    assert first_allowed_minute(dst, "film", at("2026-10-25 00:30")).astimezone(UTC) == \
        datetime.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)   # 01:30 BST


def test_window_ending_in_the_spring_forward_gap_says_when_it_really_ends(dst):
    moment = at("2026-03-29 00:45")
    decision = decide_dst(dst, "film", moment)
    shown = re.search(r"until (\d\d:\d\d)", decision.reason).group(1)
    assert shown == f"{first_allowed_minute(dst, 'film', moment):%H:%M}"


# ---------------------------------------------------------------- a schedule starting at 24:00


def test_a_schedule_starting_at_2400_is_refused_or_decided(tmp_path):
    path = tmp_path / "late.yaml"
    path.write_text(f"""
timezone: Europe/London
data_dir: {tmp_path / 'var'}
dns: {{upstreams: ["udp://127.0.0.1:53"]}}
profiles:
  kids: {{schedules: [{{name: late, days: [mon], start: "24:00", end: "07:00"}}]}}
""")
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert any(p.startswith("profiles.kids.schedules[0].start:") for p in exc.problems)
        return
    policy = Policy(config.rules, config.catalog, DomainIndex.empty(), config.timezone)
    decision = policy_module.decide(policy, "kids", "example.org", QTYPE.A, at("2026-03-02 12:00"))
    assert decision.action in (ALLOW, BLOCK)
