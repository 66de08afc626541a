"""DHCP for real: two network namespaces joined by a veth pair; `filterd dhcp` (dnsmasq, DHCP
only) serves one side, busybox udhcpc asks from the other, receives an address and the filter
as its DNS server, and the lease shows up in the web UI's device list."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
SERVER_ADDRESS = "10.77.0.2"          # the filter's address on the LAN side
ROUTER = "10.77.0.1"
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with the event as $1 and the lease in the environment.
if [ "$1" = bound ]; then
  printf 'ip=%s\\nsubnet=%s\\nrouter=%s\\ndns=%s\\n' "$ip" "$subnet" "$router" "$dns" > "{out}"
fi
"""


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def _need_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in ("ip", "dnsmasq", "busybox"):
        if shutil.which(tool, path=SBIN) is None:
            pytest.skip(f"{tool} is not installed (make test installs it)")


@pytest.fixture
def lan():
    """Two namespaces, 'filter' and 'kid', joined by a veth pair; the filter side has its address."""
    _need_tools()
    tag = f"{os.getpid() % 100000}"
    filter_ns, kid_ns = f"fdsrv{tag}", f"fdcli{tag}"
    filter_if, kid_if = f"fdv{tag}s", f"fdv{tag}c"
    probe = _run("ip", "netns", "add", filter_ns)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    try:
        steps = [
            ("ip", "netns", "add", kid_ns),
            ("ip", "link", "add", filter_if, "type", "veth", "peer", "name", kid_if),
            ("ip", "link", "set", filter_if, "netns", filter_ns),
            ("ip", "link", "set", kid_if, "netns", kid_ns),
            ("ip", "-n", filter_ns, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", filter_if),
            ("ip", "-n", filter_ns, "link", "set", filter_if, "up"),
            ("ip", "-n", filter_ns, "link", "set", "lo", "up"),
            ("ip", "-n", kid_ns, "link", "set", kid_if, "up"),
        ]
        for step in steps:
            result = _run(*step)
            if result.returncode != 0:
                pytest.skip(f"cannot set up the veth pair ({' '.join(step)}): {result.stderr.strip()}")
        mac = re.search(r"link/ether ([0-9a-f:]{17})", _run("ip", "-n", kid_ns, "link", "show", kid_if).stdout).group(1)
        yield {"filter_ns": filter_ns, "kid_ns": kid_ns, "filter_if": filter_if, "kid_if": kid_if, "kid_mac": mac}
    finally:
        _run("ip", "netns", "del", kid_ns)
        _run("ip", "netns", "del", filter_ns)


def test_device_gets_an_address_and_the_filter_as_dns_and_appears_in_the_device_list(lan, tmp_path):
    from webui_fixtures import CONFIG_TEXT, Env

    data_dir = tmp_path / "var"
    config_text = CONFIG_TEXT.format(data_dir=data_dir).replace("address: 192.168.1.2", f"address: {SERVER_ADDRESS}") + f"""
dhcp:
  enabled: true
  interface: {lan['filter_if']}
  range: "10.77.0.100-10.77.0.120"
  netmask: 255.255.255.0
  router: {ROUTER}
  lease_time: 1h
"""
    env = Env(tmp_path, config_text)
    log_path = tmp_path / "dnsmasq.log"
    with open(log_path, "wb") as log:
        dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", lan["filter_ns"], sys.executable, "-m", "filterd", "dhcp",
             "--config", str(env.config_path)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until(lambda: dnsmasq.poll() is not None or "DHCP, IP range" in log_path.read_text(errors="replace"),
                   timeout=15, message="dnsmasq to start")
        assert dnsmasq.poll() is None, log_path.read_text()
        out = tmp_path / "lease.env"
        script = tmp_path / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)
        client = _run("ip", "netns", "exec", lan["kid_ns"], "busybox", "udhcpc", "-i", lan["kid_if"], "-f", "-q",
                      "-n", "-t", "10", "-T", "1", "-x", "hostname:emma-tablet", "-s", str(script))
        assert client.returncode == 0, client.stdout + client.stderr + log_path.read_text()
        got = dict(line.split("=", 1) for line in out.read_text().splitlines())
        assert got["dns"].split() == [SERVER_ADDRESS]       # DHCP option 6: the filter, and only it
        assert got["router"] == ROUTER
        assert got["subnet"] == "255.255.255.0"
        ip = got["ip"]
        assert ip.startswith("10.77.0.") and 100 <= int(ip.rsplit(".", 1)[1]) <= 120

        leases = data_dir / "dhcp.leases"
        wait_until(lambda: leases.exists() and lan["kid_mac"] in leases.read_text(), timeout=5,
                   message="the lease in dnsmasq's lease file")
        rows = env.logged_in().get("/api/devices").get_json()
        row = next((r for r in rows if r["ip"] == ip), None)
        assert row is not None, rows
        assert (row["mac"], row["hostname"], row["lease"], row["known"]) == \
            (lan["kid_mac"], "emma-tablet", True, False)
    finally:
        os.killpg(dnsmasq.pid, signal.SIGTERM)
        dnsmasq.wait(timeout=10)
