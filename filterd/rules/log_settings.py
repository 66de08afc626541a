"""The `log:` section: what the query log keeps and for how long.

The writer (`store/log_writer.py`) and the policy's rules both read these settings; they live
with the rules so that reading a config never imports the SQLite writer.
"""
from __future__ import annotations

from dataclasses import dataclass

LOG_MODES = ("full", "anonymous", "off")


@dataclass(frozen=True)
class LogConfig:
    mode: str = "full"
    retention_days: int = 30
    rollup_days: int = 365
    queue_size: int = 20_000


def parse_log_config(data, check) -> LogConfig:
    data = check.mapping(data, "log", {"mode", "retention_days", "rollup_days", "queue_size"})
    mode = data.get("mode", "full")
    if mode is False:   # YAML reads a bare `off` as false
        mode = "off"
    if mode not in LOG_MODES:
        check.error("log.mode", f'"{mode}" must be one of {", ".join(LOG_MODES)}')
        mode = "full"
    return LogConfig(
        mode=mode,
        retention_days=check.integer(data, "retention_days", "log", 30, 1, 3650),
        rollup_days=check.integer(data, "rollup_days", "log", 365, 1, 3650),
        queue_size=check.integer(data, "queue_size", "log", 20_000, 100, 10_000_000),
    )
