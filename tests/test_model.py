"""The family's rules in the config: what loads, and how every mistake is reported.

The example config of the project's issue (tests/fixtures/policy/example.yaml) must load as
written; each mistake must come back as one line starting with its YAML path — through
`load_config` and through `filterd check` (exit 2).
"""
from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from filterd import cli
from filterd.rules.config import ConfigError, load_config

FIXTURES = Path(__file__).parent / "fixtures" / "policy"
EXAMPLE = FIXTURES / "example.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def write(tmp_path: Path, data: dict | str, name: str = "filterd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(tmp_path: Path, data: dict | str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    return caught.value.problems


def run_check(path: Path, capsys) -> tuple[int, str, str]:
    args = cli.build_parser().parse_args(["check", "--config", str(path)])
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


# ---------------------------------------------------------------- the example config


def test_example_config_loads_as_written():
    config = load_config(EXAMPLE)
    rules = config.rules
    kids = rules.profiles["kids"]
    assert kids.preset == "child"
    assert kids.block_categories == ("adult", "gambling")     # the profile's own, not the preset's
    assert kids.block_services == ("tiktok",)
    assert kids.allow == ("khanacademy.org",)
    assert kids.block == ("example-game.com", "*casino*")
    assert (kids.safesearch, kids.youtube, kids.bypass_protection) == (True, "strict", True)
    (bedtime,) = kids.schedules
    assert bedtime.name == "bedtime"
    assert bedtime.days == frozenset({6, 0, 1, 2, 3})          # sun, mon, tue, wed, thu
    assert (bedtime.start, bedtime.end) == (21 * 60, 7 * 60)
    assert bedtime.block_all and bedtime.block == () and bedtime.allow == ()
    adults = rules.profiles["adults"]
    assert adults.block_categories == () and adults.preset is None
    assert [(d.name, d.profile, d.ip, d.mac, d.cidr) for d in rules.devices] == [
        ("alice-tablet", "kids", "192.168.1.23", None, None),
        ("bob-phone", "kids", None, "aa:bb:cc:dd:ee:ff", None),
        ("guest-wifi", "kids", None, None, ipaddress.ip_network("192.168.50.0/24")),
    ]
    assert rules.default_profile == "adults"
    assert [(s.id, s.category, s.format, s.path, s.url) for s in rules.lists] == [
        ("my-list", "gambling", "adblock", "config/lists/extra.txt", None),
        ("iwf", "csam", "sha256", "/etc/filterd/iwf.sha256", None),
    ]
    assert (rules.web.host, rules.web.port, rules.web.address) == ("127.0.0.1", 8080, "192.168.1.2")
    assert rules.web.hostnames == ("filter.home",)
    assert config.dns.block_mode == "blockpage"
    assert config.timezone == "Europe/London"


def test_filterd_check_accepts_the_example(capsys):
    status, out, err = run_check(EXAMPLE, capsys)
    assert status == 0, err
    assert "OK" in out


def test_unquoted_times_are_read_as_clock_times(tmp_path):
    text = EXAMPLE.read_text().replace('start: "21:00", end: "07:00"', "start: 21:30, end: 07:00")
    assert "start: 21:30" in text
    (bedtime,) = load_config(write(tmp_path, text)).rules.profiles["kids"].schedules
    assert (bedtime.start, bedtime.end) == (21 * 60 + 30, 7 * 60)


@pytest.mark.parametrize("days, expected", [
    (["weekdays"], {0, 1, 2, 3, 4}),
    (["weekends"], {5, 6}),
    ("daily", {0, 1, 2, 3, 4, 5, 6}),
    (["Monday", "FRI"], {0, 4}),
    (["sat", "weekdays"], {0, 1, 2, 3, 4, 5}),
])
def test_schedule_days_and_day_groups(tmp_path, days, expected):
    data = example()
    data["profiles"]["kids"]["schedules"][0]["days"] = days
    (bedtime,) = load_config(write(tmp_path, data)).rules.profiles["kids"].schedules
    assert bedtime.days == frozenset(expected)


def test_a_schedule_block_list_names_categories_and_services(tmp_path):
    data = example()
    data["profiles"]["kids"]["schedules"].append(
        {"name": "homework", "days": "weekdays", "start": "16:00", "end": "18:00",
         "block": ["games", "youtube"], "allow": ["Khanacademy.org."]})
    homework = load_config(write(tmp_path, data)).rules.profiles["kids"].schedules[1]
    assert (homework.block_all, homework.block, homework.allow) == (False, ("games", "youtube"),
                                                                    ("khanacademy.org",))


def test_no_profiles_gives_one_default_profile(tmp_path):
    data = example()
    for key in ("profiles", "devices", "default_profile"):
        del data[key]
    rules = load_config(write(tmp_path, data)).rules
    assert list(rules.profiles) == ["default"] and rules.default_profile == "default"


# ---------------------------------------------------------------- every mistake names its path


def _set(path: str, value):
    """A change to the example: set the value at a dotted path ('profiles.kids.preset')."""
    def change(data: dict) -> None:
        keys = path.replace("[", ".").replace("]", "").split(".")
        target = data
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return change


def _delete(path: str, key: str):
    def change(data: dict) -> None:
        target = data
        for part in path.replace("[", ".").replace("]", "").split("."):
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[key]
    return change


def _append(section: str, item):
    return lambda data: data[section].append(item)


MISTAKES = [
    ("bad schedule time", _set("profiles.kids.schedules[0].start", "25:00"),
     "profiles.kids.schedules[0].start", '"25:00" is not a time'),
    ("bad schedule minutes", _set("profiles.kids.schedules[0].end", "07:60"),
     "profiles.kids.schedules[0].end", '"07:60" is not a time'),
    ("schedule of no length", _set("profiles.kids.schedules[0].end", "21:00"),
     "profiles.kids.schedules[0].end", "same as start"),
    ("unknown day", _set("profiles.kids.schedules[0].days", ["sun", "funday"]),
     "profiles.kids.schedules[0].days[1]", "is not a day"),
    ("unknown category in a schedule", _set("profiles.kids.schedules[0].block", ["games", "casinos"]),
     "profiles.kids.schedules[0].block[1]", '"casinos" is not a known category or service'),
    ("unknown category", _set("profiles.kids.block_categories", ["adult", "gamblin"]),
     "profiles.kids.block_categories[1]", '"gamblin" is not a known category'),
    ("unknown service", _set("profiles.kids.block_services", ["tik-tok"]),
     "profiles.kids.block_services[0]", '"tik-tok" is not a known service'),
    ("unknown preset", _set("profiles.kids.preset", "toddler"),
     "profiles.kids.preset", '"toddler" must be one of young_child, child, teen, adult'),
    ("bad youtube level", _set("profiles.kids.youtube", "locked"), "profiles.kids.youtube", "must be one of"),
    ("safesearch not a boolean", _set("profiles.kids.safesearch", "yes please"), "profiles.kids.safesearch",
     "must be true or false"),
    ("bad allow domain", _set("profiles.kids.allow", ["khan academy.org"]), "profiles.kids.allow[0]",
     "is not a domain name"),
    ("bad block pattern", _set("profiles.kids.block", ["*"]), "profiles.kids.block[0]",
     "is not a domain or a *wildcard* pattern"),
    ("device without ip, mac or cidr", _delete("devices[0]", "ip"), "devices[0]",
     "needs exactly one of ip, mac or cidr"),
    ("device with both ip and mac", _set("devices[0].mac", "aa:bb:cc:dd:ee:01"), "devices[0]",
     "needs exactly one of ip, mac or cidr"),
    ("device with an unknown profile", _set("devices[1].profile", "grandparents"), "devices[1].profile",
     '"grandparents" is not a profile (kids, adults)'),
    ("device with a bad ip", _set("devices[0].ip", "192.168.1.300"), "devices[0].ip", "is not an IP address"),
    ("device with a bad mac", _set("devices[1].mac", "aa:bb:cc:dd:ee"), "devices[1].mac",
     "is not a MAC address"),
    ("device with a bad cidr", _set("devices[2].cidr", "192.168.50.0/33"), "devices[2].cidr",
     "is not a network"),
    ("two devices of one name", _append("devices", {"name": "Alice-Tablet", "ip": "192.168.1.99",
                                                    "profile": "kids"}),
     "devices[3].name", "names another device too"),
    ("duplicate list ids", _set("lists[1].id", "my-list"), "lists[1].id", '"my-list" is used by another list'),
    ("list with both url and path", _set("lists[0].url", "https://lists.example/x.txt"), "lists[0]",
     "needs exactly one of url (to download) or path"),
    ("list with neither url nor path", _delete("lists[0]", "path"), "lists[0]", "needs exactly one of url"),
    ("list with an unknown category", _set("lists[0].category", "casinos"), "lists[0].category",
     '"casinos" is not a category'),
    ("list with an unknown format", _set("lists[0].format", "csv"), "lists[0].format", "must be one of"),
    ("list with an ftp url", _set("lists[0]", {"id": "my-list", "url": "ftp://x.example/l", "category": "adult"}),
     "lists[0].url", "must be an http:// or https:// address"),
    ("csam list not sha256", _set("lists[1].format", "domains"), "lists[1].format",
     "csam lists are only accepted hashed (format: sha256)"),
    ("csam list without a format", _delete("lists[1]", "format"), "lists[1].format",
     "csam lists are only accepted hashed"),
    ("bad web.address", _set("web.address", "192.168.1.256"), "web.address", "is not an IPv4 address"),
    ("IPv6 in web.address", _set("web.address", "fd00::2"), "web.address", "is not an IPv4 address"),
    ("IPv4 in web.address6", _set("web.address6", "192.168.1.2"), "web.address6", "is not an IPv6 address"),
    ("bad web.listen", _set("web.listen", "127.0.0.1:99999"), "web.listen", "is not a valid port"),
    ("bad web hostname", _set("web.hostnames", ["filter home"]), "web.hostnames[0]", "is not a host name"),
    ("unknown default profile", _set("default_profile", "parents"), "default_profile",
     '"parents" is not a profile'),
    ("unknown top-level key", _set("colour", "blue"), "colour", "unknown key"),
    ("unknown profile key", _set("profiles.kids.bed_time", "21:00"), "profiles.kids.bed_time", "unknown key"),
    ("unknown schedule key", _set("profiles.kids.schedules[0].stop", "07:00"),
     "profiles.kids.schedules[0].stop", "unknown key"),
    ("unknown device key", _set("devices[0].owner", "alice"), "devices[0].owner", "unknown key"),
    ("unknown list key", _set("lists[0].mirror", True), "lists[0].mirror", "unknown key"),
    ("unknown web key", _set("web.port", 8080), "web.port", "unknown key"),
    ("bad profile name", lambda d: d["profiles"].update({"Big Kids": {}}), "profiles.Big Kids",
     "a profile name is a short id"),
    ("device with a client ID that is no label", _set("devices[0].client_id", "emma.phone"),
     "devices[0].client_id", "must be letters, digits and '-'"),
]


@pytest.mark.parametrize("mistake, change, path, message", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_problem_naming_its_yaml_path(tmp_path, mistake, change, path, message):
    data = example()
    change(data)
    problems = problems_of(tmp_path, data)
    mine = [p for p in problems if p.startswith(f"{path}: ")]
    assert mine, problems
    assert any(message in p for p in mine), mine


@pytest.mark.parametrize("mistake, change, path, message", MISTAKES[::4], ids=[m[0] for m in MISTAKES[::4]])
def test_filterd_check_exits_2_naming_the_path(tmp_path, capsys, mistake, change, path, message):
    data = example()
    change(data)
    status, out, err = run_check(write(tmp_path, data), capsys)
    assert status == 2
    assert any(line.startswith(f"{path}: ") and message in line for line in err.splitlines()), err


def test_unquoted_25_00_is_reported_as_the_time_it_was_meant_to_be(tmp_path):
    text = EXAMPLE.read_text().replace('start: "21:00"', "start: 25:00")
    problems = problems_of(tmp_path, text)
    assert any(p.startswith('profiles.kids.schedules[0].start: "25:00" is not a time') for p in problems), problems


def test_problems_carry_the_line_of_the_mistake(tmp_path):
    text = EXAMPLE.read_text().replace("preset: child", "preset: toddler")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "toddler" in row)
    problems = problems_of(tmp_path, text)
    assert any(p.startswith("profiles.kids.preset: ") and p.endswith(f"(line {line})") for p in problems)


def test_every_mistake_in_a_file_is_reported_at_once(tmp_path):
    data = example()
    for _, change, _, _ in (MISTAKES[0], MISTAKES[6], MISTAKES[12], MISTAKES[19], MISTAKES[27]):
        change(data)
    problems = problems_of(tmp_path, data)
    for path in ("profiles.kids.schedules[0].start", "profiles.kids.block_services[0]", "devices[0]",
                 "lists[1].id", "web.address"):
        assert any(p.startswith(f"{path}: ") for p in problems), (path, problems)


def test_filterd_check_command_exits_2_and_prints_every_problem(tmp_path):
    data = example()
    _set("profiles.kids.schedules[0].start", "25:00")(data)
    _set("devices[1].profile", "grandparents")(data)
    result = subprocess.run([sys.executable, "-m", "filterd", "check", "--config", str(write(tmp_path, data))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any(line.startswith('profiles.kids.schedules[0].start: "25:00" is not a time') for line in lines)
    assert any(line.startswith('devices[1].profile: "grandparents" is not a profile') for line in lines)
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- presets and profiles

def test_explicit_profile_keys_override_the_preset(tmp_path):
    data = example()
    data["profiles"]["kids"].update({"safesearch": False, "youtube": "off", "bypass_protection": False})
    kids = load_config(write(tmp_path, data)).rules.profiles["kids"]
    assert (kids.safesearch, kids.youtube, kids.bypass_protection) == (False, "off", False)


def test_csam_in_block_categories_is_accepted_and_left_to_the_protected_rule(tmp_path):
    data = example()
    data["profiles"]["adults"]["block_categories"] = ["csam", "malware"]
    assert load_config(write(tmp_path, data)).rules.profiles["adults"].block_categories == ("malware",)


# ---------------------------------------------------------------- wrong types: a problem, never a crash

WRONG_TYPES = [
    ("preset as a list", _set("profiles.kids.preset", ["child"]), "profiles.kids.preset"),
    ("device profile as a list", _set("devices[0].profile", ["kids"]), "devices[0].profile"),
    ("list category as a list", _set("lists[0].category", ["gambling"]), "lists[0].category"),
    ("default_profile as a list", _set("default_profile", ["adults"]), "default_profile"),
]


@pytest.mark.parametrize("mistake, change, path", WRONG_TYPES, ids=[m[0] for m in WRONG_TYPES])
def test_a_wrongly_typed_value_is_a_problem_not_a_crash(tmp_path, mistake, change, path):
    data = example()
    change(data)
    problems = problems_of(tmp_path, data)
    assert any(p.startswith(f"{path}: ") for p in problems), problems


@pytest.mark.parametrize("mistake, change, path", [
    ("schedule as a string", _set("profiles.kids.schedules", "bedtime"), "profiles.kids.schedules"),
    ("days as a number", _set("profiles.kids.schedules[0].days", 5), "profiles.kids.schedules[0].days"),
    ("schedule block as a number", _set("profiles.kids.schedules[0].block", 5),
     "profiles.kids.schedules[0].block"),
    ("devices as a string", _set("devices", "alice"), "devices"),
    ("lists as a mapping", _set("lists", {"id": "x"}), "lists"),
    ("profile as a string", _set("profiles.adults", "everything"), "profiles.adults"),
    ("web as a string", _set("web", "on"), "web"),
    ("youtube as a list", _set("profiles.kids.youtube", ["strict"]), "profiles.kids.youtube"),
])
def test_wrongly_typed_sections_are_problems(tmp_path, mistake, change, path):
    data = example()
    change(data)
    problems = problems_of(tmp_path, data)
    assert any(p.startswith(f"{path}: ") for p in problems), problems


def test_a_schedule_starting_at_midnight_and_ending_at_2400_loads(tmp_path):
    data = example()
    data["profiles"]["kids"]["schedules"][0].update({"start": "00:00", "end": "24:00"})
    (day,) = load_config(write(tmp_path, data)).rules.profiles["kids"].schedules
    assert (day.start, day.end) == (0, 1440)



def _devices(*devices: dict):
    from filterd.rules.config import parse_config
    return parse_config({"dns": {"upstreams": ["udp://127.0.0.1"]}, "profiles": {"kids": {}},
                         "devices": list(devices)}, {})


def test_a_client_id_alone_or_beside_an_address_names_a_device():
    rules = _devices({"name": "emma", "client_id": "Emma-Phone", "profile": "kids"},
                     {"name": "kid", "client_id": "kid-1", "mac": "aa:bb:cc:dd:ee:01", "profile": "kids"}).rules
    assert [(d.name, d.client_id, d.mac) for d in rules.devices] == [
        ("emma", "emma-phone", None), ("kid", "kid-1", "aa:bb:cc:dd:ee:01")]


def test_two_devices_of_one_client_id_are_refused_with_the_second_ones_path():
    with pytest.raises(ConfigError) as caught:
        _devices({"name": "emma", "client_id": "kid-1", "profile": "kids"},
                 {"name": "kid", "client_id": "Kid-1", "profile": "kids"})
    assert caught.value.problems == ['devices[1].client_id: "kid-1" is the client ID of another device too']


def test_a_preset_profile_adds_and_removes_categories_and_services_relative_to_its_preset():
    from filterd.rules.config import parse_config, read_yaml
    from filterd.rules.presets import PRESETS

    data, lines = read_yaml("""
timezone: UTC
dns: {upstreams: ["udp://127.0.0.1:1"]}
profiles:
  kids: {preset: child, block_categories_add: [games], block_categories_remove: [social_networks],
         block_services_remove: [reddit]}
default_profile: kids
""")
    kids = parse_config(data, lines).rules.profiles["kids"]
    expected = [c for c in PRESETS["child"]["block_categories"] if c != "social_networks"] + ["games"]
    assert list(kids.block_categories) == expected
    assert "reddit" not in kids.block_services and "tiktok" in kids.block_services


def test_an_unknown_category_to_add_is_refused_with_its_path():
    from filterd.rules.config import ConfigError, parse_config, read_yaml

    data, lines = read_yaml("""
timezone: UTC
dns: {upstreams: ["udp://127.0.0.1:1"]}
profiles:
  kids: {preset: child, block_categories_add: [gamez]}
default_profile: kids
""")
    with pytest.raises(ConfigError) as caught:
        parse_config(data, lines)
    assert any("profiles.kids.block_categories_add[0]" in p and "did you mean \"games\"" in p for p in caught.value.problems)
