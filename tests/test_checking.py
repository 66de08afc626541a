"""`filterd/rules/checking.py`: reading YAML a person wrote and checking it, so every mistake in
the config or a catalog is one line naming its YAML path and line, with the value quoted alike."""
from __future__ import annotations

import re

import pytest
import yaml

from filterd.rules.checking import (
    Checker,
    ConfigError,
    Listen,
    YamlSyntaxError,
    parse_listen,
    parse_yaml,
    show,
)

TEXT = """\
timezone: UTC
dns:
  upstreams:
    - udp://9.9.9.9
    - tls://1.1.1.1
profiles:
  kids:
    block: [example.com]
"""


# ---------------------------------------------------------------- parse_yaml


def test_parse_yaml_gives_plain_data_and_the_line_of_every_path():
    data, lines = parse_yaml(TEXT)
    assert data == {"timezone": "UTC", "dns": {"upstreams": ["udp://9.9.9.9", "tls://1.1.1.1"]},
                    "profiles": {"kids": {"block": ["example.com"]}}}
    assert lines["timezone"] == 1
    assert lines["dns.upstreams"] == 4              # a block list starts at its first item
    assert lines["dns.upstreams[0]"] == 4 and lines["dns.upstreams[1]"] == 5
    assert lines["profiles.kids.block[0]"] == 8


def test_parse_yaml_reads_scalars_as_yaml_does():
    data, _ = parse_yaml("a: 3\nb: 2.5\nc: true\nd: null\ne: '07'\nf: off\n")
    assert data == {"a": 3, "b": 2.5, "c": True, "d": None, "e": "07", "f": False}


def test_an_empty_text_holds_no_document():
    assert parse_yaml("") is None
    assert parse_yaml("# only a comment\n") is None


def test_a_faster_loader_gives_the_same_answer():
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert parse_yaml(TEXT, loader=loader) == parse_yaml(TEXT)


def test_text_that_is_not_yaml_is_one_line_with_its_line_and_column():
    with pytest.raises(YamlSyntaxError) as caught:
        parse_yaml("dns:\n  upstreams: [udp://9.9.9.9\nweb: {}\n")
    message = str(caught.value)
    assert message.startswith("not valid YAML (line 3, column ")
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_a_tab_indent_is_reported_where_it_is():
    with pytest.raises(YamlSyntaxError, match=r"^not valid YAML \(line 2, column 1\): "):
        parse_yaml("dns:\n\tupstreams: []\n")


# ---------------------------------------------------------------- show


@pytest.mark.parametrize("value, shown", [
    ("kids", '"kids"'),
    (3, "3"),
    (2.5, "2.5"),
    (True, "True"),
    (None, "None"),
    ({"a": "a very long mapping"}, "a mapping"),
    (["x"] * 100, "a list"),
])
def test_show_quotes_a_value_as_an_error_message_does(value, shown):
    assert show(value) == shown


# ---------------------------------------------------------------- Checker


def checker_for(text: str) -> tuple[dict, Checker]:
    data, lines = parse_yaml(text)
    return data, Checker(lines)


def test_an_error_carries_its_path_and_its_line():
    _, check = checker_for(TEXT)
    check.error("profiles.kids.block[0]", "is not allowed here")
    check.error("no.such.path", "has no line")
    assert check.problems == ["profiles.kids.block[0]: is not allowed here (line 8)",
                              "no.such.path: has no line"]


def test_a_subclass_names_its_file_before_every_problem():
    class CatalogChecker(Checker):
        prefix = "config/categories.yaml: "
    check = CatalogChecker({"x": 2})
    check.error("x", "wrong")
    assert check.problems == ["config/categories.yaml: x: wrong (line 2)"]


def test_mapping_reports_unknown_keys_listing_the_known_ones():
    data, check = checker_for("log:\n  mode: full\n  keep: 3\n")
    assert check.mapping(data["log"], "log", {"mode", "retention_days"}) == {"mode": "full", "keep": 3}
    assert check.problems == ["log.keep: unknown key (known here: mode, retention_days) (line 3)"]


def test_a_missing_mapping_counts_as_empty_and_a_wrong_one_is_a_problem():
    data, check = checker_for("log: [full]\n")
    assert check.mapping(None, "web", {"listen"}) == {}
    assert check.mapping(data["log"], "log", {"mode"}) == {}
    assert check.problems == ["log: must be a mapping, got a list (line 1)"]


@pytest.mark.parametrize("value, expected, problem", [
    ("7", 7, None),
    ("1", 1, None),                         # the bounds are inside
    ("3650", 3650, None),
    ("0", 30, "log.days: 0 must be a whole number from 1 to 3650 (line 1)"),
    ("3651", 30, "log.days: 3651 must be a whole number from 1 to 3650 (line 1)"),
    ("2.5", 30, "log.days: 2.5 must be a whole number from 1 to 3650 (line 1)"),
    ("true", 30, "log.days: True must be a whole number from 1 to 3650 (line 1)"),
    ('"7"', 30, 'log.days: "7" must be a whole number from 1 to 3650 (line 1)'),
])
def test_integer_keeps_a_whole_number_in_range_else_the_default(value, expected, problem):
    data, check = checker_for(f"days: {value}\n")
    check.lines["log.days"] = check.lines.pop("days")
    assert check.integer(data, "days", "log", 30, 1, 3650) == expected
    assert check.problems == ([problem] if problem else [])


def test_a_missing_integer_is_the_default_without_a_problem():
    check = Checker({})
    assert check.integer({}, "days", "log", 30, 1, 3650) == 30
    assert check.problems == []


@pytest.mark.parametrize("value, expected, ok", [
    (2, 2.0, True),
    (0.5, 0.5, True),
    (31, 5.0, False),
    (True, 5.0, False),
    ("2", 5.0, False),
])
def test_number_takes_integers_and_decimals_in_range(value, expected, ok):
    check = Checker({})
    result = check.number({"timeout": value}, "timeout", "dns", 5.0, 0.5, 30)
    assert result == expected and isinstance(result, float)
    assert (check.problems == []) is ok
    if not ok:
        assert check.problems[0].startswith("dns.timeout: ") and "must be a number from 0.5 to 30" in \
            check.problems[0]


def test_string_list_gives_each_item_with_its_path():
    data, check = checker_for("block:\n  - example.com\n  - 42\n  - [nested]\n  - true\n")
    assert check.string_list(data, "block", "profiles.kids", []) == [
        ("profiles.kids.block[0]", "example.com"), ("profiles.kids.block[1]", "42")]
    assert [p.split(" (line")[0] for p in check.problems] == [
        "profiles.kids.block[2]: a list must be a string", "profiles.kids.block[3]: True must be a string"]


def test_a_lone_string_counts_as_a_list_of_one_and_a_mapping_is_refused():
    check = Checker({})
    assert check.string_list({"to": "mum@example.com"}, "to", "c", []) == [("c.to[0]", "mum@example.com")]
    assert check.string_list({}, "to", "c", ["x"]) == [("c.to[0]", "x")]
    assert check.string_list({"to": {"a": 1}}, "to", "c", []) == []
    assert check.problems == ["c.to: must be a list, got a mapping"]


def test_config_error_lists_its_problems_one_a_line():
    error = ConfigError(["a: wrong (line 1)", "b: wrong too (line 2)"])
    assert error.problems == ["a: wrong (line 1)", "b: wrong too (line 2)"]
    assert str(error) == "a: wrong (line 1)\nb: wrong too (line 2)"


# ---------------------------------------------------------------- listen addresses


@pytest.mark.parametrize("text, host, port, shown", [
    ("127.0.0.1:5353", "127.0.0.1", 5353, "127.0.0.1:5353"),
    ("192.168.1.2", "192.168.1.2", 53, "192.168.1.2:53"),          # bare: port 53
    (":53", "0.0.0.0", 53, "0.0.0.0:53"),                           # every IPv4 address
    ("[::]:53", "::", 53, "[::]:53"),
    ("[::1]:8053", "::1", 8053, "[::1]:8053"),
    ("[2001:db8::1]", "2001:db8::1", 53, "[2001:db8::1]:53"),
    ("::1", "::1", 53, "[::1]:53"),                                  # a bare IPv6 address
    ("fe80::1%eth0", "fe80::1%eth0", 53, "[fe80::1%eth0]:53"),
    ("127.0.0.1:0", "127.0.0.1", 0, "127.0.0.1:0"),
    ("127.0.0.1:65535", "127.0.0.1", 65535, "127.0.0.1:65535"),
])
def test_listen_addresses_are_read_and_written_back(text, host, port, shown):
    listen = parse_listen(text)
    assert listen == Listen(host, port)
    assert str(listen) == shown
    assert parse_listen(str(listen)) == listen


@pytest.mark.parametrize("text, words", [
    ("localhost:53", "'localhost' is not an IP address"),
    ("127.0.0.1:http", "not a valid port"),
    ("127.0.0.1:65536", "not a valid port"),
    ("127.0.0.1:-1", "not a valid port"),
    ("[::1", "write [IPv6]:port"),
    ("[::1]53", "write [IPv6]:port"),
    ("[nonsense]:53", "'nonsense' is not an IP address"),
    ("999.1.1.1", "is not an IP address"),
])
def test_an_invalid_listen_address_is_refused_saying_why(text, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_listen(text)


def test_a_key_written_twice_is_refused_with_both_lines():
    """YAML loaders keep the last of two equal keys without a word: a second `profiles:` block
    would silently drop every rule of the first."""
    text = "profiles:\n  kids: {}\ndns: {}\nprofiles:\n  adults: {}\n"
    with pytest.raises(YamlSyntaxError, match=r"^not valid YAML \(line 4, column 1\): profiles is written twice "
                                              r"\(first on line 1\)$"):
        parse_yaml(text)
    with pytest.raises(YamlSyntaxError, match=r"profiles\.kids\.allow is written twice"):
        parse_yaml("profiles:\n  kids:\n    allow: [a.example]\n    allow: [b.example]\n")
