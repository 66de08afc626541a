"""`filterd/rules/log_settings.py`: the `log:` section — what the query log keeps and for how
long — parsed from real YAML, each mistake named by its path and line; and a profile's own mode."""
from __future__ import annotations

import pytest

from filterd.rules.checking import Checker, parse_yaml
from filterd.rules.config import ConfigError, parse_config, read_yaml
from filterd.rules.log_settings import LOG_MODES, LogConfig, parse_log_config


def config_from(text: str):
    return parse_config(*read_yaml("dns: {upstreams: ['udp://9.9.9.9']}\n" + text))


def test_the_log_section_defaults():
    assert config_from("").log == LogConfig(mode="full", retention_days=30, rollup_days=365, queue_size=20_000)


def test_the_log_section_is_read_and_checked():
    config = config_from("log: {mode: anonymous, retention_days: 7, rollup_days: 90, queue_size: 5000}\n")
    assert config.log == LogConfig(mode="anonymous", retention_days=7, rollup_days=90, queue_size=5000)
    with pytest.raises(ConfigError) as caught:
        config_from("log: {mode: verbose, retention_days: 0, queue_size: 10, keep: 3}\n")
    problems = "\n".join(caught.value.problems)
    assert 'log.mode: "verbose" must be one of full, anonymous, off' in problems
    assert "log.retention_days" in problems and "log.queue_size" in problems and "log.keep: unknown key" in problems


def test_a_profile_may_choose_its_own_log_mode():
    config = config_from("log: {mode: 'off'}\nprofiles:\n  adults: {preset: adult, log: full}\n"
                         "  kids: {preset: child}\n")
    assert config.log.mode == "off"
    assert config.rules.profiles["adults"].log == "full"
    assert config.rules.profiles["kids"].log is None   # inherits the global mode


def test_log_mode_off_may_be_written_unquoted():
    """YAML reads a bare `off` as false; `log: {mode: off}` is what a parent writes."""
    assert config_from("log: {mode: off}\n").log.mode == "off"


def test_a_profile_log_off_may_be_written_unquoted():
    assert config_from("profiles:\n  adults: {preset: adult, log: off}\n").rules.profiles["adults"].log == "off"


def parse_section(text: str) -> tuple[LogConfig, list[str]]:
    data, lines = parse_yaml(text)
    check = Checker(lines)
    return parse_log_config(data.get("log"), check), check.problems


def test_a_wrong_value_falls_back_to_its_default_and_is_named_with_its_line():
    config, problems = parse_section("log:\n  mode: anonymous\n  retention_days: 5000\n  rollup_days: 90\n")
    assert config == LogConfig(mode="anonymous", retention_days=30, rollup_days=90)
    assert problems == ["log.retention_days: 5000 must be a whole number from 1 to 3650 (line 3)"]


@pytest.mark.parametrize("section, path", [
    ("log: {queue_size: 99}", "log.queue_size"),
    ("log: {queue_size: 10000001}", "log.queue_size"),
    ("log: {rollup_days: 0}", "log.rollup_days"),
    ("log: {retention_days: 7.5}", "log.retention_days"),
    ("log: {retention_days: '30'}", "log.retention_days"),
    ("log: {mode: true}", "log.mode"),
    ("log: full", "log"),
])
def test_values_out_of_range_or_of_the_wrong_kind_are_refused(section, path):
    _, problems = parse_section(section + "\n")
    assert len(problems) == 1 and problems[0].startswith(f"{path}: "), problems


def test_the_bounds_themselves_are_accepted():
    config, problems = parse_section("log: {retention_days: 3650, rollup_days: 1, queue_size: 100}\n")
    assert problems == [] and (config.retention_days, config.rollup_days, config.queue_size) == (3650, 1, 100)


def test_every_mode_the_writer_knows_is_accepted():
    assert LOG_MODES == ("full", "anonymous", "off")
    for mode in LOG_MODES:
        assert parse_section(f"log: {{mode: '{mode}'}}\n") == (LogConfig(mode=mode), [])
