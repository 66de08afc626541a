"""Who asked, and what `policy.decide` says for them: one helper for every "why?".

`filterd explain`, the web UI's log ("why?") and the block page all start from something
different (a device name a parent typed, a log row's device, the address a browser came from);
each used to find the profile its own way, and they disagreed (the CLI ignored devices known by
MAC, the log was case-sensitive). Here they find the same device the daemon would, then call
the same `decide`. Pure: the neighbour table (IP → MAC) and the overrides are passed in.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from filterd.rules.devices import ClientMap
from filterd.rules.model import Rules
from filterd.rules.policy import Decision, Override, Policy, decide


class UnknownDevice(LookupError):
    """A device name that is not in the config; the message lists the known ones."""


@dataclass(frozen=True)
class Who:
    """The device a decision is for (None: an unnamed device) and the profile it is on."""

    device: str | None
    profile: str
    ip: str | None = None
    mac: str | None = None

    def describe(self) -> str:
        if self.device:
            return f"device {self.device} (profile {self.profile})"
        return f"profile {self.profile}"


def who_is(rules: Rules, device: str | None = None, ip: str | None = None,
           neighbours: dict[str, str] | None = None) -> Who:
    """A device by name (any case), else by address as the daemon identifies it (exact IP, then
    the MAC from `neighbours`, then networks), else the default profile."""
    if device:
        found = rules.device(device)
        if found is None:
            known = ", ".join(d.name for d in rules.devices) or "none configured"
            raise UnknownDevice(f"no device named {device!r} (devices: {known})")
        return Who(found.name, found.profile, found.ip, found.mac)
    if ip:
        mac = (neighbours or {}).get(ip)
        identity = ClientMap(rules).identify(ip, mac)
        return Who(identity.device, identity.profile, ip, mac)
    return Who(None, rules.default_profile)


def explain(policy: Policy, name: str, qtype: int, now: datetime.datetime, overrides: tuple[Override, ...] = (),
            device: str | None = None, ip: str | None = None,
            neighbours: dict[str, str] | None = None) -> tuple[Who, Decision]:
    """(who asked, the decision for them) for `name` at `now`, exactly as the daemon decides it."""
    who = who_is(policy.rules, device, ip, neighbours)
    return who, decide(policy, who.profile, name, qtype, now, who.device, overrides)


def weaker(policy: Policy, who: Who, name: str, qtype: int, now: datetime.datetime, decision: Decision,
           overrides: tuple[Override, ...] = ()) -> list[tuple[str, Decision]]:
    """What else the rules say behind the deciding one: ("otherwise", decision) pairs, e.g. a
    temporarily allowed site "otherwise: blocked: gambling", a paused device "without the pause:
    allowed", bedtime "outside the schedule: blocked: adult content". Same `decide`, with the
    deciding parent's override (or the schedule, through a bonus) taken away."""
    out: list[tuple[str, Decision]] = []

    def without(kind: str) -> tuple[Override, ...]:
        return tuple(o for o in overrides if o.kind != kind)

    if decision.rule == "temporary_allow":
        out.append(("otherwise", decide(policy, who.profile, name, qtype, now, who.device, without("allow"))))
    elif decision.rule == "pause":
        out.append(("without the pause", decide(policy, who.profile, name, qtype, now, who.device, without("pause"))))
    elif decision.rule == "schedule":
        lifted = overrides + (Override("bonus", "profile", who.profile, None),)
        out.append((f"outside {decision.schedule or 'the schedule'}",
                    decide(policy, who.profile, name, qtype, now, who.device, lifted)))
    elif decision.rule == "limit":
        out.append(("with time left", decide(policy, who.profile, name, qtype, now, who.device, without("spent"))))
    return [(words, other) for words, other in out
            if (other.action, other.rule, other.reason) != (decision.action, decision.rule, decision.reason)]
