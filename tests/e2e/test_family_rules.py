"""The parents' rules over real DNS: pause, resume, temporary allow, bonus time, expiry, bypass
protection, the filter's own host name and the age presets — with the real daemon
(`python -m filterd run`), the real `filterd` command and a stand-in upstream.

The client's source address picks the device: 127.0.0.1 is the tablet, 127.0.0.2 the laptop (both
profile kids), and one device per other profile on 127.0.0.3–6. One daemon serves the whole
module; before each test every override is ended and the daemon is seen to have noticed.
"""
from __future__ import annotations

import datetime
import os
import struct
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest
import yaml
from dnslib import QTYPE, RCODE, DNSRecord

from conftest import wait_until
from filterd import cli
from filterd.store import overrides, state
from filterd.rules.config import load_config
from standin import name_address

# A house far from UTC and without DST: a schedule read in the wrong zone would miss "now".
HOUSE_TZ = "Asia/Kolkata"
FILTER_ADDRESS = "192.168.1.2"
PICKUP_S = 6.0   # the daemon looks at the state DB once a second; generous for a busy machine

TABLET, LAPTOP, YOUNG, TEEN, ADULT, NIGHT = (f"127.0.0.{i}" for i in range(1, 7))
DEVICES = [
    {"name": "tablet", "ip": TABLET, "profile": "kids"},
    {"name": "laptop", "ip": LAPTOP, "profile": "kids"},
    {"name": "young-pad", "ip": YOUNG, "profile": "young"},
    {"name": "teen-phone", "ip": TEEN, "profile": "teen"},
    {"name": "parent-pc", "ip": ADULT, "profile": "adult"},
    {"name": "night-pad", "ip": NIGHT, "profile": "night"},
]


def bedtime_around_now() -> tuple[str, str]:
    """A window from two hours ago to two hours ahead, on the house's wall clock."""
    local = datetime.datetime.now(ZoneInfo(HOUSE_TZ))
    two_hours = datetime.timedelta(hours=2)
    return f"{local - two_hours:%H:%M}", f"{local + two_hours:%H:%M}"


@pytest.fixture(scope="module")
def daemon(module_daemons, standin):
    start, end = bedtime_around_now()
    extra = {
        "timezone": HOUSE_TZ,
        "web": {"address": FILTER_ADDRESS, "hostnames": ["filter.home"]},
        "profiles": {
            "kids": {"preset": "child", "block_services": ["youtube"],
                     "allow": ["homework.example"], "block": ["bücher.example"]},
            "young": {"preset": "young_child"},
            "teen": {"preset": "teen"},
            "adult": {"preset": "adult"},
            "night": {"schedules": [{"name": "bedtime", "days": ["daily"], "start": start, "end": end,
                                     "block": "all"}]},
        },
        "devices": DEVICES,
        "default_profile": "adult",
    }
    started = module_daemons([f"udp://127.0.0.1:{standin.port}"], extra=extra)
    started.bedtime_end = end
    return started


@pytest.fixture(scope="module")
def db(daemon):
    connection = state.connect(state.db_path(daemon.folder / "var"))
    yield connection
    connection.close()


@pytest.fixture(autouse=True)
def no_overrides(request):
    """Every daemon test starts from the configured rules alone, as the daemon serves them."""
    if "daemon" not in request.fixturenames:
        return
    daemon, db = request.getfixturevalue("daemon"), request.getfixturevalue("db")
    db.execute("UPDATE overrides SET ended = ? WHERE ended IS NULL", (time.time(),))
    wait_until(lambda: answered(daemon, "settle.example", TABLET) and answered(daemon, "settle.example", LAPTOP)
               and blocked(daemon, "settle.example", NIGHT) == (17, "filtered: schedule"),
               timeout=PICKUP_S, message="the daemon to drop every override")


# ---------------------------------------------------------------- asking as a device


def ask(daemon, name: str, source: str, qtype: str = "A") -> DNSRecord:
    return daemon.ask(name, qtype, source=source, edns=1232)


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def ede(reply: DNSRecord) -> tuple[int, str] | None:
    """The Extended DNS Error (code, text) of a reply, None when it has none."""
    for rr in reply.ar:
        if rr.rtype == QTYPE.OPT:
            for option in rr.rdata:
                if option.code == 15:
                    return struct.unpack(">H", option.data[:2])[0], option.data[2:].decode()
    return None


def answered(daemon, name: str, source: str) -> bool:
    """The upstream's own answer came back (the stand-in's address for this name)."""
    reply = ask(daemon, name, source)
    return reply.header.rcode == RCODE.NOERROR and addresses(reply) == [name_address(name)] and ede(reply) is None


def restricted(daemon, name: str, source: str, target: str = "restrict.youtube.com") -> bool:
    """Answered through SafeSearch: a CNAME to the safe host, then that host's address."""
    reply = ask(daemon, name, source)
    cnames = [str(rr.rdata).rstrip(".") for rr in reply.rr if rr.rtype == QTYPE.CNAME]
    return reply.header.rcode == RCODE.NOERROR and cnames == [target] and \
        addresses(reply) == [name_address(target)]


def blocked(daemon, name: str, source: str) -> tuple[int, str] | None:
    """(EDE code, text) when the block page's address came back with an EDE, else None."""
    reply = ask(daemon, name, source)
    if reply.header.rcode == RCODE.NOERROR and addresses(reply) == [FILTER_ADDRESS]:
        return ede(reply)
    return None


def filterd(daemon, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `filterd` command against the daemon's config."""
    return subprocess.run([sys.executable, "-m", "filterd", *args, "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60, cwd=daemon.folder,
                          env={**os.environ, **(env or {})})


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout.strip()


PAUSED = (17, "filtered: pause")


# ---------------------------------------------------------------- pause and resume


def test_pausing_the_tablet_blocks_it_alone_until_resumed(daemon):
    name = "pause-device.example"
    assert ok(filterd(daemon, "pause", "tablet", "--for", "30m")).startswith("paused tablet until ")
    wait_until(lambda: blocked(daemon, name, TABLET) == PAUSED, timeout=PICKUP_S, message="the tablet paused")
    assert answered(daemon, name, LAPTOP)

    assert ok(filterd(daemon, "resume", "tablet")) == "resumed tablet"
    wait_until(lambda: answered(daemon, name, TABLET), timeout=PICKUP_S, message="the tablet answered again")
    again = filterd(daemon, "resume", "tablet")          # nothing to resume: exit 1, nothing audited
    assert (again.returncode, again.stderr) == (1, "filterd: tablet was not paused: nothing changed\n")


def test_pausing_a_profile_blocks_both_devices_but_not_its_allow_list(daemon):
    name = "pause-profile.example"
    assert ok(filterd(daemon, "pause", "kids")) == "paused kids until resumed"
    wait_until(lambda: blocked(daemon, name, TABLET) == PAUSED and blocked(daemon, name, LAPTOP) == PAUSED,
               timeout=PICKUP_S, message="both kids devices paused")
    for source in (TABLET, LAPTOP):
        assert answered(daemon, "homework.example", source)
        assert answered(daemon, "www.homework.example", source)
    assert answered(daemon, name, ADULT)   # another profile goes on as before

    assert ok(filterd(daemon, "resume", "kids")) == "resumed kids"
    wait_until(lambda: answered(daemon, name, TABLET) and answered(daemon, name, LAPTOP),
               timeout=PICKUP_S, message="both kids devices answered again")


def test_pause_of_an_unknown_device_is_one_line_naming_the_known_ones(daemon):
    result = filterd(daemon, "pause", "phone", "--for", "30m")
    assert result.returncode == 2
    assert result.stderr.strip().startswith('filterd: no device or profile named "phone" (devices: tablet, laptop,')


def test_pause_with_a_bad_duration_is_refused(daemon):
    result = filterd(daemon, "pause", "tablet", "--for", "soon")
    assert result.returncode == 2
    assert result.stderr.strip() == 'filterd: "soon" is not a duration (write e.g. 30m, 1h, 1h30m, 2d)'


# ---------------------------------------------------------------- temporary allow


def test_allowing_youtube_for_the_tablet_leaves_the_laptop_blocked(daemon):
    youtube = (15, "blocked: youtube")
    for name in ("www.youtube.com", "i.ytimg.com"):
        assert blocked(daemon, name, TABLET) == youtube
    assert ok(filterd(daemon, "allow", "youtube", "--device", "tablet", "--for", "1h")).startswith(
        "allowed youtube for tablet until ")
    # Allowed, but still in the profile's restricted mode (youtube: strict from the child preset).
    wait_until(lambda: restricted(daemon, "www.youtube.com", TABLET), timeout=PICKUP_S,
               message="YouTube allowed on the tablet")
    assert answered(daemon, "i.ytimg.com", TABLET)
    for name in ("www.youtube.com", "i.ytimg.com"):
        assert blocked(daemon, name, LAPTOP) == youtube


@pytest.mark.parametrize("what, name, before", [
    ("bet365.com", "www.bet365.com", (15, "blocked: gambling")),                 # a category of the preset
    ("Bücher.Example", "shop.xn--bcher-kva.example", (17, "filtered: profile block")),   # IDN, own block list
], ids=["category", "idn-block-list"])
def test_allowing_a_domain_for_the_tablet_leaves_the_laptop_blocked(daemon, what, name, before):
    assert blocked(daemon, name, TABLET) == before
    ok(filterd(daemon, "allow", what, "--device", "tablet", "--for", "1h"))
    wait_until(lambda: answered(daemon, name, TABLET), timeout=PICKUP_S, message=f"{name} allowed on the tablet")
    assert blocked(daemon, name, LAPTOP) == before


# ---------------------------------------------------------------- expiry


def test_a_pause_ends_by_itself_when_its_time_is_up(daemon, db):
    name = "expiring-pause.example"
    config = load_config(daemon.config_path)
    overrides.pause(db, config, "tablet", 5, time.time(), source="test")
    wait_until(lambda: blocked(daemon, name, TABLET) == PAUSED, timeout=5, message="the short pause to apply")
    # Nothing else changes from here on: the clock alone must end it.
    wait_until(lambda: answered(daemon, name, TABLET), timeout=PICKUP_S + 5, message="the pause to run out")


def test_a_temporary_allow_ends_by_itself_when_its_until_passes(daemon, db):
    name = "www.youtube.com"
    ok(filterd(daemon, "allow", "youtube", "--device", "tablet", "--for", "1h"))
    wait_until(lambda: restricted(daemon, name, TABLET), timeout=PICKUP_S, message="YouTube allowed on the tablet")
    db.execute("UPDATE overrides SET until = ? WHERE kind = 'allow' AND ended IS NULL", (time.time() + 1.5,))
    wait_until(lambda: blocked(daemon, name, TABLET) == (15, "blocked: youtube"), timeout=PICKUP_S + 2,
               message="the allow to run out")


# ---------------------------------------------------------------- bonus time


def test_bonus_lifts_the_running_schedule_but_not_a_pause(daemon):
    name = "bonus.example"
    assert blocked(daemon, name, NIGHT) == (17, "filtered: schedule")
    assert ok(filterd(daemon, "bonus", "night-pad", "--for", "30m")).startswith("schedules lifted for night-pad until ")
    wait_until(lambda: answered(daemon, name, NIGHT), timeout=PICKUP_S, message="bedtime lifted")

    ok(filterd(daemon, "pause", "night-pad", "--for", "30m"))
    wait_until(lambda: blocked(daemon, name, NIGHT) == PAUSED, timeout=PICKUP_S,
               message="the pause to apply despite the bonus")


def test_bonus_without_duration_lasts_until_the_window_ends(daemon, db):
    assert ok(filterd(daemon, "bonus", "night-pad")) == "schedules lifted for night-pad until the current window ends"
    wait_until(lambda: answered(daemon, "bonus-open.example", NIGHT), timeout=PICKUP_S, message="bedtime lifted")
    (until,) = db.execute("SELECT until FROM overrides WHERE kind = 'bonus' AND ended IS NULL").fetchone()
    assert f"{datetime.datetime.fromtimestamp(until, ZoneInfo(HOUSE_TZ)):%H:%M:%S}" == f"{daemon.bedtime_end}:00"


def test_bonus_when_no_schedule_runs_says_so(daemon):
    result = filterd(daemon, "bonus", "tablet")
    assert result.returncode == 2
    assert result.stderr.strip() == "filterd: no schedule of device tablet is running now"


# ---------------------------------------------------------------- bypass protection


@pytest.mark.parametrize("canary", ["use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"])
def test_bypass_canaries_are_nxdomain_for_children_and_normal_for_adults(daemon, standin, canary):
    reply = ask(daemon, canary, TABLET)
    assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr
    assert ede(reply)[0] == 15
    assert answered(daemon, canary, ADULT)


# ---------------------------------------------------------------- the filter's own host name


def test_the_filter_host_answers_while_paused_and_at_bedtime(daemon, standin):
    ok(filterd(daemon, "pause", "tablet"))
    wait_until(lambda: blocked(daemon, "paused-host.example", TABLET) == PAUSED, timeout=PICKUP_S,
               message="the tablet paused")
    assert blocked(daemon, "paused-host.example", NIGHT) == (17, "filtered: schedule")
    for source in (TABLET, NIGHT, LAPTOP):
        reply = ask(daemon, "filter.home", source)
        assert reply.header.rcode == RCODE.NOERROR
        assert addresses(reply) == [FILTER_ADDRESS]
        assert ede(reply) is None                 # an answer, not a block
    assert standin.count("filter.home") == 0     # answered by the filter itself


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("source, name, expected", [
    (YOUNG, "youtube.com", (15, "blocked: video_streaming")),
    (YOUNG, "www.instagram.com", (15, "blocked: social_networks")),
    (TEEN, "www.instagram.com", "answered"),
    (TEEN, "www.bet365.com", (15, "blocked: gambling")),
    (ADULT, "coinhive.com", (15, "blocked: malware")),
    (ADULT, "www.bet365.com", "answered"),
    (ADULT, "www.instagram.com", "answered"),
    (ADULT, "youtube.com", "answered"),
], ids=["young-youtube", "young-instagram", "teen-instagram", "teen-gambling", "adult-malware",
        "adult-gambling", "adult-instagram", "adult-youtube"])
def test_each_preset_over_dns(daemon, source, name, expected):
    if expected == "answered":
        assert answered(daemon, name, source)
    else:
        assert blocked(daemon, name, source) == expected


# ---------------------------------------------------------------- the CLI without a daemon


@pytest.fixture(scope="module")
def london(tmp_path_factory):
    """A Europe/London house with a 21:00–07:00 bedtime, for `filterd explain --at`."""
    folder = tmp_path_factory.mktemp("london")
    path = folder / "filterd.yaml"
    path.write_text(yaml.safe_dump({
        "timezone": "Europe/London",
        "data_dir": str(folder / "var"),
        "dns": {"upstreams": ["udp://127.0.0.1:53"]},
        "profiles": {"kids": {"schedules": [{"name": "bedtime", "days": ["daily"], "start": "21:00",
                                             "end": "07:00", "block": "all"}]}},
        "devices": [{"name": "kid", "ip": "10.0.0.9", "profile": "kids"}],
    }, sort_keys=False))
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


DST_DAYS = ["2026-03-28", "2026-03-29", "2026-10-24", "2026-10-25", "2026-10-26"]


@pytest.mark.parametrize("day", DST_DAYS)
@pytest.mark.parametrize("clock, blocked_until", [
    ("23:30", "next day"), ("06:30", "same day"), ("07:30", None), ("20:30", None),
])
def test_explain_bedtime_on_dst_days(capsys, london, day, clock, blocked_until):
    code, out, err = run_cli(capsys, "explain", "example.com", "--config", str(london), "--device", "kid",
                             "--at", f"{day} {clock}")
    assert code == 0, err
    assert out.splitlines()[0] == f"example.com (A) for device kid (profile kids) at {day} {clock} Europe/London"
    if blocked_until is None:
        assert out.splitlines()[1] == "  ALLOW: allowed: no rule blocks it"
        return
    date = datetime.date.fromisoformat(day) + datetime.timedelta(days=1 if blocked_until == "next day" else 0)
    assert out.splitlines()[1] == "  BLOCK: bedtime: the internet is off until 07:00"
    assert f"until: {date:%Y-%m-%d} 07:00" in out.splitlines()[2]
    assert "EDE: 17 (Filtered)" in out.splitlines()[2]


@pytest.fixture
def house(tmp_path, london):
    """The London house with a state DB of its own (for override commands)."""
    data = yaml.safe_load(london.read_text())
    data["data_dir"] = str(tmp_path / "var")
    path = tmp_path / "filterd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_pause_for_zero_minutes_is_refused(capsys, house):
    code, out, err = run_cli(capsys, "pause", "kid", "--for", "0", "--config", str(house))
    conn = state.connect(state.db_path(load_config(house).data_dir))
    try:
        paused = overrides.active(conn, time.time())
    finally:
        conn.close()
    assert (code, paused) == (2, ())
    assert "between 1 second and a year" in err


def test_pause_says_when_it_ends_on_the_house_clock(house):
    def london_in_30_min() -> str:
        return f"{datetime.datetime.now(ZoneInfo('Europe/London')) + datetime.timedelta(minutes=30):%H:%M}"

    before = london_in_30_min()
    result = subprocess.run([sys.executable, "-m", "filterd", "pause", "kid", "--for", "30m", "--config", str(house)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "TZ": "Asia/Tokyo"})
    after = london_in_30_min()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in (f"paused kid until {before}", f"paused kid until {after}")
