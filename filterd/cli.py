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

    config = _load_or_exit(args.config)
    if config is None:
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


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the decision for a name and why, from the same policy.decide the daemon uses."""
    import datetime
    from zoneinfo import ZoneInfo

    from dnslib import QTYPE

    from . import policy as policy_module
    from .clients import ClientMap
    from .domains import normalise_domain
    from .server import build_policy

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    name = normalise_domain(args.name)
    if name is None:
        print(f"filterd: {args.name!r} is not a domain name", file=sys.stderr)
        return 2
    try:
        qtype = getattr(QTYPE, args.type.upper())
    except AttributeError:
        print(f"filterd: {args.type!r} is not a record type (A, AAAA, MX, TXT, HTTPS…)", file=sys.stderr)
        return 2
    tz = ZoneInfo(config.timezone)
    if args.at:
        try:
            now = datetime.datetime.strptime(args.at, "%Y-%m-%d %H:%M").replace(tzinfo=tz)
        except ValueError:
            print(f'filterd: --at "{args.at}" is not a time; write "YYYY-MM-DD HH:MM"', file=sys.stderr)
            return 2
    else:
        now = datetime.datetime.now(tz)
    clients = ClientMap(config.rules)
    if args.device:
        device = clients.by_name.get(args.device.lower())
        if device is None:
            known = ", ".join(d.name for d in config.rules.devices) or "none configured"
            print(f"filterd: no device named {args.device!r} (devices: {known})", file=sys.stderr)
            return 2
        device_name, profile = device.name, device.profile
    elif args.client:
        identity = clients.identify(args.client)
        device_name, profile = identity.device, identity.profile
    else:
        device_name, profile = None, config.rules.default_profile
    policy = build_policy(config)
    decision = policy_module.decide(policy, profile, name, qtype, now, device_name, _overrides(config))
    who = f"device {device_name} (profile {profile})" if device_name else f"profile {profile}"
    print(f"{name} ({args.type.upper()}) for {who} at {now:%Y-%m-%d %H:%M} {config.timezone}")
    print(f"  {decision.action.upper()}: {decision.reason}")
    details = [f"rule: {decision.rule}"]
    for label in ("category", "list_id", "service", "schedule", "matched", "target"):
        value = getattr(decision, label)
        if value:
            details.append(f"{label.replace('_id', '')}: {value}")
    if decision.until:
        details.append(f"until: {decision.until:%Y-%m-%d %H:%M}")
    if decision.ede:
        details.append(f"EDE: {decision.ede} ({'Blocked' if decision.ede == 15 else 'Filtered'})")
    print("  " + " · ".join(details))
    return 0


def _overrides(config) -> tuple:
    """Pauses and temporary allows in force (from the state DB, once it exists)."""
    return ()


def cmd_lists_update(args: argparse.Namespace) -> int:
    from . import lists

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    results = lists.update(config)
    failed = [r for r in results if r.status == "failed"]
    if not results:
        print("no lists with a url in the config; seed lists are compiled", file=sys.stderr)
    return 1 if failed else 0


def _load_or_exit(path: str):
    try:
        return load_config(path)
    except ConfigError as exc:
        print("filterd: config refused:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
        return None


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

    explain = commands.add_parser("explain", help="say whether a name is blocked for a device, and why")
    explain.add_argument("name")
    explain.add_argument("--config", default=DEFAULT_CONFIG)
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--device", help="a device name from the config")
    who.add_argument("--client", help="a client IP address")
    explain.add_argument("--at", help='the moment to decide for, "YYYY-MM-DD HH:MM" in the config\'s time zone')
    explain.add_argument("--type", default="A", help="record type (default A)")
    explain.set_defaults(func=cmd_explain)

    lists_cmd = commands.add_parser("lists", help="block lists")
    lists_sub = lists_cmd.add_subparsers(dest="lists_command", required=True)
    update = lists_sub.add_parser("update", help="download every list with a url, then compile")
    update.add_argument("--config", default=DEFAULT_CONFIG)
    update.set_defaults(func=cmd_lists_update)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    return args.func(args)
