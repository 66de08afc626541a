"""filterd.rules.config: defaults, and every mistake reported with its YAML path and line."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from pathlib import Path

import pytest

from filterd.rules.config import (DEFAULT_ALLOW_NETWORKS, ConfigError, Listen, load_config, parse_config,
                            parse_listen, parse_upstream, read_yaml)

MINIMAL = "dns:\n  upstreams: [udp://9.9.9.9]\n"


def problems_in(text: str) -> list[str]:
    """The problems a config text is refused for ([] when it is accepted)."""
    try:
        data, lines = read_yaml(text, "filterd.yaml")
        parse_config(data, lines)
    except ConfigError as exc:
        return exc.problems
    return []


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "filterd.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# ---------------------------------------------------------------- defaults


def test_minimal_config_gets_the_documented_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    config = load_config(write(tmp_path, MINIMAL))

    dns = config.dns
    assert config.timezone == "UTC"
    assert config.data_dir == tmp_path / "var"  # relative to the working directory
    assert dns.listen == (Listen("127.0.0.1", 5353),)
    assert [(u.scheme, u.host, u.port) for u in dns.upstreams] == [("udp", "9.9.9.9", 53)]
    assert dns.workers == (os.cpu_count() or 1)
    assert dns.allow_networks == tuple(ipaddress.ip_network(n) for n in DEFAULT_ALLOW_NETWORKS)
    assert (dns.rate_limit, dns.upstream_timeout_s, dns.max_pending, dns.max_pending_per_client) == (200, 2.0, 1024, 100)
    assert (dns.cache.size, dns.cache.min_ttl, dns.cache.max_ttl, dns.cache.negative_max_ttl, dns.cache.stale_s) == \
        (10_000, 0, 86_400, 3_600, 86_400)
    assert (dns.tcp.max_connections, dns.tcp.max_per_client, dns.tcp.idle_timeout_s) == (256, 16, 10.0)
    assert dns.block_mode == "blockpage" and dns.tls_ca_file is None and dns.bootstrap == ()


def test_every_dns_setting_is_read(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    config = load_config(write(tmp_path, f"""\
timezone: Europe/London
data_dir: /var/lib/filterd
dns:
  listen: ["127.0.0.1:5353", "[::1]:5353", ":53"]
  upstreams: ["9.9.9.9", "tcp://149.112.112.112:5353", "tls://dns.quad9.net", "https://dns.quad9.net:8443/q"]
  bootstrap: ["9.9.9.9"]
  workers: 3
  allow_networks: ["192.168.1.0/24", "fd00::/8", "10.1.2.3"]
  rate_limit: 0
  upstream_timeout: 0.3
  max_pending: 10
  max_pending_per_client: 2
  tls_ca_file: {ca}
  block_mode: nxdomain
  cache: {{size: 5, min_ttl: 10, max_ttl: 60, negative_max_ttl: 30, stale: 0}}
  tcp: {{max_connections: 4, max_per_client: 2, idle_timeout: 0.5}}
"""))

    dns = config.dns
    assert config.timezone == "Europe/London" and config.data_dir == Path("/var/lib/filterd")
    assert dns.listen == (Listen("127.0.0.1", 5353), Listen("::1", 5353), Listen("0.0.0.0", 53))
    assert [(u.scheme, u.host, u.port, u.path) for u in dns.upstreams] == [
        ("udp", "9.9.9.9", 53, "/dns-query"), ("tcp", "149.112.112.112", 5353, "/dns-query"),
        ("tls", "dns.quad9.net", 853, "/dns-query"), ("https", "dns.quad9.net", 8443, "/q")]
    assert dns.bootstrap == ("9.9.9.9",) and dns.workers == 3 and dns.rate_limit == 0
    assert [str(n) for n in dns.allow_networks] == ["192.168.1.0/24", "fd00::/8", "10.1.2.3/32"]
    assert (dns.upstream_timeout_s, dns.max_pending, dns.max_pending_per_client) == (0.3, 10, 2)
    assert dns.tls_ca_file == str(ca) and dns.block_mode == "nxdomain"
    assert dataclasses.astuple(dns.cache) == (5, 10, 60, 30, 0)
    assert dataclasses.astuple(dns.tcp) == (4, 2, 0.5)


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dns.rate_limit = 5  # type: ignore[misc]


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize("text, host, port", [
    ("127.0.0.1:5353", "127.0.0.1", 5353),
    ("192.168.1.2", "192.168.1.2", 53),
    (":53", "0.0.0.0", 53),
    ("[::1]:5353", "::1", 5353),
    ("[::]", "::", 53),
    ("::1", "::1", 53),
])
def test_parse_listen(text, host, port):
    assert parse_listen(text) == Listen(host, port)


@pytest.mark.parametrize("text, message", [
    ("127.0.0.1:99999", "is not a valid port"),
    ("127.0.0.1:", "is not a valid port"),
    ("127.0.0.1:-1", "is not a valid port"),
    ("localhost:53", "'localhost' is not an IP address"),
    ("[::1", "is not an address: write [IPv6]:port"),
    ("[::1]x", "is not an address: write [IPv6]:port"),
])
def test_parse_listen_refuses(text, message):
    with pytest.raises(ValueError) as caught:
        parse_listen(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("text, scheme, host, port, path", [
    ("9.9.9.9", "udp", "9.9.9.9", 53, "/dns-query"),
    ("udp://9.9.9.9:5353", "udp", "9.9.9.9", 5353, "/dns-query"),
    ("UDP://9.9.9.9", "udp", "9.9.9.9", 53, "/dns-query"),
    ("tcp://[2620:fe::fe]", "tcp", "2620:fe::fe", 53, "/dns-query"),
    ("tls://dns.quad9.net", "tls", "dns.quad9.net", 853, "/dns-query"),
    ("https://dns.quad9.net", "https", "dns.quad9.net", 443, "/dns-query"),
    ("https://doh.example:8443/resolve", "https", "doh.example", 8443, "/resolve"),
])
def test_parse_upstream(text, scheme, host, port, path):
    spec = parse_upstream(text)

    assert (spec.scheme, spec.host, spec.port, spec.path) == (scheme, host, port, path)


@pytest.mark.parametrize("text, message", [
    ("ftp://9.9.9.9", "must start with udp://, tcp://, tls:// or https://"),
    ("udp://9.9.9.9:99999", "has an invalid port"),
    ("udp://dns.quad9.net", "plain DNS upstreams need an IP address, not a host name"),
    ("tls://:853", "has no host"),
])
def test_parse_upstream_refuses(text, message):
    with pytest.raises(ValueError) as caught:
        parse_upstream(text)
    assert str(caught.value) == message


def test_parse_upstream_accepts_a_bare_ipv6_address_like_a_bare_ipv4_one():
    spec = parse_upstream("2620:fe::fe")

    assert (spec.scheme, spec.host, spec.port) == ("udp", "2620:fe::fe", 53)


# ---------------------------------------------------------------- every mistake names its path


@pytest.mark.parametrize("text, problem", [
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  listen: ["127.0.0.1:99999"]\n',
     'dns.listen[0]: "127.0.0.1:99999" is not a valid port (line 3)'),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  listen: ["localhost:53"]\n',
     "dns.listen[0]: \"localhost:53\" 'localhost' is not an IP address (line 3)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  listen: []\n',
     "dns.listen: needs at least one address (line 3)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  listen: [[53]]\n',
     "dns.listen[0]: a list must be a string (line 3)"),
    ('dns:\n  upstreams: ["ftp://9.9.9.9"]\n',
     'dns.upstreams[0]: "ftp://9.9.9.9" must start with udp://, tcp://, tls:// or https:// (line 2)'),
    ('dns:\n  upstreams:\n    - udp://9.9.9.9\n    - udp://dns.quad9.net\n',
     'dns.upstreams[1]: "udp://dns.quad9.net" plain DNS upstreams need an IP address, not a host name (line 4)'),
    ('dns:\n  upstreams: {primary: udp://9.9.9.9}\n',
     "dns.upstreams: must be a list, got a mapping (line 2)"),
    ("dns:\n  listen: [\"127.0.0.1:53\"]\n",
     "dns.upstreams: needs at least one upstream resolver (e.g. udp://9.9.9.9)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  allow_networks: ["10.0.0.0/33"]\n',
     'dns.allow_networks[0]: "10.0.0.0/33" is not a network (write e.g. 192.168.0.0/16) (line 3)'),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  bootstrap: [dns.quad9.net]\n',
     'dns.bootstrap[0]: "dns.quad9.net" is not an IP address (line 3)'),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  tls_ca_file: /nonexistent/ca.pem\n',
     'dns.tls_ca_file: "/nonexistent/ca.pem" is not a readable file (line 3)'),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  block_mode: sinkhole\n',
     'dns.block_mode: "sinkhole" must be one of blockpage, null, nxdomain (line 3)'),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  workers: 0\n',
     "dns.workers: 0 must be a whole number from 1 to 64 (line 3)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  rate_limit: yes\n',
     "dns.rate_limit: True must be a whole number from 0 to 1000000 (line 3)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  upstream_timeout: 0\n',
     "dns.upstream_timeout: 0 must be a number from 0.05 to 30 (line 3)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  max_pending: 0\n',
     "dns.max_pending: 0 must be a whole number from 1 to 1000000 (line 3)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  cache:\n    max_ttl: -1\n',
     "dns.cache.max_ttl: -1 must be a whole number from 0 to 604800 (line 4)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  cache:\n    size: lots\n',
     'dns.cache.size: "lots" must be a whole number from 0 to 10000000 (line 4)'),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  cache:\n    min_ttl: 600\n    max_ttl: 60\n',
     "dns.cache.min_ttl: 600 is above max_ttl (60) (line 4)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  cache:\n    maxttl: 60\n',
     "dns.cache.maxttl: unknown key (known here: max_ttl, min_ttl, negative_max_ttl, size, stale) (line 4)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  tcp:\n    idle_timeout: 0\n',
     "dns.tcp.idle_timeout: 0 must be a number from 0.1 to 3600 (line 4)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  tcp: 16\n',
     "dns.tcp: must be a mapping, got 16 (line 3)"),
    ('dns:\n  upstreams: [udp://9.9.9.9]\n  colour: blue\n',
     "dns.colour: unknown key (known here: allow_networks, block_mode, bootstrap, cache, https_listen, "
     "listen, max_pending, max_pending_per_client, rate_limit, tcp, tls_ca_file, tls_cert, tls_key, "
     "tls_listen, tls_names, upstream_timeout, upstreams, workers) (line 3)"),
    ('dns:\n  - udp://9.9.9.9\n',
     "dns: must be a mapping, got a list (line 2)"),
    ('timezone: Mars/Olympus_Mons\n' + MINIMAL,
     'timezone: "Mars/Olympus_Mons" is not a time zone (write e.g. Europe/London) (line 1)'),
    ('data_dir: ""\n' + MINIMAL,
     'data_dir: "" must be a folder path (line 1)'),
], ids=["listen-port", "listen-host", "listen-empty", "listen-item", "upstream-scheme", "upstream-hostname",
        "upstreams-mapping", "upstreams-missing", "network", "bootstrap", "ca-file", "block-mode", "workers",
        "rate-limit-bool", "timeout", "max-pending", "cache-max-ttl", "cache-size", "cache-min-over-max",
        "cache-unknown", "tcp-idle", "tcp-not-mapping", "dns-unknown", "dns-list", "timezone", "data-dir"])
def test_each_mistake_is_reported_with_its_path_and_line(text, problem):
    assert problem in problems_in(text)


def test_unknown_top_level_key_is_reported_with_its_line():
    problems = problems_in(MINIMAL + "colour: blue\n")

    assert [p for p in problems if p.startswith("colour: unknown key (known here: ")] != []
    assert [p for p in problems if p.startswith("colour:")][0].endswith("(line 3)")


def test_every_problem_in_a_file_is_reported_at_once_with_its_own_line():
    text = """\
timezone: UTC
dns:
  listen:
    - 127.0.0.1:53
    - 127.0.0.1:99999
  upstreams:
    - udp://9.9.9.9
  cache:
    size: lots
  tcp:
    max_per_client: 0
"""
    problems = problems_in(text)

    assert 'dns.listen[1]: "127.0.0.1:99999" is not a valid port (line 5)' in problems
    assert 'dns.cache.size: "lots" must be a whole number from 0 to 10000000 (line 9)' in problems
    assert "dns.tcp.max_per_client: 0 must be a whole number from 1 to 100000 (line 11)" in problems


def test_an_empty_upstream_list_is_one_problem():
    problems = problems_in("dns:\n  upstreams: []\n")

    assert [p for p in problems if p.startswith("dns.upstreams")] == [
        "dns.upstreams: needs at least one upstream resolver (e.g. udp://9.9.9.9) (line 2)"]


def test_a_good_config_has_no_problems():
    assert problems_in(MINIMAL) == []


# ---------------------------------------------------------------- the file itself


@pytest.mark.parametrize("text, problem", [
    ("dns:\n  listen: [\n", "filterd.yaml: not valid YAML (line 3, column 1): "),
    ('dns:\n  upstreams: ["udp://9.9.9.9"\n  workers: 2\n', "filterd.yaml: not valid YAML (line 3, column 3): "),
    ("dns:\n\tlisten: x\n", "filterd.yaml: not valid YAML (line 2, column 1): "),
    ("- 1\n- 2\n", "filterd.yaml: the top level must be a mapping of sections"),
], ids=["unclosed-list", "missing-comma", "tab", "top-level-list"])
def test_invalid_yaml_is_reported_with_line_and_column(text, problem):
    problems = problems_in(text)

    assert len(problems) == 1 and problems[0].startswith(problem)


def test_empty_file_asks_for_upstreams():
    assert problems_in("") == ["dns.upstreams: needs at least one upstream resolver (e.g. udp://9.9.9.9)"]


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")

    assert caught.value.problems == [f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory"]


def test_file_that_is_not_utf8_is_reported(tmp_path):
    path = write(tmp_path, b"dns:\n  upstreams: [\xff\xfe]\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [f"{path}: not UTF-8 text"]


def test_load_config_names_the_file_in_yaml_errors(tmp_path):
    path = write(tmp_path, "dns: [\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems[0].startswith(f"{path}: not valid YAML (line 2")


def test_read_yaml_maps_paths_to_lines():
    data, lines = read_yaml("timezone: UTC\ndns:\n  listen:\n    - 127.0.0.1:53\n  cache:\n    size: 5\n")

    assert data["dns"]["cache"]["size"] == 5
    assert (lines["timezone"], lines["dns.listen[0]"], lines["dns.cache.size"]) == (1, 4, 6)


def test_check_reports_problems_in_the_order_of_the_file_with_near_misses_named(tmp_path):
    """Problems come in line order whatever section found them, an unknown name a typo away from
    a known one gets a "did you mean", and a wrong day is quoted as the parent wrote it."""
    text = ("dns: {upstreams: ['udp://127.0.0.1:1']}\n"
            "profiles:\n"
            "  kids:\n"
            "    block_categories: [gamblingg]\n"
            "    schedules:\n"
            "      - {name: bedtime, days: [funday], start: '21:00', end: '07:00'}\n"
            "log: {mode: loud}\n"
            "notify:\n"
            "  events: {new_devices: []}\n"
            "devices:\n"
            "  - {name: tab, ip: 192.168.1.5, profile: kidz}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(*read_yaml(text))
    problems = caught.value.problems
    lines = [int(re.search(r"\(line (\d+)\)$", p).group(1)) for p in problems]
    assert lines == sorted(lines), problems
    assert any(p.startswith('profiles.kids.block_categories[0]: "gamblingg" is not a known category '
                            '(did you mean "gambling"?)') for p in problems), problems
    assert any(p.startswith('profiles.kids.schedules[0].days[0]: "funday" is not a day') for p in problems), problems


def _dns(**dns):
    return parse_config({"dns": {"upstreams": ["udp://127.0.0.1"], "listen": ["127.0.0.1:53"], **dns}}, {})


def test_encrypted_dns_is_off_unless_a_listen_address_is_given_and_takes_its_ports_by_default():
    assert not _dns().dns.encrypted.on
    encrypted = _dns(tls_listen=["192.168.1.2"], https_listen=["[::1]"], tls_names=["Filter.Home."]).dns.encrypted
    assert encrypted.on
    assert [(l.host, l.port) for l in encrypted.tls_listen + encrypted.https_listen] == [
        ("192.168.1.2", 853), ("::1", 443)]
    assert encrypted.names == ("filter.home",)


@pytest.mark.parametrize("dns, problem", [
    ({"tls_listen": ["127.0.0.1:53"]}, 'dns.tls_listen[0]: "127.0.0.1:53" is already used by another dns listener'),
    ({"tls_listen": ["127.0.0.1:853"], "https_listen": ["127.0.0.1:853"]},
     'dns.https_listen[0]: "127.0.0.1:853" is already used by another dns listener'),
    ({"tls_names": ["filter"]}, 'dns.tls_names[0]: "filter" is not a host name (write e.g. filter.home)'),
    ({"tls_cert": "/nonexistent/cert.pem", "tls_key": "/etc/hostname"},
     'dns.tls_cert: "/nonexistent/cert.pem" is not a readable file'),
    ({"tls_key": "/etc/hostname"}, "dns.tls_cert: is needed too"),
])
def test_encrypted_dns_mistakes_are_refused_with_their_path(dns, problem):
    with pytest.raises(ConfigError) as caught:
        _dns(**dns)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
