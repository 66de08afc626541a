"""`filterd/rules/dhcp_settings.py`: the `dhcp:` section, parsed and checked from real YAML. Every
value ends up in a dnsmasq config file, so each is matched in full: a value that would add a
dnsmasq directive of its own is refused, naming its YAML path."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_dhcp import DHCP_ON, config_from

from filterd.rules import dhcp_settings
from filterd.rules.checking import Checker
from filterd.rules.config import ConfigError


def problems_of(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from(text, tmp_path)
    return caught.value.problems


def test_dhcp_is_off_when_the_section_is_missing(tmp_path):
    config = config_from("", tmp_path)
    assert config.dhcp == dhcp_settings.DhcpConfig()
    assert config.dhcp.enabled is False


def test_dhcp_section_is_read_into_typed_settings(tmp_path):
    settings = config_from(DHCP_ON, tmp_path).dhcp
    assert settings == dhcp_settings.DhcpConfig(enabled=True, interface="eth0", range_start="192.168.1.100",
                                       range_end="192.168.1.199", netmask="255.255.255.0", router="192.168.1.1",
                                       lease_time_s=43_200, dns_server=None, domain="home")


@pytest.mark.parametrize("section, path, words", [
    ("dhcp: {enabled: true, router: 192.168.1.1}", "dhcp.range", "is needed"),
    ('dhcp: {enabled: true, range: "192.168.1.100-192.168.1.199"}', "dhcp.router", "is needed"),
    ('dhcp: {enabled: true, range: "192.168.1.200-192.168.1.100", router: 192.168.1.1}', "dhcp.range",
     "starts after it ends"),
    ('dhcp: {enabled: true, range: "192.168.1.100", router: 192.168.1.1}', "dhcp.range", "FIRST-LAST"),
    ('dhcp: {enabled: true, range: "192.168.1.100-192.168.1.199", router: gateway}', "dhcp.router",
     "not an IPv4 address"),
    ('dhcp: {enabled: true, range: "10.0.0.5-10.0.0.9", router: 192.168.1.1, netmask: 255.255.255.0}',
     "dhcp.range", "outside the router's network 192.168.1.0/24"),
    ('dhcp: {enabled: true, range: "192.168.1.100-192.168.1.199", router: 192.168.1.1, lease_time: 30s}',
     "dhcp.lease_time", "from 2m to 365d"),
    ('dhcp: {enabled: yes please}', "dhcp.enabled", "true or false"),
    ('dhcp: {enabled: false, interface: "eth0; reboot"}', "dhcp.interface", "not a network interface"),
    ('dhcp: {enabled: false, lease_file: leases.txt}', "dhcp.lease_file", "absolute"),
    ('dhcp: {enabled: false, lease: 1h}', "dhcp.lease", "unknown key"),
])
def test_bad_dhcp_settings_are_refused_naming_their_yaml_path(tmp_path, section, path, words):
    problems = problems_of(section, tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: ") and words in problems[0], problems


@pytest.mark.parametrize("section, path", [
    ('dhcp: {enabled: false, interface: "eth0\\n"}', "dhcp.interface"),
    ('dhcp: {enabled: false, interface: "eth0\\ndhcp-script=/tmp/x"}', "dhcp.interface"),
    ('dhcp: {enabled: false, domain: "home\\nserver=6.6.6.6"}', "dhcp.domain"),
    ('dhcp: {enabled: false, lease_time: "12\\n"}', "dhcp.lease_time"),
    ('dhcp: {enabled: false, lease_file: "{data_dir}/l\\nconf-file=/tmp/evil"}', "dhcp.lease_file"),
    ('dhcp: {enabled: false, lease_file: /etc/dhcp.leases}', "dhcp.lease_file"),
    ('dhcp: {enabled: false, lease_file: "{data_dir}/../outside.leases"}', "dhcp.lease_file"),
])
def test_a_value_that_would_add_a_dnsmasq_directive_is_refused(tmp_path, section, path):
    """A newline (accepted by a restore, `re.match('^…$')` lets "eth0\\n" through) would turn the
    rest of a value into dnsmasq directives of its own: a script run as root, a rogue DNS server."""
    problems = problems_of(section.replace("{data_dir}", str(tmp_path / "var")), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: "), problems


def test_lease_time_accepts_minutes_hours_days_and_seconds():
    assert [dhcp_settings.parse_duration_s(v) for v in ("30m", "12h", "1d", 3600, "90 s", "soon", True)] == \
        [1800, 43200, 86400, 3600, 90, None, None]


def test_a_range_may_be_written_as_a_list_and_a_netmask_as_a_prefix_length(tmp_path):
    settings = config_from('dhcp: {enabled: true, range: [192.168.1.10, 192.168.1.20], router: 192.168.1.1,'
                           ' netmask: 24}\n', tmp_path).dhcp
    assert (settings.range_start, settings.range_end, settings.netmask) == \
        ("192.168.1.10", "192.168.1.20", "255.255.255.0")


def test_a_domain_is_kept_lower_case_without_its_final_dot(tmp_path):
    assert config_from("dhcp: {enabled: false, domain: Home.Lan.}\n", tmp_path).dhcp.domain == "home.lan"


def test_a_section_switched_off_is_still_checked(tmp_path):
    """A parent switching DHCP on later must not meet an old mistake only then."""
    assert problems_of('dhcp: {enabled: false, router: 192.168.1.999}', tmp_path)[0].startswith("dhcp.router: ")


def test_an_enabled_section_without_a_router_or_range_names_both(tmp_path):
    problems = problems_of("dhcp: {enabled: true}", tmp_path)
    assert [p.split(":")[0] for p in problems] == ["dhcp.range", "dhcp.router"]


def test_a_lease_file_is_checked_against_the_data_directory_only_when_it_is_known():
    check = Checker({})
    settings = dhcp_settings.parse_dhcp_config({"lease_file": "/srv/dhcp.leases"}, check)
    assert settings.lease_file == "/srv/dhcp.leases" and check.problems == []
    check = Checker({})
    settings = dhcp_settings.parse_dhcp_config({"lease_file": "/srv/dhcp.leases"}, check,
                                               data_dir=Path("/var/lib/filterd"))
    assert settings.lease_file is None
    assert check.problems == ['dhcp.lease_file: "/srv/dhcp.leases" must be inside the data directory (/var/lib/filterd)']


@pytest.mark.parametrize("value, seconds", [("2m", 120), ("365d", 365 * 86400), ("120", 120)])
def test_the_shortest_and_longest_leases_are_accepted(tmp_path, value, seconds):
    section = DHCP_ON.replace("lease_time: 12h", f"lease_time: {value}")
    assert config_from(section, tmp_path).dhcp.lease_time_s == seconds


@pytest.mark.parametrize("value", ["1m", "366d", "0", "-5m", "12 hours"])
def test_a_lease_shorter_than_dnsmasq_allows_or_longer_than_a_year_is_refused(tmp_path, value):
    section = DHCP_ON.replace("lease_time: 12h", f'lease_time: "{value}"')
    [problem] = problems_of(section, tmp_path)
    assert problem.startswith("dhcp.lease_time: ") and "from 2m to 365d" in problem
