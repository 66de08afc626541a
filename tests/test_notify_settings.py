"""`filterd/rules/notify_settings.py`: the `notify:` section — channels, which events go where,
repeated attempts, the weekly summary — parsed from real YAML. Every mistake names its YAML path
and line; no error and no repr() ever shows a secret (webhook secret, ntfy token, SMTP password)."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_notify import BASE_CONFIG, SECRET, SMTP_PASSWORD, make_config

from filterd.rules import notify_settings
from filterd.rules.checking import Checker
from filterd.rules.config import ConfigError, parse_config, read_yaml


def problems_of(notify_yaml: str, folder: Path) -> list[str]:
    text = BASE_CONFIG.format(data_dir=folder / "var") + notify_yaml
    data, lines = read_yaml(text)
    with pytest.raises(ConfigError) as caught:
        parse_config(data, lines)
    return caught.value.problems


def test_config_errors_name_their_yaml_path(tmp_path):
    problems = problems_of("""
notify:
  public_url: "ftp://filter.home/"
  channels:
    phone: {type: ntfy, url: "ntfy.sh/our-topic", priority: 9}
    hook: {type: webhook, url: "https://user:pass@example.com/hook"}
    mum: {type: email, host: smtp.example.com, from: not-an-address, to: [mum@example.com, oops],
          username: mum}
    pigeon: {type: carrier}
  events:
    access_request: [phone, nobody]
    weekly: [mum]
  repeated_attempts: {count: 0, window_minutes: 2000}
  weekly_summary: {day: someday, time: "18:75"}
""", tmp_path)
    text = "\n".join(problems)
    for expected in ("notify.public_url:", "notify.channels.phone.url:", "notify.channels.phone.priority:",
                     "notify.channels.hook.url:", "notify.channels.mum.from:", "notify.channels.mum.to[1]:",
                     "notify.channels.mum.password:", "notify.channels.pigeon.type:",
                     "notify.events.access_request[1]:", "notify.events.weekly:",
                     "notify.repeated_attempts.count:", "notify.repeated_attempts.window_minutes:",
                     "notify.weekly_summary.day:", "notify.weekly_summary.time:"):
        assert expected in text, expected
    assert all("(line " in p for p in problems if not p.startswith("notify.channels.mum.password"))
    url_problem = next(p for p in problems if p.startswith("notify.channels.hook.url"))
    assert ":pass@" not in url_problem and "https://example.com" in url_problem   # the credentials are not echoed


def test_config_error_never_echoes_a_secret(tmp_path):
    problems = problems_of("""
notify:
  channels:
    hook: {type: webhook, url: "https://example.com/hook", secret: ["s3cr3t-in-a-list"]}
""", tmp_path)
    assert problems == [p for p in problems if "s3cr3t" not in p]
    assert any(p.startswith("notify.channels.hook.secret:") for p in problems)


def test_plain_smtp_with_a_password_is_refused(tmp_path):
    problems = problems_of("""
notify:
  channels:
    mum: {type: email, host: smtp.example.com, security: none, from: a@example.com, to: [b@example.com],
          username: a, password: pw}
""", tmp_path)
    assert any(p.startswith("notify.channels.mum.security:") for p in problems)


def test_valid_config_is_typed_with_defaults(tmp_path):
    config = make_config(tmp_path, f"""
notify:
  channels:
    phone: {{type: ntfy, url: "https://ntfy.sh/our-topic", priority: high, title: Home}}
    hook: {{type: webhook, url: "https://example.com/hook", secret: {SECRET}}}
    mum: {{type: email, host: smtp.example.com, from: filter@example.com, to: mum@example.com,
          username: mum, password: {SMTP_PASSWORD}}}
  events:
    access_request: [phone, hook]
    weekly_summary: [mum]
  repeated_attempts: {{categories: [adult, gambling], count: 3, window_minutes: 5}}
  weekly_summary: {{day: saturday, time: 09:30}}
""")
    notify_config = config.notify
    assert [c.name for c in notify_config.channels] == ["phone", "hook", "mum"]
    assert notify_config.channels_for("access_request") == ("phone", "hook")
    assert notify_config.channels_for("new_device") == ()
    mum = notify_config.channel("mum")
    assert (mum.port, mum.security, mum.recipients) == (587, "starttls", ("mum@example.com",))
    assert notify_config.repeated_attempts == notify_settings.RepeatedAttempts(("adult", "gambling"), 3, 300)
    assert (notify_config.weekly_summary.weekday, notify_config.weekly_summary.minute) == (5, 9 * 60 + 30)
    for channel in notify_config.channels:       # secrets stay out of repr (and so out of logs)
        assert SECRET not in repr(channel) and SMTP_PASSWORD not in repr(channel)
    assert make_config(tmp_path, "").notify.channels == ()


def test_categories_and_profiles_are_checked_when_known(tmp_path):
    data, lines = read_yaml("""
notify:
  repeated_attempts: {categories: [adult, casinos]}
  weekly_summary: {profiles: [kids, grandma]}
""")
    check = Checker(lines)
    parsed = notify_settings.parse_notify_config(data["notify"], check, categories={"adult": 1, "gambling": 2},
                                        profiles={"kids": 1})
    assert [p.split(" (line")[0] for p in check.problems] == [
        ('notify.repeated_attempts.categories[1]: "casinos" is not a category id (e.g. adult, gambling; '
         'see config/categories.yaml)'),
        'notify.weekly_summary.profiles[1]: "grandma" is not a profile in profiles:']
    assert parsed.repeated_attempts.categories == ("adult",) and parsed.weekly_summary.profiles == ("kids",)


def parse_section(text: str, **known) -> tuple[notify_settings.NotifyConfig, list[str]]:
    data, lines = read_yaml(text)
    check = Checker(lines)
    return notify_settings.parse_notify_config(data.get("notify"), check, **known), check.problems


def test_without_a_notify_section_nothing_is_sent_anywhere():
    config, problems = parse_section("timezone: UTC\n")
    assert problems == [] and config == notify_settings.NotifyConfig()
    assert config.channels_for("access_request") == () and config.channel("anything") is None


@pytest.mark.parametrize("priority, stored", [(1, "min"), (3, "default"), (5, "urgent"), ("max", "max"),
                                              ("low", "low")])
def test_an_ntfy_priority_may_be_a_number_or_a_word(priority, stored):
    config, problems = parse_section(f'notify: {{channels: {{phone: {{type: ntfy, url: "https://ntfy.sh/t",'
                                     f' priority: {priority}}}}}}}\n')
    assert problems == [] and config.channel("phone").priority == stored


@pytest.mark.parametrize("security, port", [("starttls", 587), ("tls", 465), ("none", 25)])
def test_an_email_channel_gets_the_usual_port_of_its_security(security, port):
    config, problems = parse_section(f"notify: {{channels: {{mum: {{type: email, host: smtp.example.com,"
                                     f" security: {security}, from: a@example.com, to: b@example.com}}}}}}\n")
    assert problems == [] and config.channel("mum").port == port


def test_a_username_without_a_password_is_refused_and_the_other_way_round():
    _, problems = parse_section("notify: {channels: {mum: {type: email, host: smtp.example.com,"
                                " from: a@example.com, to: b@example.com, username: a}}}\n")
    assert [p.split(":")[0] for p in problems] == ["notify.channels.mum.password"]
    _, problems = parse_section("notify: {channels: {mum: {type: email, host: smtp.example.com,"
                                " from: a@example.com, to: b@example.com, password: pw-never-shown}}}\n")
    assert [p.split(":")[0] for p in problems] == ["notify.channels.mum.username"]
    assert "pw-never-shown" not in problems[0]


def test_an_event_names_each_channel_once_in_the_order_written():
    config, problems = parse_section("notify:\n  channels:\n    a: {type: webhook, url: 'http://h/'}\n"
                                     "    b: {type: webhook, url: 'http://h/'}\n"
                                     "  events: {new_device: [b, a, b], daemon_problem: a}\n")
    assert problems == []
    assert config.channels_for("new_device") == ("b", "a")
    assert config.channels_for("daemon_problem") == ("a",)          # a lone name counts as a list


def test_an_unknown_event_or_channel_name_is_refused_listing_what_exists():
    _, problems = parse_section("notify:\n  channels: {a: {type: webhook, url: 'http://h/'}}\n"
                                "  events: {new_devices: [a], new_device: [b]}\n")
    assert problems == [
        ("notify.events.new_devices: unknown key (known here: access_request, daemon_problem, limit_spent, new_device, "
         "repeated_attempts, weekly_summary) (line 3)"),
        'notify.events.new_device[0]: "b" is not a channel in notify.channels (there: a) (line 3)']


@pytest.mark.parametrize("name", ["-dash-first", "with space", "a" * 41, "émile"])
def test_a_channel_name_that_a_page_or_a_path_could_not_carry_is_refused(name):
    _, problems = parse_section(f"notify: {{channels: {{'{name}': {{type: webhook, url: 'http://h/'}}}}}}\n")
    assert len(problems) == 1 and "a channel name is 1-40 letters" in problems[0]


@pytest.mark.parametrize("text, weekday, minute", [
    ("{day: monday, time: '07:05'}", 0, 7 * 60 + 5),
    ("{day: Sun}", 6, 18 * 60),
    ("{time: 18:30}", 6, 18 * 60 + 30),             # YAML 1.1 reads an unquoted 18:30 as 1110
    ("{}", 6, 18 * 60),
])
def test_the_weekly_summary_day_and_time_are_read_in_the_houses_words(text, weekday, minute):
    config, problems = parse_section(f"notify: {{weekly_summary: {text}}}\n")
    assert problems == []
    assert (config.weekly_summary.weekday, config.weekly_summary.minute) == (weekday, minute)
    assert config.weekly_summary.profiles is None        # every profile with a named device


def test_a_channel_target_shows_where_it_goes_without_a_path_that_could_hold_a_token():
    config, _ = parse_section("notify:\n  channels:\n    hook: {type: webhook, url: 'https://h.example/s3cr3t-path'}\n"
                              "    mum: {type: email, host: smtp.example.com, from: a@example.com,"
                              " to: [b@example.com, c@example.com]}\n")
    assert config.channel("hook").target() == "https://h.example/…"
    assert config.channel("mum").target() == "b@example.com, c@example.com via smtp.example.com:587"


def test_a_ca_file_that_does_not_exist_is_refused(tmp_path):
    _, problems = parse_section(f"notify: {{channels: {{hook: {{type: webhook, url: 'https://h/',"
                                f" ca_file: '{tmp_path / 'missing.pem'}'}}}}}}\n")
    assert [p.split(":")[0] for p in problems] == ["notify.channels.hook.ca_file"]
