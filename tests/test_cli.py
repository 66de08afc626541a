"""`filterd explain`: the decision for a name and its exact reason — profile, rule, list,
category, schedule — for a device, a client address or the default profile, at a given moment.

It decides for the family config of tests/fixtures/policy/family.yaml (with the seed lists
compiled in, as on a real install); see tests/test_policy.py for who is who.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_fixture_config
from filterd import cli
from filterd.lists import sources
from filterd.rules.config import load_config

FIXTURES = Path(__file__).parent / "fixtures" / "policy"


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    """The family config, its lists compiled once for the module."""
    path = write_fixture_config("family.yaml", tmp_path_factory.mktemp("family"))
    sources.ensure_compiled(load_config(path))
    return path


@pytest.fixture(scope="module")
def dst(tmp_path_factory) -> Path:
    path = write_fixture_config("dst.yaml", tmp_path_factory.mktemp("dst"))
    sources.ensure_compiled(load_config(path))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    args = cli.build_parser().parse_args(list(argv))
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


def explain(capsys, config: Path, name: str, *options: str, at: str | None = "2026-03-03 12:00") -> list[str]:
    """The lines `filterd explain` prints (exit status 0 asserted)."""
    status, out, err = run(capsys, "explain", name, "--config", str(config), *options,
                           *(("--at", at) if at else ()))
    assert status == 0, err
    return out.splitlines()


# ---------------------------------------------------------------- the decision and its reason


def test_category_block_names_profile_category_list_and_listed_name(family, capsys):
    assert explain(capsys, family, "www.pokerstars.test", "--device", "alice-tablet") == [
        "www.pokerstars.test (A) for device alice-tablet (profile kids) at 2026-03-03 12:00 Europe/London",
        "  BLOCK: category Gambling (list fx-gambling, pokerstars.test)",
        "  rule: category · category: gambling · list: fx-gambling · matched: pokerstars.test · EDE: 15 (Blocked)",
        f"  list fx-gambling: a list of this config (lists:) from {FIXTURES / 'gambling.txt'}; "
        "allow the name meanwhile in the profile",
    ]


def test_category_from_a_seed_list_names_the_seed(family, capsys):
    lines = explain(capsys, family, "pornhub.com", "--device", "bob-phone")
    assert lines[1] == "  BLOCK: category Adult content (list seed-adult, pornhub.com)"


def test_schedule_block_names_the_schedule_and_its_end(family, capsys):
    assert explain(capsys, family, "example.org", "--device", "bob-phone", at="2026-03-01 21:30") == [
        "example.org (A) for device bob-phone (profile kids) at 2026-03-01 21:30 Europe/London",
        "  BLOCK: bedtime: the internet is off until 07:00",
        "  rule: schedule · schedule: bedtime · until: 2026-03-02 07:00 · EDE: 17 (Filtered)",
        "  outside bedtime: ALLOW: allowed: no rule blocks it",
    ]


def test_schedule_of_categories_names_what_is_off(family, capsys):
    lines = explain(capsys, family, "games-portal.test", "--device", "alice-tablet", at="2026-03-03 17:00")
    assert lines[1:] == [
        "  BLOCK: homework: Games is off until 18:00",
        "  rule: schedule · category: games · schedule: homework · until: 2026-03-03 18:00 · EDE: 17 (Filtered)",
        "  outside homework: ALLOW: allowed: no rule blocks it",
    ]


def test_profile_block_list_names_the_pattern(family, capsys):
    lines = explain(capsys, family, "www.online-casino.test", "--device", "alice-tablet")
    assert lines[1:] == [
        "  BLOCK: blocked by the kids profile's block list (*casino*)",
        "  rule: profile_block · matched: *casino* · EDE: 17 (Filtered)",
    ]


def test_service_block_names_the_service(family, capsys):
    lines = explain(capsys, family, "v16.tiktokcdn.com", "--device", "alice-tablet")
    assert lines[1:] == [
        "  BLOCK: service TikTok (tiktokcdn.com)",
        "  rule: service · service: tiktok · matched: tiktokcdn.com · EDE: 15 (Blocked)",
    ]


def test_allow_list_names_the_allowed_domain(family, capsys):
    lines = explain(capsys, family, "www.khanacademy.org", "--device", "alice-tablet", at="2026-03-01 21:30")
    assert lines[1:] == [
        "  ALLOW: allowed by the kids profile's allow list (khanacademy.org)",
        "  rule: allow_list · matched: khanacademy.org",
    ]


def test_safesearch_rewrite_names_the_target(family, capsys):
    lines = explain(capsys, family, "www.google.co.uk", "--device", "alice-tablet")
    assert lines[1:] == [
        "  REWRITE: SafeSearch: answered with forcesafesearch.google.com",
        "  rule: safesearch · matched: www.google.co.uk · target: forcesafesearch.google.com",
    ]


def test_bypass_canary_is_nxdomain_for_the_kids(family, capsys):
    lines = explain(capsys, family, "use-application-dns.net", "--device", "alice-tablet")
    assert lines[1] == "  NXDOMAIN: bypass protection: Firefox's DNS-over-HTTPS canary is turned off here"


def test_csam_block_never_shows_what_matched(family, capsys):
    lines = explain(capsys, family, "csam-listed.test", "--device", "alice-tablet")
    assert lines[1:] == [
        "  BLOCK: blocked: known child sexual abuse material (protected category)",
        "  rule: csam · category: csam · EDE: 15 (Blocked)",
    ]


def test_allowed_name_says_no_rule_blocks_it(family, capsys):
    lines = explain(capsys, family, "example.org", "--device", "carol-laptop")
    assert lines == [
        "example.org (A) for device carol-laptop (profile teens) at 2026-03-03 12:00 Europe/London",
        "  ALLOW: allowed: no rule blocks it",
        "  rule: default",
    ]


# ---------------------------------------------------------------- who, when, which type


def test_client_address_is_mapped_to_its_device(family, capsys):
    lines = explain(capsys, family, "pokerstars.test", "--client", "192.168.1.23")
    assert lines[0].startswith("pokerstars.test (A) for device alice-tablet (profile kids) at ")
    assert lines[1].startswith("  BLOCK: category Gambling")
    lines = explain(capsys, family, "pokerstars.test", "--client", "192.168.1.40")
    assert lines[0].startswith("pokerstars.test (A) for device carol-laptop (profile teens) at ")
    assert lines[1] == "  BLOCK: blocked by the teens profile's block list (pokerstars.test)"


def test_unknown_client_and_no_device_get_the_default_profile(family, capsys):
    for options in (("--client", "10.1.2.3"), ()):
        lines = explain(capsys, family, "casino-royale.test", *options)
        assert lines[0] == "casino-royale.test (A) for profile teens at 2026-03-03 12:00 Europe/London"
        assert lines[1] == "  ALLOW: allowed: no rule blocks it"


def test_device_names_are_case_insensitive(family, capsys):
    lines = explain(capsys, family, "pokerstars.test", "--device", "Alice-Tablet")
    assert lines[0].startswith("pokerstars.test (A) for device alice-tablet (profile kids)")


def test_type_is_shown_and_blocks_alike(family, capsys):
    lines = explain(capsys, family, "pokerstars.test", "--device", "alice-tablet", "--type", "aaaa")
    assert lines[0].startswith("pokerstars.test (AAAA) for device alice-tablet")
    assert lines[1] == "  BLOCK: category Gambling (list fx-gambling, pokerstars.test)"
    lines = explain(capsys, family, "pokerstars.test", "--device", "alice-tablet", "--type", "HTTPS")
    assert lines[0].startswith("pokerstars.test (HTTPS) for")


def test_name_is_normalised(family, capsys):
    lines = explain(capsys, family, "WWW.PokerStars.Test.", "--device", "alice-tablet")
    assert lines[0].startswith("www.pokerstars.test (A) for")


@pytest.mark.parametrize("at, expected", [
    ("2026-03-02 03:00", "  BLOCK: bedtime: the internet is off until 07:00"),   # Monday: Sunday's window
    ("2026-03-06 03:00", "  BLOCK: bedtime: the internet is off until 07:00"),   # Friday: Thursday's window
    ("2026-03-07 03:00", "  ALLOW: allowed: no rule blocks it"),                 # Saturday: Friday has none
    ("2026-03-02 07:00", "  ALLOW: allowed: no rule blocks it"),
    ("2026-03-03 17:00", "  ALLOW: allowed: no rule blocks it"),                 # homework leaves it alone
])
def test_at_decides_for_that_moment(family, capsys, at, expected):
    assert explain(capsys, family, "example.org", "--device", "alice-tablet", at=at)[1] == expected


@pytest.mark.parametrize("at, action", [("2026-03-03 17:00", "BLOCK"), ("2026-03-07 17:00", "ALLOW")],
                         ids=["weekday", "weekend"])
def test_weekday_schedule_is_off_at_the_weekend(family, capsys, at, action):
    assert explain(capsys, family, "games-portal.test", "--device", "alice-tablet", at=at)[1].startswith(f"  {action}")


def test_without_at_it_decides_for_now(family, capsys):
    lines = explain(capsys, family, "pokerstars.test", "--device", "alice-tablet", at=None)
    assert lines[0].endswith(" Europe/London")
    assert lines[1].startswith("  BLOCK: ")


# ---------------------------------------------------------------- daylight-saving days


@pytest.mark.parametrize("at, lines", [
    ("2026-03-28 21:00", ["  BLOCK: saturday-night: the internet is off until 07:00",
                          "  rule: schedule · schedule: saturday-night · until: 2026-03-29 07:00 · EDE: 17 (Filtered)"]),
    ("2026-03-29 03:30", ["  BLOCK: saturday-night: the internet is off until 07:00",
                          "  rule: schedule · schedule: saturday-night · until: 2026-03-29 07:00 · EDE: 17 (Filtered)"]),
    ("2026-03-29 06:59", ["  BLOCK: saturday-night: the internet is off until 07:00",
                          "  rule: schedule · schedule: saturday-night · until: 2026-03-29 07:00 · EDE: 17 (Filtered)"]),
    ("2026-03-29 07:00", ["  ALLOW: allowed: no rule blocks it", "  rule: default"]),
    ("2026-03-29 20:00", ["  BLOCK: sunday-evening: the internet is off until 22:00",
                          "  rule: schedule · schedule: sunday-evening · until: 2026-03-29 22:00 · EDE: 17 (Filtered)"]),
    ("2026-10-25 01:30", ["  BLOCK: saturday-night: the internet is off until 07:00",
                          "  rule: schedule · schedule: saturday-night · until: 2026-10-25 07:00 · EDE: 17 (Filtered)"]),
    ("2026-10-25 06:59", ["  BLOCK: saturday-night: the internet is off until 07:00",
                          "  rule: schedule · schedule: saturday-night · until: 2026-10-25 07:00 · EDE: 17 (Filtered)"]),
    ("2026-10-25 07:00", ["  ALLOW: allowed: no rule blocks it", "  rule: default"]),
    ("2026-10-25 19:59", ["  ALLOW: allowed: no rule blocks it", "  rule: default"]),
])
def test_explain_at_on_dst_days(dst, capsys, at, lines):
    shown = explain(capsys, dst, "example.org", at=at)
    assert shown[0] == f"example.org (A) for profile night at {at} Europe/London"
    assert shown[1:3] == lines                      # the decision; for a block, the weaker rule next
    assert shown[3:] == ([] if lines[0].startswith("  ALLOW") else ["  outside " + lines[0].split(": ")[1].strip()
                                                                     + ": ALLOW: allowed: no rule blocks it"])


# ---------------------------------------------------------------- mistakes: one line, exit 2


def test_unknown_device_is_an_error_listing_the_devices(family, capsys):
    status, out, err = run(capsys, "explain", "example.org", "--config", str(family), "--device", "dave-phone")
    assert status == 2 and out == ""
    assert err.strip() == "filterd: no device named 'dave-phone' (devices: alice-tablet, bob-phone, carol-laptop)"


@pytest.mark.parametrize("at", ["2026-03-03", "tomorrow", "2026-13-01 10:00", "2026-03-03 25:00", "03/03/2026 12:00"])
def test_bad_at_is_an_error(family, capsys, at):
    status, out, err = run(capsys, "explain", "example.org", "--config", str(family), "--at", at)
    assert status == 2 and out == ""
    assert err.strip() == f'filterd: --at "{at}" is not a time; write "YYYY-MM-DD HH:MM"'


def test_a_name_that_is_not_a_domain_is_an_error(family, capsys):
    status, out, err = run(capsys, "explain", "not a name", "--config", str(family))
    assert status == 2 and out == ""
    assert "is not a domain name" in err


def test_a_bad_config_is_refused_with_its_problems(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text('dns: {upstreams: ["udp://127.0.0.1:53"]}\nprofiles: {kids: {preset: toddler}}\n')
    status, out, err = run(capsys, "explain", "example.org", "--config", str(path))
    assert status == 2
    assert "profiles.kids.preset:" in err


def test_device_and_client_together_are_refused(family, capsys):
    with pytest.raises(SystemExit) as exited:
        run(capsys, "explain", "example.org", "--config", str(family), "--device", "bob-phone",
            "--client", "192.168.1.23")
    assert exited.value.code == 2


def explain_command(config: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "filterd", "explain", *argv, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_unknown_record_type_is_an_error(family):
    result = explain_command(family, "example.org", "--type", "AAAAA")
    assert result.returncode == 2
    assert result.stderr.strip() == "filterd: 'AAAAA' is not a record type (A, AAAA, MX, TXT, HTTPS…)"


def test_a_client_that_is_not_an_address_is_an_error(family, capsys):
    status, out, err = run(capsys, "explain", "pokerstars.test", "--config", str(family),
                           "--client", "192.168.1.300")
    assert status == 2
    assert "192.168.1.300" in err and out == ""


def test_explain_command_line(family):
    """The installed command as a parent runs it."""
    result = explain_command(family, "pokerstars.test", "--device", "alice-tablet", "--at", "2026-03-03 12:00")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "  BLOCK: category Gambling (list fx-gambling, pokerstars.test)"


# ---------------------------------------------------------------- undo: revoke, resume


def test_each_undo_ends_its_override_and_undo_of_nothing_exits_1_unaudited(tmp_path, capsys):
    from filterd.store import state

    config = write_fixture_config("family.yaml", tmp_path)
    assert run(capsys, "allow", "pokerstars.com", "--device", "alice-tablet", "--for", "1h",
               "--config", str(config))[0] == 0
    assert run(capsys, "bonus", "alice-tablet", "--for", "30m", "--config", str(config))[0] == 0
    assert run(capsys, "pause", "alice-tablet", "--config", str(config))[0] == 0
    assert run(capsys, "revoke", "pokerstars.com", "--device", "alice-tablet", "--config", str(config)) == \
        (0, "revoked pokerstars.com for alice-tablet\n", "")
    assert run(capsys, "revoke", "bonus", "--device", "alice-tablet", "--config", str(config)) == \
        (0, "ended the bonus time of alice-tablet\n", "")
    assert run(capsys, "revoke", "pause", "--device", "alice-tablet", "--config", str(config)) == \
        (0, "ended the pause of alice-tablet\n", "")
    conn = state.connect(state.db_path(tmp_path / "var"))   # the fixture's data_dir
    audited = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    assert audited == 6
    for argv, line in ((("revoke", "pokerstars.com", "--device", "alice-tablet"),
                        "pokerstars.com was not allowed for alice-tablet: nothing changed"),
                       (("revoke", "bonus", "--device", "alice-tablet"), "alice-tablet had no bonus time: nothing changed"),
                       (("resume", "alice-tablet"), "alice-tablet was not paused: nothing changed")):
        assert run(capsys, *argv, "--config", str(config)) == (1, "", f"filterd: {line}\n")
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == audited
    conn.close()


def test_explain_names_the_weaker_rule_behind_a_temporary_allow(family, capsys):
    from filterd.rules.config import load_config
    from filterd.store import overrides, state
    import time

    config = load_config(family)
    conn = state.connect(state.db_path(config.data_dir))
    try:
        overrides.allow(conn, config, "alice-tablet", "lucky-casino-games.test", 3600, time.time())
        lines = explain(capsys, family, "lucky-casino-games.test", "--device", "alice-tablet", at=None)
    finally:
        overrides.end(conn, config, "alice-tablet", "allow", time.time(), what="lucky-casino-games.test")
        conn.close()
    assert lines[1].startswith("  ALLOW: allowed for now (lucky-casino-games.test) until")
    assert lines[3].startswith("  otherwise: BLOCK: blocked by the kids profile's block list (*casino*)"), lines
