"""filterd.store.overrides: pause, resume, temporary allow and bonus time, over a real state DB file.

Every test injects `now` (epoch seconds in the house's time zone, Europe/London), so nothing
here depends on the clock of the machine running the tests.
"""
from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from filterd.store import overrides, state
from filterd.rules.config import load_config
from filterd.store.overrides import OverrideError, parse_duration
from filterd.rules.policy import Override

LONDON = ZoneInfo("Europe/London")


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    """A wall-clock moment in the house's time zone, as epoch seconds."""
    return datetime.datetime(year, month, day, hour, minute, tzinfo=LONDON).timestamp()


# Wednesday 10 June 2026 (BST): bedtime and the evening window run at 22:00, homework at 17:00.
BEDTIME = at(2026, 6, 10, 22, 0)
EVENING = at(2026, 6, 10, 20, 30)
HOMEWORK = at(2026, 6, 10, 17, 0)
NOON = at(2026, 6, 10, 12, 0)


@pytest.fixture
def config(tmp_path):
    data = {
        "timezone": "Europe/London",
        "data_dir": str(tmp_path / "var"),
        "dns": {"upstreams": ["udp://127.0.0.1:53"]},
        "profiles": {
            "kids": {
                "block_services": ["youtube"],
                "schedules": [
                    {"name": "bedtime", "days": ["daily"], "start": "21:00", "end": "07:00", "block": "all"},
                    {"name": "homework", "days": ["weekdays"], "start": "16:00", "end": "18:00",
                     "block": ["games"]},
                    {"name": "evening", "days": ["daily"], "start": "20:00", "end": "23:00",
                     "block": ["video_streaming"]},
                ],
            },
            "adult": {"preset": "adult"},
        },
        "devices": [
            {"name": "Tablet", "ip": "192.168.1.10", "profile": "kids"},
            {"name": "laptop", "ip": "192.168.1.11", "profile": "kids"},
            {"name": "dad-phone", "ip": "192.168.1.12", "profile": "adult"},
        ],
        "default_profile": "adult",
    }
    path = tmp_path / "filterd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


@pytest.fixture
def conn(config):
    connection = state.connect(state.db_path(config.data_dir))
    yield connection
    connection.close()


def rows(conn, table: str) -> list[tuple]:
    columns = {"overrides": "kind, subject_kind, subject, value, created, until, ended, source",
               "audit": "ts, actor, action, detail"}[table]
    return conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()


# ---------------------------------------------------------------- parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("45s", 45),
    ("90", 5400),            # a bare number is minutes
    ("5min", 300), (" 1H ", 3600), ("1d2h3m4s", 93784), ("366d", 366 * 86400),
])
def test_parse_duration_reads_units_and_bare_minutes(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "   ", "abc", "30 m", "1.5h", "-5", "1h30", "30x", "m", "h1"])
def test_parse_duration_refuses_what_is_no_duration_with_an_example(text):
    with pytest.raises(OverrideError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert f'"{text.strip().lower()}" is not a duration' in message
    assert "30m" in message and "1h30m" in message


@pytest.mark.parametrize("text", ["0m", "0s", "0h0m", "367d"])
def test_parse_duration_refuses_zero_and_more_than_a_year(text):
    with pytest.raises(OverrideError, match=f'"{text}" must be between 1 second and a year'):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0", "1000000"])
def test_parse_duration_checks_the_range_of_bare_minutes_too(text):
    with pytest.raises(OverrideError, match="must be between 1 second and a year"):
        parse_duration(text)


def test_parse_duration_refuses_a_superscript_digit_with_a_readable_message():
    with pytest.raises(OverrideError, match="is not a duration"):
        parse_duration("²")


# ---------------------------------------------------------------- subject_of


@pytest.mark.parametrize("name", ["Tablet", "tablet", "TABLET"])
def test_subject_of_finds_a_device_whatever_its_letter_case(config, name):
    assert overrides.subject_of(config, name) == ("device", "Tablet")


def test_subject_of_finds_a_profile(config):
    assert overrides.subject_of(config, "kids") == ("profile", "kids")
    assert overrides.subject_of(config, "adult") == ("profile", "adult")


def test_subject_of_an_unknown_name_lists_devices_and_profiles(config):
    with pytest.raises(OverrideError) as caught:
        overrides.subject_of(config, "phone")
    assert str(caught.value) == ('no device or profile named "phone" '
                                 "(devices: Tablet, laptop, dad-phone; profiles: kids, adult)")


def test_subject_of_says_none_when_no_device_is_configured(tmp_path):
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "var"),
                                    "dns": {"upstreams": ["udp://127.0.0.1:53"]}}))
    with pytest.raises(OverrideError, match=r"\(devices: none; profiles: default\)"):
        overrides.subject_of(load_config(path), "tablet")


# ---------------------------------------------------------------- pause


def test_pause_for_a_while_ends_by_itself(conn, config):
    row_id = overrides.pause(conn, config, "tablet", 1800, BEDTIME)
    assert isinstance(row_id, int)
    assert rows(conn, "overrides") == [("pause", "device", "Tablet", None, BEDTIME, BEDTIME + 1800, None, "cli")]
    assert overrides.active(conn, BEDTIME + 1) == (Override("pause", "device", "Tablet", BEDTIME + 1800),)
    assert overrides.active(conn, BEDTIME + 1800) == ()


def test_pause_without_duration_lasts_until_resumed(conn, config):
    overrides.pause(conn, config, "kids", None, BEDTIME, source="web")
    a_year_later = BEDTIME + 366 * 86400
    assert overrides.active(conn, a_year_later) == (Override("pause", "profile", "kids", None),)
    assert rows(conn, "overrides")[0][-1] == "web"


def test_pause_of_an_unknown_name_changes_nothing(conn, config):
    with pytest.raises(OverrideError, match='no device or profile named "phone"'):
        overrides.pause(conn, config, "phone", 1800, BEDTIME)
    assert rows(conn, "overrides") == [] and rows(conn, "audit") == []


# ---------------------------------------------------------------- resume


def test_resume_ends_only_the_active_pauses_of_its_subject(conn, config):
    hour = 3600
    overrides.pause(conn, config, "tablet", None, BEDTIME - hour)            # active, open-ended
    overrides.pause(conn, config, "Tablet", 1800, BEDTIME - 60)              # active
    expired = overrides.pause(conn, config, "tablet", 600, BEDTIME - hour)   # over before now
    overrides.pause(conn, config, "laptop", 1800, BEDTIME - 60)              # another device
    overrides.pause(conn, config, "kids", 1800, BEDTIME - 60)                # the tablet's profile
    overrides.allow(conn, config, "tablet", "youtube", 1800, BEDTIME - 60)   # not a pause

    assert overrides.resume(conn, config, "TABLET", BEDTIME) == 2

    assert overrides.active(conn, BEDTIME) == (
        Override("pause", "device", "laptop", BEDTIME + 1740),
        Override("pause", "profile", "kids", BEDTIME + 1740),
        Override("allow", "device", "Tablet", BEDTIME + 1740, "youtube"),
    )
    ended = dict(conn.execute("SELECT id, ended FROM overrides").fetchall())
    assert [ended[i] for i in (1, 2)] == [BEDTIME, BEDTIME]
    assert ended[expired] is None   # an expired pause keeps its history as it was
    # Still blocked through its profile's pause: resuming the device says what to resume instead.
    with pytest.raises(OverrideError, match="paused through its profile kids: resume kids"):
        overrides.resume(conn, config, "tablet", BEDTIME + 1)
    overrides.resume(conn, config, "kids", BEDTIME + 1)
    assert overrides.resume(conn, config, "tablet", BEDTIME + 2) == 0


def test_resume_of_a_profile_leaves_device_pauses(conn, config):
    overrides.pause(conn, config, "kids", None, BEDTIME)
    overrides.pause(conn, config, "tablet", None, BEDTIME)
    assert overrides.resume(conn, config, "kids", BEDTIME + 5) == 1
    assert overrides.active(conn, BEDTIME + 5) == (Override("pause", "device", "Tablet", None),)


# ---------------------------------------------------------------- allow


@pytest.mark.parametrize("what, value", [
    ("youtube", "youtube"),                          # a service id
    ("YouTube ", "youtube"),
    ("WWW.Example.COM.", "www.example.com"),         # a domain, normalised
    ("Bücher.Example", "xn--bcher-kva.example"),     # an IDN, to its A-labels
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_allow_stores_a_service_id_or_a_normalised_domain(conn, config, what, value):
    overrides.allow(conn, config, "tablet", what, 3600, BEDTIME)
    assert overrides.active(conn, BEDTIME) == (Override("allow", "device", "Tablet", BEDTIME + 3600, value),)


def test_allow_without_duration_lasts_until_revoked(conn, config):
    overrides.allow(conn, config, "kids", "roblox", None, BEDTIME)
    assert overrides.active(conn, BEDTIME + 366 * 86400) == (Override("allow", "profile", "kids", None, "roblox"),)


@pytest.mark.parametrize("what", ["not a domain!", "", "http://example.com/watch", "exa mple.com", "a..b"])
def test_allow_of_garbage_says_it_is_neither_service_nor_domain(conn, config, what):
    with pytest.raises(OverrideError) as caught:
        overrides.allow(conn, config, "tablet", what, 3600, BEDTIME)
    message = str(caught.value)
    assert message.startswith(f'"{what}" is neither a known service')
    assert message.endswith("nor a domain name")
    assert rows(conn, "overrides") == [] and rows(conn, "audit") == []


@pytest.mark.parametrize("what", ["youtub", "disneyplus", "com"])
def test_allow_refuses_a_single_word_that_is_no_known_service(conn, config, what):
    with pytest.raises(OverrideError):
        overrides.allow(conn, config, "tablet", what, 3600, BEDTIME)


# ---------------------------------------------------------------- bonus


def test_bonus_with_a_duration(conn, config):
    overrides.bonus(conn, config, "tablet", 1800, BEDTIME)
    assert overrides.active(conn, BEDTIME) == (Override("bonus", "device", "Tablet", BEDTIME + 1800),)


@pytest.mark.parametrize("name, now, ends", [
    ("tablet", BEDTIME, at(2026, 6, 11, 7, 0)),      # bedtime and evening run: the later end
    ("kids", BEDTIME, at(2026, 6, 11, 7, 0)),        # the same for the profile
    ("Tablet", EVENING, at(2026, 6, 10, 23, 0)),     # only the evening window runs
    ("laptop", HOMEWORK, at(2026, 6, 10, 18, 0)),    # homework, a weekday window
    ("tablet", at(2026, 10, 24, 22, 0), at(2026, 10, 25, 7, 0)),  # the night clocks go back
    ("tablet", at(2026, 3, 28, 22, 0), at(2026, 3, 29, 7, 0)),    # the night clocks go forward
])
def test_bonus_without_duration_lasts_until_the_running_window_ends(conn, config, name, now, ends):
    overrides.bonus(conn, config, name, None, now)
    (bonus,) = overrides.active(conn, now)
    assert bonus.kind == "bonus" and bonus.until == ends


@pytest.mark.parametrize("name, now, message", [
    ("tablet", NOON, "no schedule of device Tablet is running now"),
    ("kids", NOON, "no schedule of profile kids is running now"),
    ("dad-phone", BEDTIME, "no schedule of device dad-phone is running now"),   # adult: no schedules
])
def test_bonus_without_duration_needs_a_running_window(conn, config, name, now, message):
    with pytest.raises(OverrideError) as caught:
        overrides.bonus(conn, config, name, None, now)
    assert str(caught.value) == message
    assert rows(conn, "overrides") == [] and rows(conn, "audit") == []


# ---------------------------------------------------------------- active


def test_active_keeps_only_what_is_in_force_oldest_first(conn, config):
    t = BEDTIME
    overrides.pause(conn, config, "laptop", 600, t - 3600)           # expired at t - 3000
    overrides.allow(conn, config, "tablet", "youtube", None, t - 60)
    overrides.pause(conn, config, "tablet", 1800, t - 30)
    overrides.bonus(conn, config, "kids", 300, t - 10)
    overrides.pause(conn, config, "kids", None, t - 5)
    overrides.resume(conn, config, "kids", t - 1)                    # ended
    allow = Override("allow", "device", "Tablet", None, "youtube")
    pause = Override("pause", "device", "Tablet", t + 1770)
    bonus = Override("bonus", "profile", "kids", t + 290)
    assert overrides.active(conn, t) == (allow, pause, bonus)
    assert overrides.active(conn, t + 290) == (allow, pause)         # `until` itself is over
    assert overrides.active(conn, t + 1770) == (allow,)


# ---------------------------------------------------------------- audit


def test_every_change_writes_who_what_and_when_to_the_audit_trail(conn, config):
    overrides.pause(conn, config, "tablet", 1800, BEDTIME)
    overrides.pause(conn, config, "kids", None, BEDTIME + 1, source="web")
    overrides.resume(conn, config, "tablet", BEDTIME + 2)
    overrides.allow(conn, config, "TABLET", "YouTube", 3600, BEDTIME + 3, source="api")
    overrides.allow(conn, config, "laptop", "www.Example.com", None, BEDTIME + 4)
    overrides.bonus(conn, config, "kids", 5400, BEDTIME + 5)
    overrides.bonus(conn, config, "tablet", None, at(2026, 6, 11, 6, 30))
    assert rows(conn, "audit") == [
        (BEDTIME, "cli", "pause", "device Tablet for 30 min"),
        (BEDTIME + 1, "web", "pause", "profile kids until resumed"),
        (BEDTIME + 2, "cli", "resume", "device Tablet"),
        (BEDTIME + 3, "api", "allow", "device Tablet youtube for 1 h"),
        (BEDTIME + 4, "cli", "allow", "device laptop www.example.com"),
        (BEDTIME + 5, "cli", "bonus", "profile kids for 1 h 30 min"),
        (at(2026, 6, 11, 6, 30), "cli", "bonus", "device Tablet for 30 min"),
    ]


# ---------------------------------------------------------------- undo


def test_undo_ends_each_kind_early_and_says_so_in_the_audit_trail(conn, config):
    overrides.allow(conn, config, "tablet", "pokerstars.com", 3600, EVENING)
    overrides.bonus(conn, config, "tablet", 1800, EVENING)
    overrides.pause(conn, config, "tablet", None, EVENING)
    assert overrides.end(conn, config, "tablet", "allow", EVENING + 60, "web", "POKERSTARS.com") == 1
    assert overrides.end(conn, config, "tablet", "bonus", EVENING + 61, "api") == 1
    assert overrides.end(conn, config, "tablet", "pause", EVENING + 62) == 1
    assert overrides.active(conn, EVENING + 63) == ()
    assert rows(conn, "audit")[-3:] == [
        (EVENING + 60, "web", "revoke", "device Tablet pokerstars.com"),
        (EVENING + 61, "api", "end bonus", "device Tablet"),
        (EVENING + 62, "cli", "resume", "device Tablet"),
    ]


def test_undo_of_nothing_in_force_writes_nothing_and_says_nothing_changed(conn, config):
    overrides.bonus(conn, config, "tablet", 60, EVENING)             # expired by EVENING + 120
    before = rows(conn, "audit")
    for kind, what, words in (("allow", "pokerstars.com", "pokerstars.com was not allowed for Tablet"),
                              ("bonus", None, "Tablet had no bonus time"),
                              ("pause", None, "Tablet was not paused")):
        with pytest.raises(overrides.NoChange, match=f"{words}: nothing changed"):
            overrides.end(conn, config, "tablet", kind, EVENING + 120, "web", what)
    assert overrides.revoke(conn, config, "tablet", "pokerstars.com", EVENING + 120) == 0
    assert overrides.resume(conn, config, "tablet", EVENING + 120) == 0
    assert rows(conn, "audit") == before


def test_undo_on_a_device_points_to_the_profile_that_holds_the_override(conn, config):
    overrides.bonus(conn, config, "kids", 1800, EVENING)
    with pytest.raises(overrides.NoChange, match="through its profile kids"):
        overrides.end(conn, config, "tablet", "bonus", EVENING + 1)
    assert overrides.end(conn, config, "kids", "bonus", EVENING + 2) == 1


def test_allowing_what_is_already_allowed_as_long_is_no_change(conn, config):
    overrides.allow(conn, config, "tablet", "example.com", None, EVENING)
    with pytest.raises(overrides.NoChange, match="already allowed for Tablet until revoked"):
        overrides.allow(conn, config, "tablet", "example.com", 3600, EVENING + 1)
    overrides.allow(conn, config, "laptop", "example.com", 3600, EVENING)
    with pytest.raises(overrides.NoChange, match="already allowed for laptop for 59 min more"):
        overrides.allow(conn, config, "laptop", "example.com", 1800, EVENING + 60)
    overrides.allow(conn, config, "laptop", "example.com", 7200, EVENING + 60)      # longer: a change
    assert len(rows(conn, "audit")) == 3


def test_an_allow_that_keeps_schedules_opens_the_site_by_day_but_not_at_bedtime(conn, config):
    from filterd.lists.index import DomainIndex
    from filterd.rules.policy import Policy, decide

    policy = Policy(config.rules, config.catalog, DomainIndex.empty(), config.timezone)
    overrides.allow(conn, config, "tablet", "youtube", None, NOON, keep_schedules=True)
    london = datetime.datetime.fromtimestamp

    def verdict(moment):
        return decide(policy, "kids", "www.youtube.com", 1, london(moment, LONDON), "Tablet",
                      overrides.active(conn, moment))

    assert verdict(NOON).action == "allow" and "outside schedules" in verdict(NOON).reason
    assert verdict(BEDTIME).rule == "schedule"                 # bedtime still applies
    overrides.allow(conn, config, "tablet", "youtube", 3600, BEDTIME)   # a plain allow: also at bedtime
    assert verdict(BEDTIME + 60).rule == "temporary_allow"
    assert overrides.end(conn, config, "tablet", "allow", BEDTIME + 120, what="youtube") == 2   # one undo ends both
