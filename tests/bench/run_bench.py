#!/usr/bin/env python3
"""`make bench`: every performance figure of the project, printed, never asserted.

1. The DNS daemon beside dnsmasq and unbound (../shared/bench/bench.py), one worker pinned to
   one core: with the query log off and on (the log may cost at most 10 % of queries/s).
2. Two workers, unpinned, beside dnsmasq.
3. The same daemon with a 1,000-domain index (lookups should not slow with list size).
E. Encrypted DNS: filterd's DoT and DoH beside unbound serving DoT and DoH (bench_encrypted.py).
L. Daily limits: the bench client as a named device whose every query counts toward an
   `all: true` limit, beside the same daemon without it (the hot path's cost of counting).
4. Compiling 1,000,000 domains (tests/bench/bench_index.py).
5M. Five million domains, as a category's lists reach on a Pi (UT1 adult alone is 4.6 M): the
   compile's time and peak memory, the index's size, each worker's private and the total memory
   (tests/bench/bench_lists.py), then queries per second beside dnsmasq loading the same names
   (bench.py --domains 5000000).
5. The query log: sustained rows/s and dashboard queries over 10 M rows (bench_querylog.py).
6. The web UI over the same 10 M rows: each dashboard, devices and log page through waitress
   (median ms against 300 ms, weight against 150 KB) and the process's peak RSS against 80 MB
   (bench_webui.py).

Options pass through: --duration S, --rounds R (defaults 10 and 2), --quick (5 s, 1 round).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT.parent / "shared" / "bench" / "bench.py"
TARGET = f"{sys.executable} {ROOT / 'tests/bench/target.py'} --port {{port}} --upstream {{upstream}} " \
         "--blocklist {blocklist} --workdir {workdir}"


def run(title: str, args: list[str]) -> None:
    print(f"\n=== {title}\n", flush=True)
    result = subprocess.run([sys.executable, *args], cwd=ROOT)
    if result.returncode:
        print(f"({title}: exit status {result.returncode})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", default="10")
    ap.add_argument("--rounds", default="2")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="dns,workers,small,encrypted,limits,index,5m,log,webui",
                    help="which parts: dns, workers, small, encrypted, limits, index, 5m, log, webui")
    args = ap.parse_args()
    duration, rounds = ("5", "1") if args.quick else (args.duration, args.rounds)
    parts = set(args.only.split(","))
    common = ["--duration", duration, "--rounds", rounds]
    if parts & {"dns", "workers", "small", "5m"} and not BENCH.exists():
        print(f"missing {BENCH}: the shared benchmark harness must sit beside the repository")
        return 1
    if "dns" in parts:
        run("DNS, one worker pinned to one core, 1,000,000 blocked domains",
            [str(BENCH), *common, "--target", f"filterd-1w={TARGET} --workers 1",
             "--target", f"filterd-1w-log={TARGET} --workers 1 --log full"])
    if "workers" in parts:
        run("DNS, two workers, unpinned",
            [str(BENCH), *common, "--no-pin", "--only", "dnsmasq", "--target", f"filterd-2w={TARGET} --workers 2"])
    if "small" in parts:
        run("DNS, one worker, a 1,000-domain index (compare with the 1,000,000 run above)",
            [str(BENCH), *common, "--domains", "1000", "--data", "/tmp/dnsbench/data-1k", "--only", "",
             "--target", f"filterd-1w-1k={TARGET} --workers 1"])
    if "encrypted" in parts:
        run("Encrypted DNS, one worker pinned: DoT and DoH beside unbound's DoT and DoH",
            [str(ROOT / "tests/bench/bench_encrypted.py"), *common])
    if "limits" in parts:
        run("DNS, one worker, a daily limit counting every query of the client (all: true) beside none",
            [str(BENCH), *common, "--domains", "1000", "--data", "/tmp/dnsbench/data-1k", "--only", "",
             "--target", f"filterd-1w-nolimit={TARGET} --workers 1",
             "--target", f"filterd-1w-limit={TARGET} --workers 1 --limit"])
    if "index" in parts:
        run("Compiling and looking up 1,000,000 domains", [str(ROOT / "tests/bench/bench_index.py")])
    if "5m" in parts:
        run("Block lists at Pi scale: compiling and serving 5,000,000 domains, two workers",
            [str(ROOT / "tests/bench/bench_lists.py"), "--domains", "5000000", "--data", "/tmp/dnsbench/data-5m"])
        run("DNS, two workers, unpinned, 5,000,000 blocked domains, beside dnsmasq with the same names",
            [str(BENCH), *common, "--no-pin", "--domains", "5000000", "--data", "/tmp/dnsbench/data-5m",
             "--only", "dnsmasq", "--target", f"filterd-2w-5m={TARGET} --workers 2"])
    if "log" in parts and (ROOT / "tests/bench/bench_querylog.py").exists():
        run("Query log", [str(ROOT / "tests/bench/bench_querylog.py")])
    if "webui" in parts:
        run("Web UI pages over 10 M log rows", [str(ROOT / "tests/bench/bench_webui.py")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
