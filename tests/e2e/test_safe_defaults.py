"""Safe by default, over real DNS: with the config a fresh install ships (packaging/filterd.yaml,
and the repository's example config/filterd.yaml), a device nobody has named is filtered; one
tap on "A parent's device" in the web UI takes a parent's laptop out of the filter, and the
real daemon applies it.

Only the `dns:` section is the test's own (loopback port, a stand-in upstream) and the list
URLs are left out (no download here): the category seed lists are compiled all the same.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dnslib import QTYPE, RCODE

from conftest import wait_until
from webui_fixtures import Env, csrf_from, version_from

REPO = Path(__file__).resolve().parents[2]
FILTER_ADDRESS = "192.168.1.2"
STRANGER, PARENT = "127.0.0.9", "127.0.0.10"
ADULT_SITE = "pornhub.com"          # in the adult seed list (config/lists/adult.txt)
PICKUP_S = 6.0


def shipped_daemon(module_daemons, standin, config_file: Path):
    shipped = yaml.safe_load(config_file.read_text())
    extra = {key: value for key, value in shipped.items() if key not in ("dns", "data_dir", "timezone", "lists")}
    extra["web"] = {**shipped.get("web", {}), "address": FILTER_ADDRESS}
    return module_daemons([f"udp://127.0.0.1:{standin.port}"], extra=extra)


def blocked(daemon, name: str, source: str) -> bool:
    reply = daemon.ask(name, source=source)
    addresses = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
    return reply.header.rcode == RCODE.NOERROR and addresses == [FILTER_ADDRESS]


@pytest.mark.parametrize("config_file", ["packaging/filterd.yaml", "config/filterd.yaml"])
def test_a_device_nobody_has_named_is_filtered(module_daemons, standin, config_file):
    daemon = shipped_daemon(module_daemons, standin, REPO / config_file)
    assert blocked(daemon, ADULT_SITE, STRANGER), f"{config_file}: an unnamed device reached {ADULT_SITE}"
    assert blocked(daemon, f"www.{ADULT_SITE}", STRANGER)
    assert not blocked(daemon, "homework.example", STRANGER)


def test_one_tap_makes_a_parents_laptop_unfiltered(module_daemons, standin):
    daemon = shipped_daemon(module_daemons, standin, REPO / "packaging" / "filterd.yaml")
    assert blocked(daemon, ADULT_SITE, PARENT)         # the laptop asks: a new device, filtered
    wait_until(lambda: PARENT in _seen(daemon), timeout=PICKUP_S,
               message="the query log to list the new device")

    # The web UI on the daemon's own files: the parent taps "A parent's device" on its card.
    env = Env(daemon.folder, daemon.config_path.read_text())
    admin = env.logged_in()
    page = admin.get("/devices").get_data(as_text=True)
    assert f"New device at {PARENT}" in page and "A parent's device" in page
    response = admin.post("/devices/parents", data={"csrf_token": csrf_from(page), "version": version_from(page),
                                                    "name": "", "ip": PARENT, "mac": ""})
    assert response.status_code == 302
    wait_until(lambda: not blocked(daemon, ADULT_SITE, PARENT), timeout=PICKUP_S,
               message="the daemon to apply the parent's device")
    assert blocked(daemon, ADULT_SITE, STRANGER)       # every other unnamed device stays filtered


def _seen(daemon) -> str:
    from filterd.store import state
    conn = state.connect(state.db_path(daemon.folder / "var"))
    try:
        return " ".join(row[0] for row in conn.execute("SELECT client FROM clients_seen"))
    finally:
        conn.close()
