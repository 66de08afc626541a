#!/usr/bin/env python3
"""Start filterd as a target of ../shared/bench/bench.py: write a config into {workdir}, then run.

  target.py --port P --upstream HOST:PORT --blocklist FILE --workdir DIR [--workers N]
            [--tls-port P --https-port P]   (DoT/DoH too, for bench_encrypted.py)
"""
import argparse
import os
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--blocklist", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--log", default="off", choices=["off", "full"])
    ap.add_argument("--limit", action="store_true",
                    help="the benchmark's client is a named device with an `all: true` daily limit: every query counts")
    ap.add_argument("--tls-port", type=int, help="also serve DNS over TLS here (house CA certificate)")
    ap.add_argument("--https-port", type=int, help="also serve DNS over HTTPS here")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from filterd.rules.catalog import load_catalog
    # The benchmark's list stands in for the category's own: those are switched off.
    off = "".join(f"  - {{id: {s.id}, enabled: false}}\n" for s in load_catalog().categories["adult"].sources)
    work = Path(args.workdir) / f"filterd-{args.workers}w-{args.log}{'-limit' if args.limit else ''}"
    limit = ("    limits: [{name: online, all: true, daily: 24h}]\n"
             "devices: [{name: bench-client, ip: 127.0.0.1, profile: default}]\n") if args.limit else ""
    encrypted = "".join(f'  {key}: ["127.0.0.1:{port}"]\n' for key, port in
                        (("tls_listen", args.tls_port), ("https_listen", args.https_port)) if port)
    if encrypted:
        encrypted += "  tcp: {max_connections: 1000, max_per_client: 1000}\n"
        work = work.with_name(work.name + "-tls")
    work.mkdir(parents=True, exist_ok=True)
    config = work / "filterd.yaml"
    config.write_text(f"""# written by tests/bench/target.py
data_dir: {work / 'data'}
dns:
  listen: ["127.0.0.1:{args.port}"]
  upstreams: ["udp://{args.upstream}"]
  workers: {args.workers}
  rate_limit: 0
  max_pending: 100000
  max_pending_per_client: 100000
{encrypted}log: {{mode: {args.log}}}
lists:
  - {{id: bench, path: "{args.blocklist}", category: adult, format: domains}}
{off}profiles:
  default:
    block_categories: [adult]
{limit}default_profile: default
""")
    os.execv(sys.executable, [sys.executable, "-m", "filterd", "--log-level", "warning", "run",
                              "--config", str(config)])


if __name__ == "__main__":
    main()
