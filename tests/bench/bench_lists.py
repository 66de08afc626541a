#!/usr/bin/env python3
"""Block lists at Pi scale: compiling and serving millions of domains (a script, not a test).

    .venv/bin/python tests/bench/bench_lists.py [--domains 5000000] [--workers 2]

1. `filterd lists compile` on a generated list of N domains (../shared/bench/gen.py), in a child
   process as the daemon and the update run it: wall time and the child's peak RSS.
2. The index file: size and bytes per domain.
3. The daemon on that index with W workers: memory of each process once it has answered the
   blocked half of the mixed queries (RSS, PSS — which splits the mmapped index between the
   workers sharing it — and private memory), and the sum of PSS: the honest total.
4. Lookups of the mixed query names through DomainIndex in this process (µs each).

Figures only: nothing here asserts. The data live in /tmp/dnsbench/data-5m (regenerated when
missing), the same names `bench.py --domains 5000000 --data /tmp/dnsbench/data-5m` gives
dnsmasq and unbound.
"""
from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dnslib import DNSRecord  # noqa: E402

from filterd.lists.index import DomainIndex  # noqa: E402
from filterd.rules.catalog import load_catalog  # noqa: E402

GENERATOR = REPO.parent / "shared" / "bench" / "gen.py"


def ensure_data(folder: Path, domains: int) -> Path:
    blocklist = folder / "blocklist.txt"
    if blocklist.exists() and sum(1 for _ in open(blocklist, "rb")) == domains:
        return blocklist
    print(f"generating {domains:,} domains into {folder} with {GENERATOR}", flush=True)
    subprocess.run([sys.executable, str(GENERATOR), str(folder), "--domains", str(domains)], check=True)
    return blocklist


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(work: Path, blocklist: Path, port: int, workers: int) -> Path:
    off = "".join(f"  - {{id: {s.id}, enabled: false}}\n" for s in load_catalog().categories["adult"].sources)
    config = work / "filterd.yaml"
    config.write_text(f"""# written by tests/bench/bench_lists.py
data_dir: {work / 'data'}
dns:
  listen: ["127.0.0.1:{port}"]
  upstreams: ["udp://127.0.0.1:9"]
  workers: {workers}
  rate_limit: 0
log: {{mode: off}}
lists:
  - {{id: bench, path: "{blocklist}", category: adult, format: domains}}
{off}profiles:
  default: {{block_categories: [adult]}}
""")
    return config


def compile_in_child(config: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `filterd lists compile` in its own process."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "filterd", "--log-level", "warning", "lists", "compile",
                              "--config", str(config)], cwd=REPO)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status:
        raise SystemExit(f"compile failed: {status}")
    return elapsed, usage.ru_maxrss / 1024


def memory_of(pid: int) -> dict[str, float]:
    """RSS, PSS and private memory of one process in MB (smaps_rollup)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                fields[parts[0][:-1]] = int(parts[1]) / 1024
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0),
            "private": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def ask(port: int, name: str, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", port))
        try:
            return sock.recv(4096)
        except OSError:
            return None


def serve_and_measure(config: Path, port: int, blocked_names: list[str]) -> None:
    started = time.perf_counter()
    daemon = subprocess.Popen([sys.executable, "-m", "filterd", "--log-level", "warning", "run", "--config",
                               str(config)], cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while ask(port, blocked_names[0], 0.2) is None:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the daemon did not answer")
        ready = time.perf_counter() - started
        for name in blocked_names:
            ask(port, name)
        processes = [daemon.pid, *children_of(daemon.pid)]
        print(f"daemon          first answer {ready:.2f} s after start; memory after {len(blocked_names):,} "
              "blocked queries:")
        total_pss = 0.0
        for number, pid in enumerate(processes):
            memory = memory_of(pid)
            total_pss += memory["pss"]
            role = "supervisor" if number == 0 and len(processes) > 1 else f"worker {max(number - 1, 0)}"
            print(f"  {role:12} RSS {memory['rss']:6.1f} MB   PSS {memory['pss']:6.1f} MB   "
                  f"private {memory['private']:6.1f} MB")
        print(f"  total PSS    {total_pss:6.1f} MB (the index's pages counted once, shared by the workers)")
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=5_000_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/dnsbench/data-5m"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    blocklist = ensure_data(args.data, args.domains)
    mixed = [line.split()[0] for line in (args.data / "mixed.txt").read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-lists-") as scratch:
        work = Path(scratch)
        port = free_port()
        config = write_config(work, blocklist, port, args.workers)
        elapsed, peak = compile_in_child(config)
        (index_file,) = (work / "data" / "lists").glob("index-*.idx")
        size = index_file.stat().st_size
        print(f"list            {blocklist} ({args.domains:,} domains)")
        print(f"compile         {elapsed:6.1f} s, peak RSS {peak:.0f} MB (filterd lists compile, own process)")
        print(f"index file      {size / 2**20:6.1f} MiB = {size / args.domains:.2f} bytes a domain")
        with DomainIndex.open(index_file) as index:
            blocked = [name for name in mixed if index.lookup(name)]
            lookup = index.lookup
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for name in mixed:
                    lookup(name)
                best = min(best, time.perf_counter() - started)
            print(f"lookups         {best / len(mixed) * 1e6:.2f} µs each on {len(mixed):,} mixed names "
                  f"({len(blocked):,} blocked)")
        serve_and_measure(config, port, blocked)
    print(f"this process    peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
