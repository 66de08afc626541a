"""Every filtering decision, and the reason for it. Pure: no sockets, files or clock reads.

`decide` is called by the daemon (per query, memoised), by `filterd explain`, and by the web
UI's "why?" and block page, so all three give the same answer for the same inputs.

Precedence, strongest first (README "How a decision is made"):
  1. csam (protected, every profile, nothing overrides it)
  2. the filter's own host names (the web UI stays reachable, even at bedtime), then the
     bypass canaries (always NXDOMAIN for protected profiles, even when paused)
  3. the profile's allow list and temporary allows (SafeSearch still applies to what they allow)
  4. pauses, then schedules (unless bonus time lifts them, or the clock reads before the
     policy's clock_floor: not set yet), then spent daily limits; then the temporary allows that
     keep schedules ("allow_day": bedtime still applies)
  5. the profile's own block list (domains and *wildcard* patterns)
  6. categories, services and lists
  7. SafeSearch rewrites
  8. allow
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from filterd.lists.index import DomainIndex
from filterd.rules.model import PROTECTED_CATEGORY, Limit, Profile, Rules
from filterd.rules.schedule import window_end

ALLOW, BLOCK, REWRITE, LOCAL, NXDOMAIN = "allow", "block", "rewrite", "local", "nxdomain"
EDE_BLOCKED, EDE_FILTERED = 15, 17

# Canary names whose NXDOMAIN tells browsers and phones to keep using the network's DNS.
BYPASS_CANARIES = {
    "use-application-dns.net": "Firefox's DNS-over-HTTPS canary",
    "mask.icloud.com": "iCloud Private Relay",
    "mask-h2.icloud.com": "iCloud Private Relay",
}


@dataclass(frozen=True, slots=True)
class Override:
    """A parent's temporary change, from the state DB: pause, allow, or bonus time.

    `subject` is ("device", name) or ("profile", name); `until` an epoch second, None for
    "until resumed"; `value` the domain or service of an allow.
    """

    kind: str                   # pause | allow | allow_day (schedules still apply) | bonus | spent (a daily limit used up)
    subject_kind: str           # device | profile
    subject: str
    until: float | None = None
    value: str | None = None    # allow: the domain or service; spent: the limit's name
    minutes: int | None = None  # spent: the minutes that were allowed that day


@dataclass(frozen=True, slots=True)
class Decision:
    action: str                 # allow | block | rewrite | local | nxdomain
    rule: str                   # csam, filter_host, allow_list, temporary_allow, pause, schedule,
                                # limit, profile_block, bypass, category, service, safesearch, default
    reason: str                 # one line a parent understands
    category: str | None = None
    list_id: str | None = None
    service: str | None = None
    schedule: str | None = None
    limit: str | None = None    # the daily limit that was used up
    limit_minutes: int | None = None   # and the minutes it allowed that day
    matched: str | None = None  # the listed domain or pattern that matched (never for csam)
    target: str | None = None   # rewrite target (SafeSearch)
    until: datetime.datetime | None = None  # when a schedule or pause ends
    ede: int | None = None      # Extended DNS Error code for blocked answers
    valid_until: float = 0.0    # epoch second until which this decision holds (memoising)

    @property
    def blocked(self) -> bool:
        return self.action in (BLOCK, NXDOMAIN)


def suffixes(name: str) -> list[str]:
    """'a.b.example.com' → ['a.b.example.com', 'b.example.com', 'example.com', 'com']."""
    out = [name]
    start = name.find(".")
    while start >= 0:
        out.append(name[start + 1:])
        start = name.find(".", start + 1)
    return out


def _first(names: list[str], table) -> str | None:
    for candidate in names:
        if candidate in table:
            return candidate
    return None


@dataclass(frozen=True)
class CompiledLimit:
    """A daily limit's scope, compiled: what a query must match to count toward it."""

    limit: Limit
    category_mask: int
    services: frozenset[str]
    domains: frozenset[str]


@dataclass
class CompiledProfile:
    """A profile with its rules turned into sets, masks and regexes for quick matching."""

    profile: Profile
    allow: frozenset[str]
    block: frozenset[str]
    patterns: tuple[tuple[str, re.Pattern], ...]
    category_mask: int
    services: frozenset[str]
    safesearch: dict[str, str] = field(default_factory=dict)   # host → safe target
    limits: dict[str, CompiledLimit] = field(default_factory=dict)


class Policy:
    """The rules of one config, compiled for `decide`; rebuilt on every reload."""

    def __init__(self, rules: Rules, catalog, index: DomainIndex, timezone: str, clock_floor: float = 0.0,
                 device_hosts: tuple[str, ...] = ()):
        self.rules = rules
        # Before this moment the clock is not believed (rules/clock: a Pi booted at 1970) and
        # schedules wait: a bedtime computed from a wrong clock blocks a house at noon.
        self.clock_floor = clock_floor
        self.catalog = catalog
        self.index = index
        self.tz = ZoneInfo(timezone)
        self.filter_hosts = frozenset(rules.web.hostnames)
        # The names a device's encrypted-DNS host name is one label under (dns.tls_names).
        self.device_hosts = self.filter_hosts | frozenset(device_hosts)
        self.bit_category = {info.bit: info.category for info in index.lists}
        self.bit_list = {info.bit: info.id for info in index.lists}
        self.csam_mask = sum(1 << info.bit for info in index.lists if info.category == PROTECTED_CATEGORY)
        self.service_domains: dict[str, list[str]] = {}
        for service in catalog.services.values():
            for domain in service.domains:
                self.service_domains.setdefault(domain, []).append(service.id)
        self.profiles = {name: self._compile(profile) for name, profile in rules.profiles.items()}

    def _compile(self, profile: Profile) -> CompiledProfile:
        categories = set(profile.block_categories)
        mask = sum(1 << info.bit for info in self.index.lists if info.category in categories)
        patterns = tuple((p, re.compile(re.escape(p).replace(r"\*", ".*"))) for p in profile.block if "*" in p)
        safesearch: dict[str, str] = {}
        if profile.safesearch:
            for engine in self.catalog.safesearch.engines:
                for host in engine.hosts:
                    safesearch[host] = engine.target
        if profile.youtube != "off":
            youtube = self.catalog.safesearch.youtube
            target = youtube.strict if profile.youtube == "strict" else youtube.moderate
            for host in youtube.hosts:
                safesearch[host] = target
        limits = {limit.name: CompiledLimit(
            limit, sum(1 << info.bit for info in self.index.lists if info.category in set(limit.categories)),
            frozenset(limit.services), frozenset(limit.domains)) for limit in profile.limits}
        return CompiledProfile(profile, frozenset(profile.allow), frozenset(d for d in profile.block if "*" not in d),
                               patterns, mask, frozenset(profile.block_services), safesearch, limits)

    def category_name(self, category: str | None) -> str:
        info = self.catalog.categories.get(category) if category else None
        return info.name if info else (category or "")

    def services_of(self, names: list[str]) -> list[str]:
        out: list[str] = []
        for candidate in names:
            out.extend(self.service_domains.get(candidate, ()))
        return out


def _active(overrides: tuple[Override, ...], kind: str, device: str | None, profile: str,
            epoch: float) -> list[Override]:
    return [o for o in overrides
            if o.kind == kind and (o.until is None or o.until > epoch)
            and ((o.subject_kind == "device" and o.subject == device)
                 or (o.subject_kind == "profile" and o.subject == profile))]


def decide(policy: Policy, profile_name: str, name: str, qtype: int, now: datetime.datetime,
           device: str | None = None, overrides: tuple[Override, ...] = ()) -> Decision:
    """Allow, block or rewrite `name` (normalised, no trailing dot) for a device's profile."""
    epoch = now.timestamp()
    valid_until = (epoch // 60 + 1) * 60   # schedules move at minute boundaries
    for override in overrides:
        if override.until is not None and epoch < override.until < valid_until:
            valid_until = override.until
    compiled = policy.profiles.get(profile_name) or policy.profiles[policy.rules.default_profile]
    profile = compiled.profile
    names = suffixes(name)
    local_now = now.astimezone(policy.tz)

    def made(action: str, rule: str, reason: str, **extra) -> Decision:
        return Decision(action, rule, reason, valid_until=valid_until, **extra)

    # 1. Protected category: above everything, and never names what matched.
    mask = policy.index.lookup(name) if name else 0
    if mask & policy.csam_mask:
        return made(BLOCK, "csam", "blocked: known child sexual abuse material (protected category)",
                    category=PROTECTED_CATEGORY, ede=EDE_BLOCKED)

    # 2. The filter's own web UI, and one label under it: a device's encrypted-DNS host name
    #    (`emma-phone.filter.home`, its client ID first) must reach the filter.
    if name in policy.filter_hosts:
        return made(LOCAL, "filter_host", f"{name} is this filter's own web page")
    if name.partition(".")[2] in policy.device_hosts:
        return made(LOCAL, "filter_host", f"{name} is this filter's encrypted DNS for one device")

    # Bypass canaries come first of the parents' rules: a block-page address instead of
    # NXDOMAIN (at bedtime, say) would tell Firefox its own DNS over HTTPS is welcome.
    if profile.bypass_protection and name in BYPASS_CANARIES:
        return made(NXDOMAIN, "bypass", f"bypass protection: {BYPASS_CANARIES[name]} is turned off here",
                    matched=name, ede=EDE_BLOCKED)

    # 3. Allowed by the parents, permanently or for now — SafeSearch and YouTube's restricted
    # mode still apply: allowing YouTube for an hour does not mean unrestricted YouTube.
    target = compiled.safesearch.get(name)
    allowed = _first(names, compiled.allow)
    if allowed:
        if target:
            return made(REWRITE, "safesearch", f"allowed by the {profile.name} profile's allow list ({allowed}); "
                        f"SafeSearch: answered with {target}", target=target, matched=allowed)
        return made(ALLOW, "allow_list", f"allowed by the {profile.name} profile's allow list ({allowed})",
                    matched=allowed)
    for override in _active(overrides, "allow", device, profile.name, epoch):
        value = override.value or ""
        if value in names or value in policy.services_of(names):
            reason = f"allowed for now ({value}){_until_text(override.until, policy.tz)}"
            if target:
                return made(REWRITE, "safesearch", f"{reason}; SafeSearch: answered with {target}",
                            target=target, matched=value, until=_moment(override.until, policy.tz))
            return made(ALLOW, "temporary_allow", reason, matched=value, until=_moment(override.until, policy.tz))

    # 4. Pauses, then schedules (bonus time lifts schedules, not pauses).
    pauses = _active(overrides, "pause", device, profile.name, epoch)
    if pauses:
        ends = [p.until for p in pauses]
        until = None if None in ends else max(ends)
        who = "this device" if any(p.subject_kind == "device" for p in pauses) else f"profile {profile.name}"
        return made(BLOCK, "pause", f"internet paused for {who}{_until_text(until, policy.tz)}",
                    until=_moment(until, policy.tz), ede=EDE_FILTERED)
    plausible_clock = epoch >= policy.clock_floor
    if profile.schedules and plausible_clock and not _active(overrides, "bonus", device, profile.name, epoch):
        for schedule in profile.schedules:
            end = window_end(schedule, local_now)
            if end is None or _first(names, schedule.allow):
                continue
            if schedule.block_all:
                return made(BLOCK, "schedule", f"{schedule.name}: the internet is off until {end:%H:%M}",
                            schedule=schedule.name, until=end, ede=EDE_FILTERED)
            hit = _category_or_service(policy, mask, names, set(schedule.block))
            if hit:
                kind, what = hit
                return made(BLOCK, "schedule",
                            f"{schedule.name}: {_describe(policy, kind, what)} is off until {end:%H:%M}",
                            schedule=schedule.name, until=end, ede=EDE_FILTERED,
                            **({"category": what} if kind == "category" else {"service": what}))

    if compiled.limits:
        for spent in _active(overrides, "spent", device, profile.name, epoch):
            limit = compiled.limits.get(spent.value or "")
            if limit is not None and _in_limit(policy, limit, names, mask):
                resets = _moment(spent.until, policy.tz)
                minutes = spent.minutes if spent.minutes is not None else "all"
                return made(BLOCK, "limit", f"daily limit {limit.limit.name}: {minutes} of {minutes} minutes used"
                            + (f"; resets at {resets:%H:%M}" if resets else ""),
                            limit=limit.limit.name, limit_minutes=spent.minutes, until=resets, ede=EDE_FILTERED)

    # 4b. Allows a parent gave with "bedtime still applies": past pauses, schedules and limits.
    for override in _active(overrides, "allow_day", device, profile.name, epoch):
        value = override.value or ""
        if value in names or value in policy.services_of(names):
            reason = f"allowed for now outside schedules ({value}){_until_text(override.until, policy.tz)}"
            if target:
                return made(REWRITE, "safesearch", f"{reason}; SafeSearch: answered with {target}",
                            target=target, matched=value, until=_moment(override.until, policy.tz))
            return made(ALLOW, "temporary_allow", reason, matched=value, until=_moment(override.until, policy.tz))

    # 5. The profile's own block list.
    blocked = _first(names, compiled.block)
    if blocked is None:
        blocked = next((p for p, rx in compiled.patterns if rx.fullmatch(name)), None)
    if blocked:
        return made(BLOCK, "profile_block", f"blocked by the {profile.name} profile's block list ({blocked})",
                    matched=blocked, ede=EDE_FILTERED)

    # 6. Categories and lists, services.
    if mask & compiled.category_mask:
        match = policy.index.match(name)
        hit = next(h for h in match.hits if h.list.bit in _bits(mask & compiled.category_mask))
        category = hit.list.category
        where = f"list {hit.list.id}, {hit.suffix}" if hit.suffix else f"list {hit.list.id}"
        return made(BLOCK, "category", f"category {policy.category_name(category)} ({where})",
                    category=category, list_id=hit.list.id,
                    matched=hit.suffix, ede=EDE_BLOCKED)
    if compiled.services:
        for candidate in names:
            for service in policy.service_domains.get(candidate, ()):
                if service in compiled.services:
                    return made(BLOCK, "service", f"service {_service_name(policy, service)} ({candidate})",
                                service=service, matched=candidate, ede=EDE_BLOCKED)

    # 7. SafeSearch: rewrite the engines that have a safe mode, block those that have none.
    if profile.safesearch:
        unsafe = _first(names, policy.catalog.safesearch.unsupported_domains)
        if unsafe:
            return made(BLOCK, "safesearch", f"SafeSearch: {unsafe} has no safe mode, so it is blocked",
                        matched=unsafe, ede=EDE_FILTERED)
    if target:
        return made(REWRITE, "safesearch", f"SafeSearch: answered with {target}", target=target, matched=name)
    return made(ALLOW, "default", "allowed: no rule blocks it")


def _in_limit(policy: Policy, limit: CompiledLimit, names: list[str], mask: int) -> bool:
    """Whether a name counts toward a limit (and is closed when it is used up). The filter's own
    names and the profile's allow list never reach here; the names devices ask for to check
    their connection never count, or a phone would use up "all" lying on a desk."""
    if _first(names, UNCOUNTED_DOMAINS):
        return False
    if limit.limit.all or mask & limit.category_mask or _first(names, limit.domains):
        return True
    return bool(limit.services) and any(s in limit.services for s in policy.services_of(names))


def limits_counting(policy: Policy, profile_name: str, name: str) -> tuple[str, ...]:
    """The names of the profile's limits that an allowed query for `name` counts toward."""
    compiled = policy.profiles.get(profile_name)
    if compiled is None or not compiled.limits or name in policy.filter_hosts:
        return ()
    names = suffixes(name)
    if _first(names, compiled.allow):
        return ()
    mask = policy.index.lookup(name)
    return tuple(n for n, limit in compiled.limits.items() if _in_limit(policy, limit, names, mask))


# Connectivity checks, time and captive-portal probes: every device asks for these on its own,
# whether anyone is using it or not.
UNCOUNTED_DOMAINS = frozenset({
    "connectivitycheck.gstatic.com", "connectivitycheck.android.com", "clients3.google.com",
    "clients1.google.com", "www.gstatic.com", "captive.apple.com", "www.apple.com", "time.apple.com",
    "time.google.com", "msftconnecttest.com", "msftncsi.com", "time.windows.com",
    "detectportal.firefox.com", "nmcheck.gnome.org", "network-test.debian.org", "pool.ntp.org",
    "ntp.org", "ntp.ubuntu.com", "connectivity-check.ubuntu.com", "use-application-dns.net",
})


def _bits(mask: int) -> set[int]:
    return {bit for bit in range(mask.bit_length()) if mask >> bit & 1}


def _category_or_service(policy: Policy, mask: int, names: list[str], wanted: set[str]):
    for bit in _bits(mask):
        category = policy.bit_category.get(bit)
        if category in wanted:
            return ("category", category)
    for service in policy.services_of(names):
        if service in wanted:
            return ("service", service)
    return None


def _describe(policy: Policy, kind: str, what: str) -> str:
    return policy.category_name(what) if kind == "category" else _service_name(policy, what)


def _service_name(policy: Policy, service: str) -> str:
    info = policy.catalog.services.get(service)
    return info.name if info else service


def _moment(epoch: float | None, tz) -> datetime.datetime | None:
    return None if epoch is None else datetime.datetime.fromtimestamp(epoch, tz)


def _until_text(epoch: float | None, tz) -> str:
    return " until resumed" if epoch is None else f" until {_moment(epoch, tz):%H:%M}"
