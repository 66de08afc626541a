#!/usr/bin/env python3
"""Benchmark of the web UI (a script, not a test): pages over a 10M-row query log.

    .venv/bin/python tests/bench/bench_webui.py [--rows 10000000] [--repeat 7]

The real thing end to end: `filterd-webui` (waitress) started as its own process on a free
loopback port, over the cached state DB of bench_querylog.py (10 M rows over 30 days for 8
devices, built once in /tmp/filterd-bench/), logged in with a session row, and real HTTP
requests. For each page of the dashboard, devices and log: the first request, the median of
the next few, and the body's weight; then the web UI process's peak resident memory (VmHWM).

Figures only: nothing here asserts a time. Targets: ≤ 300 ms a page, ≤ 80 MB resident,
≤ 150 KB a page.

The cached DB is shared with bench_querylog.py: the only rows this adds (an admin account
when there is none, one session) are removed at the end.
"""
from __future__ import annotations

import argparse
import http.client
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_querylog import DEVICES, big_db  # noqa: E402

from filterd.store import state  # noqa: E402
from webui.security import token_hash  # noqa: E402

TARGET_MS = 300.0
TARGET_RSS_MB = 80.0
TARGET_KB = 150.0

PAGES = [  # (label, path)
    ("dashboard", "/"),
    ("devices: list", "/devices"),
    ("devices: one device (tablet)", "/devices/tablet"),
    ("log: first page", "/log"),
    ("log: by device (tablet)", "/log?device=tablet"),
    ("log: by device, 30 days", "/log?device=tablet&since=30d"),
    ("log: by decision (blocked)", "/log?decision=blocked"),
    ("log: by decision, 30 days", "/log?decision=blocked&since=30d"),
    ("log: by text ('shop')", "/log?q=shop"),
    ("log: by text, no match", "/log?q=zzqx"),
    ("log: by text, no match, 30 days", "/log?q=zzqx&since=30d"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, data_dir: Path, port: int) -> Path:
    """The bench house's devices and profiles (bench_querylog's DEVICES), web UI on `port`."""
    devices = "\n".join(f"  - {{name: {name}, ip: {ip}, profile: {profile}}}" for name, ip, profile, _ in DEVICES)
    path = folder / "filterd.yaml"
    path.write_text(f"""\
timezone: UTC
data_dir: {data_dir}
dns:
  upstreams: ["udp://127.0.0.1:1"]
web:
  listen: "127.0.0.1:{port}"
profiles:
  default: {{}}
  kids: {{preset: child}}
  teens: {{preset: teen}}
  adults: {{preset: adult}}
devices:
{devices}
default_profile: default
""")
    return path


def add_missing_columns(conn) -> None:
    """The cached 10M-row DB may predate columns added to a migration before it was released
    (sessions.flash, access_requests.unblocks, daemon_status.upstreams…): bring its tables up to
    the columns a fresh install has, as big_db() does for name_rollups."""
    import sqlite3
    fresh = sqlite3.connect(":memory:")
    try:
        state.migrate(fresh)
        for (table,) in fresh.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for _, column, kind, notnull, default, _ in fresh.execute(f"PRAGMA table_info({table})").fetchall():
                if have and column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"
                                 + (f" NOT NULL DEFAULT {default}" if notnull and default is not None else
                                    f" DEFAULT {default}" if default is not None else ""))
    finally:
        fresh.close()


def log_in(db_path: Path) -> tuple[str, bool]:
    """A session row (as the login form makes it); the admin account too when there is none.
    Returns the cookie's token and whether the admin row was added here (to remove it later)."""
    conn = state.connect(db_path)
    try:
        add_missing_columns(conn)
        added_admin = conn.execute("SELECT 1 FROM admin WHERE id = 1").fetchone() is None
        now = time.time()
        if added_admin:
            conn.execute("INSERT INTO admin (id, password_hash, created, changed) VALUES (1, 'bench: no login', ?, ?)",
                         (now, now))
        token = secrets.token_urlsafe(32)
        conn.execute("INSERT INTO sessions (id_hash, created, last_seen, csrf_token, peer, user_agent)"
                     " VALUES (?, ?, ?, ?, '127.0.0.1', 'bench_webui')",
                     (token_hash(token), now, now, secrets.token_urlsafe(32)))
        return token, added_admin
    finally:
        conn.close()


def log_out(db_path: Path, token: str, added_admin: bool) -> None:
    conn = state.connect(db_path)
    try:
        conn.execute("DELETE FROM sessions WHERE id_hash = ?", (token_hash(token),))
        if added_admin:
            conn.execute("DELETE FROM admin WHERE id = 1 AND password_hash = 'bench: no login'")
    finally:
        conn.close()


def get(port: int, path: str, token: str) -> tuple[int, bytes, float]:
    """One real HTTP request on a fresh connection: (status, body, milliseconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}", "Cookie": f"filterd_session={token}",
                                           "Accept-Encoding": "identity"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    return response.status, body, (time.perf_counter() - started) * 1000


def wait_until_listening(port: int, process: subprocess.Popen, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"filterd-webui exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("filterd-webui did not start listening within a minute")


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            values[key] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=7, help="timed requests per page after the first")
    args = parser.parse_args()

    db_file, data_end = big_db(args.rows, regenerate=False)
    lag_h = (time.time() - data_end) / 3600
    print(f"the log's newest row is {lag_h:.1f} h old (the pages show the 24 h before now)")
    with tempfile.TemporaryDirectory(prefix="filterd-bench-webui-") as folder:
        data_dir = Path(folder) / "var"
        data_dir.mkdir()
        # data_dir/state.db is the cached DB (SQLite follows the link: its WAL sits beside the target).
        (data_dir / "state.db").symlink_to(db_file)
        port = free_port()
        config = write_config(Path(folder), data_dir, port)
        token, added_admin = log_in(db_file)
        server_log = open(Path(folder) / "webui.log", "w+")
        process = subprocess.Popen([sys.executable, "-m", "webui.serve", "--config", str(config),
                                    "--log-level", "warning"], cwd=REPO, stdin=subprocess.DEVNULL,
                                   stdout=server_log, stderr=subprocess.STDOUT)
        try:
            wait_until_listening(port, process)
            _, idle_hwm = memory_kb(process.pid)
            print(f"\nweb UI pid {process.pid}, {idle_hwm / 1024:.1f} MB resident after start\n")
            print(f"  {'page':<34} {'first ms':>9} {'median ms':>10} {'KB':>7}")
            for label, path in PAGES:
                status, body, first = get(port, path, token)
                if status != 200:
                    server_log.seek(0)
                    tail = server_log.read().strip().splitlines()[-1:] or ["(nothing in its log)"]
                    print(f"  {label:<34} HTTP {status} for {path}: {tail[0]}")
                    continue
                runs = [get(port, path, token)[2] for _ in range(args.repeat)]
                median = statistics.median(runs)
                size_kb = len(body) / 1024
                flags = ("  OVER TIME" if median > TARGET_MS else "") + ("  TOO HEAVY" if size_kb > TARGET_KB else "")
                print(f"  {label:<34} {first:>9.1f} {median:>10.1f} {size_kb:>7.1f}{flags}", flush=True)
            rss, hwm = memory_kb(process.pid)
            flag = "  OVER" if hwm / 1024 > TARGET_RSS_MB else ""
            print(f"\n  web UI process: {rss / 1024:.1f} MB resident now, peak {hwm / 1024:.1f} MB "
                  f"(target ≤ {TARGET_RSS_MB:.0f} MB){flag}")
            print(f"  targets: ≤ {TARGET_MS:.0f} ms a page (median), ≤ {TARGET_KB:.0f} KB a page")
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            server_log.close()
            log_out(db_file, token, added_admin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
