"""The policy the daemon serves: the config's rules and catalog with the compiled block lists.

The daemon, `filterd explain` and the web UI (the log's "why?", the block page) build it here, so
the three decide with the same rules and the same index.
"""
from __future__ import annotations

from filterd.lists import sources
from filterd.lists.index import DomainIndex
from filterd.rules.clock import CLOCK_FLOOR
from filterd.rules.policy import Policy


def build_policy(config, compile_if_missing: bool = True, missing_ok: bool = False,
                 last_good: bool = False) -> Policy:
    """The policy for a config. With `last_good`, lists not compiled yet are served from the
    last good index meanwhile (the daemon's start: it answers at once). With `missing_ok`, the
    last good index too, else none (the web UI never compiles: that is the daemon's job)."""
    try:
        index = sources.open_index(config, compile_if_missing, last_good or missing_ok)
    except FileNotFoundError:
        if not missing_ok:
            raise
        index = DomainIndex.empty()
    return Policy(config.rules, config.catalog, index, config.timezone, clock_floor=CLOCK_FLOOR,
                  device_hosts=config.dns.encrypted.names)
