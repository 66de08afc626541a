"""The `filterd` command: run the daemon, check and explain, parents' overrides, lists, stats, backup, DHCP."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from filterd.rules.config import ConfigError, load_config

DEFAULT_CONFIG = "config/filterd.yaml"


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def cmd_run(args: argparse.Namespace) -> int:
    from filterd.dns import server
    from filterd.store import state

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    problem = state.data_dir_problem(config.data_dir)
    if problem:
        print(f"filterd: {problem}", file=sys.stderr)
        return 1
    return server.run(config)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    from filterd.dns import tls
    problems = tls.problems(config)     # the certificate files, where TLS is at hand
    if problems:
        for problem in problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK ({len(config.dns.upstreams)} upstreams, listening on "
          f"{', '.join(map(str, config.dns.listen))})")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the decision for a name and why, from the same policy.decide the daemon uses."""
    import datetime
    from zoneinfo import ZoneInfo

    from dnslib import QTYPE

    from filterd.rules.explain import UnknownDevice, explain, weaker
    from filterd.dns.clients import read_neighbours
    from filterd.lists.domains import normalise_domain
    from filterd.lists.build import build_policy

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    name = normalise_domain(args.name)
    if name is None:
        print(f"filterd: {args.name!r} is not a domain name", file=sys.stderr)
        return 2
    try:
        qtype = getattr(QTYPE, args.type.upper())
    except Exception:  # dnslib raises its own DNSError for an unknown type
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
    if args.client:
        import ipaddress
        try:
            ipaddress.ip_address(args.client)
        except ValueError:
            print(f"filterd: --client {args.client!r} is not an IP address", file=sys.stderr)
            return 2
    policy = build_policy(config)
    active = _overrides(config)
    try:
        found, decision = explain(policy, name, qtype, now, active, device=args.device,
                                  ip=args.client, neighbours=read_neighbours() if args.client else None)
    except UnknownDevice as exc:
        print(f"filterd: {exc}", file=sys.stderr)
        return 2
    who = found.describe()
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
    for words, other in weaker(policy, found, name, qtype, now, decision, active):
        print(f"  {words}: {other.action.upper()}: {other.reason}")
    if decision.list_id:
        from filterd.lists.sources import describe_list
        print("  " + describe_list(config, decision.list_id) + "; allow the name meanwhile in the profile")
    return 0


def _overrides(config) -> tuple:
    """Pauses, temporary allows and spent limits in force, from the state DB (none when it does not exist yet)."""
    import time

    from filterd.family import limits
    from filterd.store import state

    path = state.db_path(config.data_dir)
    if not path.exists():
        return ()
    conn = state.connect(path)
    try:
        return limits.overrides_in_force(conn, config, time.time())
    finally:
        conn.close()


def _change(args: argparse.Namespace, action) -> int:
    """Run one override change (pause, resume, allow, bonus) against the state DB."""
    import time

    from filterd.store import overrides, state

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    conn = state.connect(state.db_path(config.data_dir))
    try:
        seconds = overrides.parse_duration(args.duration) if getattr(args, "duration", None) else None
        message = action(conn, config, seconds, time.time())
    except overrides.NoChange as exc:       # nothing to do is not an error, but not a success either
        print(f"filterd: {exc}", file=sys.stderr)
        return 1
    except overrides.OverrideError as exc:
        print(f"filterd: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(message)
    return 0


def _until(seconds, timezone: str) -> str:
    """'until 18:30' on the house's clock (the config's time zone), not the machine's."""
    import datetime
    from zoneinfo import ZoneInfo

    if not seconds:
        return "until resumed"
    end = datetime.datetime.now(ZoneInfo(timezone)) + datetime.timedelta(seconds=seconds)
    return f"until {end:%H:%M}" if seconds < 86400 else f"until {end:%Y-%m-%d %H:%M}"


def cmd_pause(args: argparse.Namespace) -> int:
    from filterd.store import overrides

    def act(conn, config, seconds, now):
        overrides.pause(conn, config, args.name, seconds, now)
        return f"paused {args.name} {_until(seconds, config.timezone)}"
    return _change(args, act)


def cmd_resume(args: argparse.Namespace) -> int:
    from filterd.store import overrides

    def act(conn, config, seconds, now):
        if not overrides.resume(conn, config, args.name, now):
            raise overrides.NoChange(f"{args.name} was not paused: nothing changed")
        return f"resumed {args.name}"
    return _change(args, act)


def cmd_allow(args: argparse.Namespace) -> int:
    from filterd.store import overrides

    def act(conn, config, seconds, now):
        overrides.allow(conn, config, args.device, args.what, seconds, now)
        until = _until(seconds, config.timezone) if seconds else "until revoked (filterd revoke)"
        return f"allowed {args.what} for {args.device} {until}"
    return _change(args, act)


def cmd_bonus(args: argparse.Namespace) -> int:
    from filterd.store import overrides

    def act(conn, config, seconds, now):
        overrides.bonus(conn, config, args.name, seconds, now)
        return f"schedules lifted for {args.name}" + (
            f" {_until(seconds, config.timezone)}" if seconds else " until the current window ends")
    return _change(args, act)


def cmd_revoke(args: argparse.Namespace) -> int:
    from filterd.store import overrides

    def act(conn, config, seconds, now):
        what = args.what.strip().lower()
        if what in ("bonus", "pause"):          # `filterd revoke bonus --device tablet`: end bonus time now
            overrides.end(conn, config, args.device, what, now)
            return f"ended the {'bonus time' if what == 'bonus' else 'pause'} of {args.device}"
        overrides.end(conn, config, args.device, "allow", now, what=args.what)
        return f"revoked {args.what} for {args.device}"
    return _change(args, act)


def cmd_lists_update(args: argparse.Namespace) -> int:
    from filterd.lists import sources

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    results = sources.update(config)
    failed = [r for r in results if r.status == "failed"]
    if not results:
        print("no list to download (no blocked category brings one, no list with a url); seed lists are compiled",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_backup(args: argparse.Namespace) -> int:
    """The config and the state worth keeping (overrides, devices seen, requests, audit) in one file."""
    from filterd.store import backup, configfile, state

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    conn = state.connect(state.db_path(config.data_dir))
    try:
        data = backup.make_backup(configfile.read(config.path)[0], conn)
    finally:
        conn.close()
    try:
        # Never overwrite an older backup by mistake; 0600 from the start: it holds the
        # notification secrets and the household's history.
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except OSError as exc:
        print(f"filterd: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({len(data):,} bytes)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup file: validated in full before anything is replaced."""
    from pathlib import Path

    from filterd.store import backup, state

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    try:
        restored = backup.read_backup(Path(args.file).read_bytes(), config.path, config.data_dir)
    except OSError as exc:
        print(f"filterd: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except backup.BackupError as exc:
        print(f"filterd: not restored, nothing changed: {exc}", file=sys.stderr)
        return 2
    conn = state.connect(state.db_path(config.data_dir))
    try:
        backup.apply_backup(restored, config.path, conn, "CLI")
    finally:
        conn.close()
    print(f"restored the {restored.summary()}")
    return 0


def cmd_lists_compile(args: argparse.Namespace) -> int:
    from filterd.lists import sources

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    sources.ensure_compiled(config)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Totals, blocked share, top blocked domains and categories, per device."""
    import time

    from filterd.store import log_reader, overrides, state

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    try:
        span = overrides.parse_duration(args.since)
    except overrides.OverrideError as exc:
        print(f"filterd: --since {exc}", file=sys.stderr)
        return 2
    path = state.db_path(config.data_dir)
    if not path.exists():
        print(f"no query log yet ({path} does not exist): is the daemon running?")
        return 0
    conn = state.connect(path)
    since = time.time() - span
    if args.device:
        known = {d.name.lower(): d.name for d in config.rules.devices}
        seen = conn.execute("SELECT 1 FROM clients_seen WHERE device = ? OR client = ? LIMIT 1",
                            (args.device, args.device)).fetchone()
        if args.device.lower() not in known and not seen:
            conn.close()
            names = ", ".join(sorted(known.values())) or "none named yet"
            print(f"filterd: no device named or seen as {args.device!r} (devices: {names})", file=sys.stderr)
            return 2
        args.device = known.get(args.device.lower(), args.device)
    devices = [args.device] if args.device else sorted(
        {row[1] for row in log_reader.activity_by_hour(conn, since)})
    print(f"since {args.since} ago:")
    queries, blocked = log_reader.totals(conn, since, args.device)
    share = f"{blocked / queries:.1%}" if queries else "–"
    print(f"  {queries:,} queries, {blocked:,} blocked ({share})")
    for device in devices:
        queries, blocked = log_reader.totals(conn, since, device)
        share = f"{blocked / queries:.1%}" if queries else "–"
        print(f"\n{device}: {queries:,} queries, {blocked:,} blocked ({share})")
        top = log_reader.top_domains(conn, since, blocked=True, limit=args.top, device=device)
        if top:
            print("  top blocked: " + ", ".join(f"{name} ({n:,})" for name, n in top))
        categories = log_reader.blocks_by_category(conn, since, device)
        if categories:
            print("  blocked by category: " + ", ".join(
                f"{config.catalog.categories[c].name if c in config.catalog.categories else c} ({n:,})"
                for c, n in categories))
    conn.close()
    return 0


def cmd_dhcp(args: argparse.Namespace) -> int:
    """Serve DHCP with dnsmasq (DHCP only) from the config's dhcp: section; --print shows its config."""
    import os
    import shutil
    from pathlib import Path

    from filterd.house import dhcp

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    try:
        if args.print:
            print(dhcp.dnsmasq_config(config), end="")
            return 0
        folder = Path(args.run_dir) if args.run_dir else Path(config.data_dir)
        config_file = dhcp.write_dnsmasq_config(config, folder)
    except dhcp.DhcpError as exc:
        print(f"filterd: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"filterd: cannot write dnsmasq's config in {args.run_dir or config.data_dir}: {exc.strerror}",
              file=sys.stderr)
        return 1
    program = shutil.which(args.dnsmasq, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if program is None:
        print(f"filterd: {args.dnsmasq} not found: install dnsmasq-base (apt install dnsmasq-base)", file=sys.stderr)
        return 1
    sys.stderr.flush()
    os.execv(program, dhcp.dnsmasq_command(program, config_file))


def cmd_limits(args: argparse.Namespace) -> int:
    """A device's daily limits: used today, allowed, left, reset; --extend adds minutes for today."""
    import time

    from filterd.family import limits
    from filterd.rules.model import parse_minutes
    from filterd.store import state

    config = _load_or_exit(args.config)
    if config is None:
        return 2
    conn = state.connect(state.db_path(config.data_dir))
    try:
        for item in args.extend or []:
            name, _, amount = item.partition("=")
            minutes = parse_minutes(amount)
            if not name or minutes is None:
                print(f"filterd: --extend {item!r}: write LIMIT=MINUTES, e.g. youtube=15m", file=sys.stderr)
                return 2
            limits.extend(conn, config, args.name, name, minutes, time.time(), source="cli")
        rows = limits.usage(conn, config, args.name)
    except limits.LimitError as exc:
        print(f"filterd: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    if not rows:
        print(f"{args.name}: no daily limits (add limits: to its profile)")
        return 0
    for row in rows:
        if row.allowed_minutes is None:
            print(f"{row.name}: not limited today (resets at {row.resets_at:%H:%M})")
            continue
        extra = f" (+{row.extra_minutes} added today)" if row.extra_minutes else ""
        print(f"{row.name}: {row.used_minutes} of {row.allowed_minutes + row.extra_minutes} minutes used{extra}, "
              f"{row.remaining_minutes} left · resets at {row.resets_at:%a %H:%M}"
              + (" · per profile" if row.per == "profile" else ""))
    return 0


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

    pause = commands.add_parser("pause", help="pause the internet for a device or profile")
    pause.add_argument("name", help="a device or profile name")
    pause.add_argument("--for", dest="duration", help="e.g. 30m, 1h (default: until resumed)")
    pause.add_argument("--config", default=DEFAULT_CONFIG)
    pause.set_defaults(func=cmd_pause)

    resume = commands.add_parser("resume", help="end a pause now")
    resume.add_argument("name")
    resume.add_argument("--config", default=DEFAULT_CONFIG)
    resume.set_defaults(func=cmd_resume)

    allow = commands.add_parser("allow", help="allow a domain or service for a while")
    allow.add_argument("what", help="a domain (covers its subdomains) or a service id (youtube, roblox…)")
    allow.add_argument("--device", required=True, help="a device or profile name")
    allow.add_argument("--for", dest="duration", help="e.g. 30m, 1h (default: until revoked)")
    allow.add_argument("--config", default=DEFAULT_CONFIG)
    allow.set_defaults(func=cmd_allow)

    revoke = commands.add_parser("revoke", help="undo now: a temporary allow, bonus time or a pause "
                                 "(exit 1 when none was in force)")
    revoke.add_argument("what", help="the domain or service allowed, or `bonus`, or `pause`")
    revoke.add_argument("--device", required=True, help="a device or profile name")
    revoke.add_argument("--config", default=DEFAULT_CONFIG)
    revoke.set_defaults(func=cmd_revoke)

    bonus = commands.add_parser("bonus", help="lift schedules (bedtime, homework) for a while")
    bonus.add_argument("name", help="a device or profile name")
    bonus.add_argument("--for", dest="duration", help="e.g. 30m (default: until the current window ends)")
    bonus.add_argument("--config", default=DEFAULT_CONFIG)
    bonus.set_defaults(func=cmd_bonus)

    stats = commands.add_parser("stats", help="what happened: totals, blocked share, top blocked, per device")
    stats.add_argument("--config", default=DEFAULT_CONFIG)
    stats.add_argument("--device", help="one device (a name, or an IP for unknown devices)")
    stats.add_argument("--since", default="24h", help="how far back, e.g. 1h, 24h, 7d (default 24h)")
    stats.add_argument("--top", type=int, default=5, help="how many top blocked domains (default 5)")
    stats.set_defaults(func=cmd_stats)

    limits_cmd = commands.add_parser("limits", help="a device's daily limits: used, allowed, left; add minutes")
    limits_cmd.add_argument("name", help="a device name")
    limits_cmd.add_argument("--extend", action="append", metavar="LIMIT=TIME",
                            help="add time for today, e.g. youtube=15m (may repeat)")
    limits_cmd.add_argument("--config", default=DEFAULT_CONFIG)
    limits_cmd.set_defaults(func=cmd_limits)

    dhcp_cmd = commands.add_parser("dhcp", help="serve DHCP (dnsmasq, DHCP only) from the dhcp: section")
    dhcp_cmd.add_argument("--config", default=DEFAULT_CONFIG)
    dhcp_cmd.add_argument("--print", action="store_true", help="print dnsmasq's config instead of running it")
    dhcp_cmd.add_argument("--run-dir", help="where to write dnsmasq's config (default: data_dir)")
    dhcp_cmd.add_argument("--dnsmasq", default="dnsmasq", help="the dnsmasq program (default: dnsmasq)")
    dhcp_cmd.set_defaults(func=cmd_dhcp)

    backup_cmd = commands.add_parser("backup", help="write the config and state to one file")
    backup_cmd.add_argument("output", help="the file to write (an existing file is never overwritten)")
    backup_cmd.add_argument("--config", default=DEFAULT_CONFIG)
    backup_cmd.set_defaults(func=cmd_backup)
    restore_cmd = commands.add_parser("restore", help="restore a backup (validated before anything is replaced)")
    restore_cmd.add_argument("file")
    restore_cmd.add_argument("--config", default=DEFAULT_CONFIG)
    restore_cmd.set_defaults(func=cmd_restore)

    lists_cmd = commands.add_parser("lists", help="block lists")
    lists_sub = lists_cmd.add_subparsers(dest="lists_command", required=True)
    update = lists_sub.add_parser("update", help="download the lists of every blocked category and every list "
                                                 "with a url (each address checked), then compile")
    update.add_argument("--config", default=DEFAULT_CONFIG)
    update.set_defaults(func=cmd_lists_update)
    compile_cmd = lists_sub.add_parser("compile", help="compile the lists already on disk (no download)")
    compile_cmd.add_argument("--config", default=DEFAULT_CONFIG)
    compile_cmd.set_defaults(func=cmd_lists_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    return args.func(args)
