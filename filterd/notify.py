"""Notifications for parents: channels (webhook, ntfy, e-mail) and which events go where.

(Being built: the `notify:` config section, the persisted outbox and its sending worker.)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NotifyConfig:
    channels: tuple = ()
    events: dict | None = None


def parse_notify_config(data, check) -> NotifyConfig:
    if data is None:
        return NotifyConfig()
    check.mapping(data, "notify", {"channels", "events"})
    return NotifyConfig()
