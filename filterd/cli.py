"""The `filterd` command: run the daemon, check a config, and (later) explain, lists, stats."""
from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, load_config

DEFAULT_CONFIG = "config/filterd.yaml"


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def cmd_run(args: argparse.Namespace) -> int:
    from . import server

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"filterd: config refused:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
        return 2
    return server.run(config)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    print(f"{args.config}: OK ({len(config.dns.upstreams)} upstreams, listening on "
          f"{', '.join(map(str, config.dns.listen))})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="filterd", description="Parental-control DNS filter.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve DNS")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.set_defaults(func=cmd_run)

    check = commands.add_parser("check", help="validate a config file; exit 2 with every error")
    check.add_argument("--config", default=DEFAULT_CONFIG)
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    return args.func(args)
