#!/usr/bin/env python3
"""Encrypted DNS: filterd's DoT and DoH beside unbound serving DoT (and DoH), in one run.

The shared harness (../shared/bench/bench.py) speaks UDP only, so this script reuses its
upstream, data and process handling and measures over TLS itself:

- DoT, filterd and unbound: dnsperf `-m dot` (4 connections, pipelined), the cached set.
- DoH, unbound: dnsperf `-m doh` (HTTP/2, the only HTTP dnsperf and unbound speak).
- DoH, filterd: HTTP/1.1 (filterd serves no HTTP/2), so a small pipelined client of our own
  (below: 4 keep-alive connections, 64 requests in flight each, POST). To tell what that client
  costs, it also runs against filterd's DoT (the same framing loop, DNS over TLS).

Target pinned to CPU 1, clients and the upstream to CPU 0 (unless --no-pin). Figures are
printed, never asserted; the ratios are within this one run.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT.parent / "shared" / "bench" / "bench.py"
TARGET = ROOT / "tests" / "bench" / "target.py"


def shared_bench():
    spec = importlib.util.spec_from_file_location("shared_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for unbound's TLS port (dnsperf does not check it)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.local")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "unbound-tls.pem", folder / "unbound-tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def unbound_tls_cmd(bench, work: Path, port: int, tls_port: int, https_port: int, blocklist: Path) -> list[str]:
    """The shared harness's unbound (same block list, same upstream) with a TLS and an HTTPS port."""
    command = bench.unbound_cmd(work, port, blocklist)
    conf = work / "unbound.conf"
    cert, key = self_signed(work)
    extra = (f"  interface: 127.0.0.1@{tls_port}\n  interface: 127.0.0.1@{https_port}\n"
             f"  tls-port: {tls_port}\n  https-port: {https_port}\n"
             f"  tls-service-key: \"{key}\"\n  tls-service-pem: \"{cert}\"\n"
             "  incoming-num-tcp: 100\n")
    conf.write_text(conf.read_text().replace("server:\n", "server:\n" + extra, 1))
    return command


def filterd_cmd(bench, work: Path, port: int, tls_port: int, https_port: int, blocklist: Path) -> list[str]:
    return [sys.executable, str(TARGET), "--port", str(port), "--upstream", f"{bench.UPSTREAM[0]}:{bench.UPSTREAM[1]}",
            "--blocklist", str(blocklist), "--workdir", str(work), "--workers", "1",
            "--tls-port", str(tls_port), "--https-port", str(https_port)]


def dnsperf(mode: str, port: int, queries: Path, duration: float, cpu: str | None) -> tuple[float, float]:
    command = ["dnsperf", "-m", mode, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(duration),
               "-c", "4", "-T", "1", "-q", "256", "-t", "5"]
    if mode == "doh":
        command += ["-O", "doh-uri=https://127.0.0.1/dns-query", "-O", "doh-method=POST"]
    if cpu:
        command = ["taskset", "-c", cpu] + command
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    latency = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not qps:
        raise RuntimeError(f"dnsperf -m {mode} printed no result:\n" + out[-800:])
    if lost and int(lost.group(1)):
        print(f"    ({lost.group(1)} queries lost)", flush=True)
    return float(qps.group(1)), float(latency.group(1)) * 1000 if latency else float("nan")


# ---------------------------------------------------------------- our pipelined DoH/DoT client


def _wire(name: str, qtype: str, msg_id: int) -> bytes:
    types = {"A": 1, "AAAA": 28, "MX": 15, "TXT": 16, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "SRV": 33, "HTTPS": 65}
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p)
    return msg_id.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00" + \
        types.get(qtype.upper(), 1).to_bytes(2, "big") + b"\x00\x01"


def load_queries(path: Path, limit: int = 10_000) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:
            out.append((parts[0], parts[1] if len(parts) > 1 else "A"))
        if len(out) >= limit:
            break
    return out


async def _connection(kind: str, port: int, queries: list[bytes], deadline: float, depth: int, counts: list) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"] if kind == "doh" else ["dot"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="bench.filter.home")
    index = 0
    in_flight = 0

    def request(message: bytes) -> bytes:
        if kind == "dot":
            return len(message).to_bytes(2, "big") + message
        return (b"POST /dns-query HTTP/1.1\r\nHost: filter.home\r\nContent-Type: application/dns-message\r\n"
                b"Content-Length: %d\r\n\r\n" % len(message)) + message

    try:
        while True:
            if time.monotonic() < deadline:
                batch = []
                while in_flight < depth:
                    batch.append(request(queries[index % len(queries)]))
                    index += 1
                    in_flight += 1
                if batch:
                    writer.write(b"".join(batch))
            elif not in_flight:
                break
            if kind == "dot":
                size = int.from_bytes(await reader.readexactly(2), "big")
                await reader.readexactly(size)
            else:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                await reader.readexactly(length)
            in_flight -= 1
            if time.monotonic() < deadline:
                counts[0] += 1
    finally:
        writer.close()


async def _pipelined(kind: str, port: int, queries: list[bytes], duration: float,
                     connections: int, depth: int) -> float:
    counts = [0]
    start = time.monotonic()
    deadline = start + duration
    await asyncio.gather(*(_connection(kind, port, queries, deadline, depth, counts) for _ in range(connections)))
    return counts[0] / duration


def pipelined(kind: str, port: int, names: list[tuple[str, str]], duration: float, cpu: str | None) -> float:
    """Queries per second answered over `connections` pipelined TLS connections (this process
    pinned to `cpu` while it runs)."""
    if cpu:
        os.sched_setaffinity(0, {int(cpu)})
    try:
        queries = [_wire(name, qtype, i & 0xFFFF) for i, (name, qtype) in enumerate(names)]
        return asyncio.run(_pipelined(kind, port, queries, duration, connections=4, depth=64))
    finally:
        if cpu:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


# ---------------------------------------------------------------- the run


def wait_tcp(port: int, limit: float = 60) -> None:
    import socket
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on TCP {port}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/dnsbench/data")
    ap.add_argument("--domains", type=int, default=1_000_000)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args()
    if not BENCH.exists():
        print(f"missing {BENCH}")
        return 1
    bench = shared_bench()
    bench.ensure_tools()
    data = Path(args.data)
    if not (data / "blocklist.txt").exists() or sum(1 for _ in open(data / "blocklist.txt")) != args.domains:
        subprocess.run([sys.executable, str(BENCH.parent / "gen.py"), str(data), "--domains", str(args.domains)],
                       check=True)
    work = Path(tempfile.mkdtemp(prefix="dnsbench-tls-"))
    blocklist = data / "blocklist.txt"
    cached = data / "cached.txt"
    names = load_queries(cached)
    target_cpu, client_cpu = (None, None) if args.no_pin else ("1", "0")
    rows: dict[str, list[float]] = {}

    def measure(name: str, build, runs) -> None:
        port, tls_port, https_port = bench.free_port(), bench.free_port(), bench.free_port()
        server = bench.Server(build(bench, work, port, tls_port, https_port, blocklist), work / f"{name}.log", target_cpu)
        try:
            server.wait_ready(port)
            wait_tcp(tls_port)
            wait_tcp(https_port)
            for label, run in runs:
                run(tls_port, https_port, 3)                    # warm: cache, TLS sessions
                qps = run(tls_port, https_port, args.duration)
                rows.setdefault(f"{name} {label}", []).append(qps)
                print(f"  {name} {label}: {qps:,.0f} q/s", flush=True)
        finally:
            server.stop()

    upstream = bench.Server(bench.upstream_cmd(work), work / "upstream.log", client_cpu)
    try:
        upstream.wait_ready(bench.UPSTREAM[1])
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}", flush=True)
            measure("unbound", unbound_tls_cmd, [
                ("DoT (dnsperf)", lambda t, h, d: dnsperf("dot", t, cached, d, client_cpu)[0]),
                ("DoH/2 (dnsperf)", lambda t, h, d: dnsperf("doh", h, cached, d, client_cpu)[0]),
            ])
            measure("filterd", filterd_cmd, [
                ("DoT (dnsperf)", lambda t, h, d: dnsperf("dot", t, cached, d, client_cpu)[0]),
                ("DoT (own client)", lambda t, h, d: pipelined("dot", t, names, d, client_cpu)),
                ("DoH/1.1 (own client)", lambda t, h, d: pipelined("doh", h, names, d, client_cpu)),
            ])
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nEncrypted DNS, cached set, {args.duration:.0f} s per run, {args.rounds} rounds, medians; "
          f"{'pinned: target CPU 1, clients CPU 0' if not args.no_pin else 'unpinned'}")
    medians = {row: statistics.median(values) for row, values in rows.items()}
    for row, qps in medians.items():
        print(f"{row:<32}{qps:>12,.0f} q/s")
    reference = medians.get("unbound DoT (dnsperf)")
    if reference:
        for row in ("filterd DoT (dnsperf)", "filterd DoH/1.1 (own client)"):
            if row in medians:
                print(f"ratio {row} / unbound DoT (dnsperf): {medians[row] / reference:.2f}")
    if medians.get("filterd DoT (own client)") and medians.get("filterd DoT (dnsperf)"):
        print(f"own client / dnsperf on filterd DoT: {medians['filterd DoT (own client)'] / medians['filterd DoT (dnsperf)']:.2f}"
              " (below 1: the DoH row is bounded by the client too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
