"""The dnsmasq config made from the dhcp: section (checked by the real dnsmasq; the section itself
is parsed in test_dhcp_settings.py), dnsmasq's lease file read back, and leases as naming defaults
on the Devices page and in /api/devices."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from webui_fixtures import CONFIG_TEXT, Env

from filterd.house import dhcp
from filterd.rules.config import parse_config, read_yaml

BASE = """
timezone: UTC
data_dir: {data_dir}
dns: {{upstreams: ["udp://127.0.0.1:1"]}}
web: {{address: 192.168.1.2}}
"""
DHCP_ON = """
dhcp:
  enabled: true
  interface: eth0
  range: "192.168.1.100-192.168.1.199"
  netmask: 255.255.255.0
  router: 192.168.1.1
  lease_time: 12h
  domain: home
"""


def config_from(text: str, tmp_path: Path):
    data, lines = read_yaml(BASE.format(data_dir=tmp_path / "var") + text)
    return parse_config(data, lines, tmp_path / "filterd.yaml")


def test_no_leases_are_read_while_dhcp_is_off(tmp_path):
    assert dhcp.current_leases(config_from("", tmp_path), time.time()) == []


def test_a_lease_file_inside_the_data_directory_is_kept(tmp_path):
    config = config_from(f"dhcp: {{enabled: false, lease_file: {tmp_path / 'var' / 'd.leases'}}}", tmp_path)
    assert dhcp.lease_path(config) == tmp_path / "var" / "d.leases"


def test_the_dnsmasq_writer_refuses_a_line_with_a_newline_whatever_reached_it(tmp_path):
    import dataclasses
    config = config_from(DHCP_ON, tmp_path)
    forged = dataclasses.replace(config, dhcp=dataclasses.replace(config.dhcp, interface="eth0\ndhcp-script=/x"))
    with pytest.raises(dhcp.DhcpError, match="control character"):
        dhcp.dnsmasq_config(forged)


def test_dnsmasq_config_serves_dhcp_only_and_names_the_filter_as_dns_server(tmp_path):
    text = dhcp.dnsmasq_config(config_from(DHCP_ON, tmp_path))
    lines = text.splitlines()
    assert "port=0" in lines                      # no DNS from dnsmasq: port 53 stays filterd's
    assert "dhcp-range=192.168.1.100,192.168.1.199,255.255.255.0,43200" in lines
    assert "dhcp-option=option:router,192.168.1.1" in lines
    assert "dhcp-option=option:dns-server,192.168.1.2" in lines    # web.address, the filter
    assert f"dhcp-leasefile={tmp_path / 'var' / 'dhcp.leases'}" in lines
    assert "interface=eth0" in lines and "dhcp-option=option:domain-name,home" in lines


def test_dnsmasq_config_prefers_dhcp_dns_server_and_needs_one(tmp_path):
    config = config_from(DHCP_ON + "  dns_server: 192.168.1.3\n", tmp_path)
    assert "dhcp-option=option:dns-server,192.168.1.3" in dhcp.dnsmasq_config(config).splitlines()
    data, lines = read_yaml(f"data_dir: {tmp_path}\ndns: {{upstreams: [udp://127.0.0.1:1]}}\n" + DHCP_ON)
    without_address = parse_config(data, lines)
    with pytest.raises(dhcp.DhcpError, match=r"^dhcp\.dns_server: not set, and neither is web\.address"):
        dhcp.dnsmasq_config(without_address)


@pytest.mark.skipif(shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin") is None, reason="dnsmasq not installed")
def test_dnsmasq_accepts_the_generated_config(tmp_path):
    path = dhcp.write_dnsmasq_config(config_from(DHCP_ON, tmp_path), tmp_path / "run")
    dnsmasq = shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin")
    result = subprocess.run([dnsmasq, "--test", f"--conf-file={path}"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "syntax check OK" in result.stderr, result.stderr


def test_filterd_dhcp_print_shows_the_config_and_refuses_when_off(tmp_path):
    config_file = tmp_path / "filterd.yaml"
    config_file.write_text(BASE.format(data_dir=tmp_path / "var") + DHCP_ON)
    shown = subprocess.run([sys.executable, "-m", "filterd", "dhcp", "--config", str(config_file), "--print"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "port=0\n" in shown.stdout, shown.stderr
    config_file.write_text(BASE.format(data_dir=tmp_path / "var"))
    refused = subprocess.run([sys.executable, "-m", "filterd", "dhcp", "--config", str(config_file)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "filterd: dhcp.enabled: is not true — set it (with dhcp.range and " \
                                     "dhcp.router) to serve DHCP"


def test_lease_file_is_read_skipping_expired_and_unreadable_lines(tmp_path):
    now = 1_700_000_000
    path = tmp_path / "dhcp.leases"
    path.write_text(f"{now + 600} AA:BB:CC:00:11:22 192.168.1.120 emma-ipad 01:aa:bb:cc:00:11:22\n"
                    f"{now - 1} aa:bb:cc:00:11:33 192.168.1.121 old-laptop *\n"
                    f"0 aa:bb:cc:00:11:44 192.168.1.122 * *\n"
                    "duid 00:01:00:01:2c:aa\n"
                    "garbage\n")
    assert dhcp.read_leases(path, now) == [
        dhcp.Lease("aa:bb:cc:00:11:22", "192.168.1.120", "emma-ipad", float(now + 600)),
        dhcp.Lease("aa:bb:cc:00:11:44", "192.168.1.122", None, None),
    ]
    assert dhcp.read_leases(tmp_path / "none-yet", now) == []


def _env_with_leases(tmp_path: Path, leases: str) -> Env:
    text = CONFIG_TEXT.format(data_dir=tmp_path / "var") + DHCP_ON
    env = Env(tmp_path, text)
    (tmp_path / "var").mkdir(exist_ok=True)
    (tmp_path / "var" / "dhcp.leases").write_text(leases)
    return env


def test_leases_give_new_devices_their_host_name_and_mac_in_the_device_list(tmp_path):
    expiry = int(time.time()) + 3600
    env = _env_with_leases(tmp_path, f"{expiry} 3c:22:fb:00:00:01 192.168.1.150 noah-switch *\n"
                                     f"{expiry} 3c:22:fb:00:00:02 192.168.1.23 tablet *\n")
    now = time.time()
    env.execute("INSERT INTO clients_seen (client, mac, device, hostname, first_seen, last_seen, queries)"
                " VALUES ('192.168.1.151', NULL, NULL, NULL, ?, ?, 3)", (now, now))
    parent = env.logged_in()
    rows = parent.get("/api/devices").get_json()
    new = next(r for r in rows if r["ip"] == "192.168.1.150")
    assert (new["name"], new["hostname"], new["mac"], new["known"], new["lease"]) == \
        (None, "noah-switch", "3c:22:fb:00:00:01", False, True)
    configured = next(r for r in rows if r["name"] == "kids-tablet")
    assert configured["mac"] == "3c:22:fb:00:00:02" and configured["lease"] is True
    unleased = next(r for r in rows if r["ip"] == "192.168.1.151")
    assert unleased["lease"] is False and unleased["hostname"] is None
    page = parent.get("/devices").get_data(as_text=True)
    assert "New device: noah-switch" in page
    assert 'name="name" value="noah-switch"' in page          # the default when naming it
    assert 'name="mac" value="3c:22:fb:00:00:01"' in page


def test_lease_host_names_are_escaped_on_the_devices_page(tmp_path):
    expiry = int(time.time()) + 3600
    env = _env_with_leases(tmp_path, f"{expiry} 3c:22:fb:00:00:09 192.168.1.160 <b>x</b> *\n")
    page = env.logged_in().get("/devices").get_data(as_text=True)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
