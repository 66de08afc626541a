"""Daily limits over real DNS: the daemon counts a device's minutes from its queries, closes the
limit's names for that device (EDE Filtered) once the day's allowance is used, keeps the count
across a restart, and opens again when a parent adds time — while another device of the same
profile, and names outside the limit, go on resolving.

The allowance here is one minute, so the first counted query uses it up; the long trace (a device
asking every 20 s against `daily: 2m`) is in docs/limits.md's simulator.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dnslib import RCODE

from conftest import wait_until
from filterd.family import limits
from filterd.rules.config import load_config
from filterd.store import state

ROOT = Path(__file__).resolve().parents[2]
TABLET, CONSOLE, PARENT = "127.0.0.11", "127.0.0.12", "127.0.0.13"
CLOSE_S = 20.0      # minutes are merged every 5 s; generous for a busy machine


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    extra = {
        "web": {"address": "192.168.1.2", "hostnames": ["filter.home"]},
        "profiles": {
            "kids": {"limits": [{"name": "youtube", "services": ["youtube"], "daily": "1m"}]},
            "adults": {},
        },
        "devices": [{"name": "tablet", "ip": TABLET, "profile": "kids"},
                    {"name": "console", "ip": CONSOLE, "profile": "kids"},
                    {"name": "parent", "ip": PARENT, "profile": "adults"}],
        "default_profile": "adults",
    }
    return module_daemons([f"udp://127.0.0.1:{standin.port}"], extra=extra)


def blocked(reply) -> bool:
    return any(str(rr.rdata) == "192.168.1.2" for rr in reply.rr)


def test_a_used_up_allowance_closes_the_limit_for_that_device_only_and_survives_a_restart(daemon):
    first = daemon.ask("www.youtube.com", source=TABLET)
    assert first.header.rcode == RCODE.NOERROR and not blocked(first)
    assert all(rr.ttl <= 60 for rr in first.rr)       # a device in use keeps asking
    wait_until(lambda: blocked(daemon.ask("www.youtube.com", source=TABLET)), timeout=CLOSE_S,
               message="the tablet's YouTube to close once its minute is used")
    closed = daemon.ask("m.youtube.com", source=TABLET, edns=1232)
    assert blocked(closed)
    ede = [o for o in closed.ar[0].rdata if o.code == 15] if closed.ar else []
    assert ede and int.from_bytes(ede[0].data[:2], "big") == 17        # EDE 17 Filtered
    assert not blocked(daemon.ask("www.wikipedia.org", source=TABLET))   # outside the limit
    assert not blocked(daemon.ask("www.youtube.com", source=CONSOLE))    # its own allowance
    assert not blocked(daemon.ask("www.youtube.com", source=PARENT))     # no limit at all

    # A restart neither forgets nor counts again: the tablet is closed from the first query.
    daemon.terminate()
    daemon.start()
    assert blocked(daemon.ask("www.youtube.com", source=TABLET))
    config = load_config(daemon.config_path)
    db = state.connect(state.db_path(config.data_dir))
    try:
        [row] = [u for u in limits.usage(db, config, "tablet") if u.name == "youtube"]
        assert row.used_minutes in (1, 2) and row.spent     # a minute boundary may fall in between
    finally:
        db.close()


def test_a_parent_adding_time_opens_it_again(daemon):
    wait_until(lambda: blocked(daemon.ask("www.youtube.com", source=TABLET)), timeout=CLOSE_S,
               message="the tablet's YouTube closed")
    added = subprocess.run([sys.executable, "-m", "filterd", "limits", "tablet", "--extend", "youtube=10m",
                            "--config", str(daemon.config_path)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert added.returncode == 0, added.stderr
    assert "(+10 added today)" in added.stdout
    wait_until(lambda: not blocked(daemon.ask("www.youtube.com", source=TABLET)), timeout=CLOSE_S,
               message="the tablet's YouTube to open again after the extension")
