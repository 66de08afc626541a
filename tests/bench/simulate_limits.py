"""How well daily limits count real use: devices' DNS behaviour played over real UDP against the
real daemon, compared with the minutes the device was truly in use.

The daemon runs under libfaketime at 60× (`FAKETIME="@… x60"`, monotonic clock left alone), so an
hour of a child's afternoon takes a minute. Each trace is a list of sessions (minutes of the
afternoon when an app is really in use); while in use, the app asks its names again whenever the
answer's TTL runs out (the daemon caps it at 60 s for counted names) plus its own chatter; other
apps chatter in the background all afternoon (counted by the `all` limit, never by `youtube`).
Two devices play at once. Printed: true minutes, counted minutes, error per trace.

    python tests/bench/simulate_limits.py            # needs Debian's faketime package
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from dnslib import DNSRecord  # noqa: E402

from standin import StandIn, free_port  # noqa: E402

SPEED = 60                                   # fake seconds per real second
START = "2026-12-07 15:00:00"                # a Monday afternoon (UTC house)
YOUTUBE_NAMES = ["www.youtube.com", "i.ytimg.com", "rr3---sn-a5mekn6s.googlevideo.com", "youtubei.googleapis.com"]
BACKGROUND = ["api.weather.example", "push.chat.example", "time.example", "sync.photos.example"]


@dataclass
class Trace:
    name: str
    sessions: list[tuple[int, int]]          # (start, end) minute of the afternoon, end excluded
    app_every_s: int                         # the app's own requests while in use (besides TTL expiry)
    length_min: int = 60

    def true_minutes(self) -> int:
        return sum(end - start for start, end in self.sessions)


TRACES = [
    Trace("one 40-minute session, app asks every 20 s", [(10, 50)], 20),
    Trace("three 10-minute sessions, 10 min apart", [(5, 15), (25, 35), (45, 55)], 30),
    Trace("short bursts with 3-minute pauses (one session to the gap)", [(0, 7), (10, 17), (20, 27), (30, 37)], 30),
    Trace("a long video, asking again only when the TTL runs out", [(0, 55)], 3600),
    Trace("two 5-minute looks, half an hour apart", [(5, 10), (40, 45)], 15),
]


def plan(trace: Trace, seed: int) -> list[tuple[float, str]]:
    """(fake second of the afternoon, name) of every query the device sends."""
    rng = random.Random(seed)
    events: list[tuple[float, str]] = []
    for start, end in trace.sessions:
        t = start * 60 + rng.uniform(0, 5)
        next_ttl = t
        while t < end * 60:
            due = min(next_ttl, t)
            events.append((due, rng.choice(YOUTUBE_NAMES)))
            next_ttl = due + 60                       # the answer's TTL (capped) runs out
            t = due + min(trace.app_every_s, 60) if trace.app_every_s < 60 else next_ttl
    t = rng.uniform(0, 120)
    while t < trace.length_min * 60:                  # other apps, all afternoon, in use or not
        events.append((t, rng.choice(BACKGROUND)))
        t += rng.uniform(240, 600)
    return sorted(events)


def play(port: int, source: str, events: list[tuple[float, str]], started: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(2)
        for fake_s, name in events:
            delay = started + fake_s / SPEED - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", port))
            try:
                sock.recv(4096)
            except socket.timeout:
                pass


def run(traces: list[Trace], gap: str) -> list[tuple[str, int, int, int, int]]:
    if not shutil.which("faketime"):
        sys.exit("needs libfaketime: apt-get install faketime")
    folder = Path(tempfile.mkdtemp(prefix="limits-sim-"))
    upstream = StandIn(ttl=300)
    upstream_port = upstream.start()
    port = free_port()
    devices = [(f"dev{i}", f"127.0.0.{40 + i}") for i in range(len(traces))]
    config = folder / "filterd.yaml"
    config.write_text(
        "timezone: UTC\n"
        f"data_dir: {folder / 'var'}\n"
        f"limits_gap: {gap}\n"
        f'dns: {{listen: ["127.0.0.1:{port}"], upstreams: ["udp://127.0.0.1:{upstream_port}"], workers: 1,'
        " rate_limit: 0}\n"
        "profiles:\n  kids:\n    limits:\n"
        "      - {name: youtube, services: [youtube], daily: 24h}\n"
        "      - {name: online, all: true, daily: 24h}\n"
        "devices:\n" + "".join(f"  - {{name: {n}, ip: {ip}, profile: kids}}\n" for n, ip in devices)
        + "default_profile: kids\n")
    library = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    env = {**os.environ, "LD_PRELOAD": str(library), "FAKETIME": f"@{START} x{SPEED}",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    daemon = subprocess.Popen([sys.executable, "-m", "filterd", "run", "--config", str(config)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(folder / "daemon.log", "wb"))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.settimeout(0.5)
                    probe.sendto(DNSRecord.question("probe.example", "ANY").pack(), ("127.0.0.1", port))
                    probe.recv(512)
                    break
            except OSError:
                time.sleep(0.1)
        # The fake clock started with the daemon: the afternoon starts a few fake minutes later.
        started = time.monotonic() + 2
        threads = [threading.Thread(target=play, args=(port, ip, plan(trace, seed), started))
                   for seed, (trace, (_, ip)) in enumerate(zip(traces, devices))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        daemon.terminate()          # flushes the last minutes
        daemon.wait(timeout=30)
        upstream.stop()
    import sqlite3
    db = sqlite3.connect(folder / "var" / "state.db")
    used = {(subject, name): count for subject, name, count in
            db.execute("SELECT subject, name, used FROM limit_usage")}
    rows = []
    for trace, (device, _) in zip(traces, devices):
        rows.append((trace.name, trace.true_minutes(), used.get((device, "youtube"), 0),
                     trace.length_min, used.get((device, "online"), 0)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", default="5m")
    args = parser.parse_args()
    rows = run(TRACES, args.gap)
    print(f"limits_gap {args.gap}, {SPEED}x clock, {len(rows)} devices at once")
    print(f"{'trace':62} {'true':>5} {'counted':>8} {'error':>6}  {'online (all: true)':>18}")
    for name, true, counted, length, online in rows:
        print(f"{name:62} {true:5d} {counted:8d} {counted - true:+6d}  {online:8d} of {length} min")


if __name__ == "__main__":
    main()
