"""The family's rules in the config: web addresses, block lists, profiles, schedules, devices.

Parsed into frozen objects and validated against the catalog (categories, services), every
error naming its YAML path: `profiles.kids.schedules[0].start: "25:00" is not a time (HH:MM)`.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from filterd.rules.checking import did_you_mean, parse_listen, show
from filterd.lists.domains import FORMATS as LIST_FORMATS, LIST_ID, normalise_domain
from filterd.rules import suffixes
from filterd.lists.index import MAX_LISTS as MAX_INDEX_LISTS
from filterd.rules.catalog import YOUTUBE_LEVELS
from filterd.rules.presets import PRESETS
from filterd.rules.log_settings import LOG_MODES

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_GROUPS = {"weekdays": DAYS[:5], "weekends": DAYS[5:], "weekend": DAYS[5:], "daily": DAYS,
              "everyday": DAYS, "all": DAYS}
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PROTECTED_CATEGORY = "csam"

_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}").fullmatch
_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.'-]{0,63}").fullmatch
_PATTERN = re.compile(r"[a-z0-9*_.-]{1,253}").fullmatch
_MAC = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}").fullmatch
# A device's client ID for encrypted DNS: one DNS label (it is the first label of a DoT host
# name, `emma-phone.filter.home`, and a DoH path segment), so no dots, no underscores.
CLIENT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?").fullmatch
_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)|24:00").fullmatch


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    address: str | None = None       # what blocked names resolve to in blockpage mode (IPv4)
    address6: str | None = None
    hostnames: tuple[str, ...] = ("filter.home",)
    blockpage_https: str = "reset"   # reset: nothing on https_port; ca: the block page over HTTPS (localca)
    https_port: int = 443
    admin_https: str = "auto"        # auto: admin pages redirect to HTTPS where the HTTPS server runs (not loopback)


@dataclass(frozen=True)
class ListSource:
    id: str
    category: str
    url: str | None = None
    path: str | None = None
    format: str | None = None
    allow_private: bool = False   # the URL may be on the LAN (a NAS): private addresses allowed


@dataclass(frozen=True)
class Schedule:
    """A weekly window; it belongs to the day it starts, and may run past midnight."""

    name: str
    days: frozenset[int]          # 0 = Monday
    start: int                    # minutes after midnight
    end: int                      # minutes after midnight; ≤ start means the next day
    block_all: bool
    block: tuple[str, ...]        # categories and services blocked in the window (block_all False)
    allow: tuple[str, ...]        # domains still allowed in the window


@dataclass(frozen=True)
class Limit:
    """A daily allowance ("one hour of YouTube a day"), counted per device (or per profile)."""

    name: str
    minutes: tuple[int | None, ...]   # per weekday (0 = Monday): the allowance, None where it does not apply
    services: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    all: bool = False                 # every allowed name (but the filter's own and the allow list)
    per: str = "device"               # device: an allowance per device; profile: one for all its devices
    reset: int = 0                    # minutes after midnight when the day's count starts again
    notify: bool = False              # tell the parents when it runs out


@dataclass(frozen=True)
class Profile:
    name: str
    preset: str | None = None
    block_categories: tuple[str, ...] = ()
    block_services: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()   # domains and *wildcard* patterns
    safesearch: bool = False
    youtube: str = "off"
    schedules: tuple[Schedule, ...] = ()
    bypass_protection: bool = False
    log: str | None = None        # full | anonymous | off; None: the config's log.mode
    limits: tuple[Limit, ...] = ()


@dataclass(frozen=True)
class Device:
    name: str
    profile: str
    ip: str | None = None
    mac: str | None = None
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    client_id: str | None = None    # who it is over DoT (SNI's first label) and DoH (the path)


@dataclass(frozen=True)
class Rules:
    web: WebConfig
    lists: tuple[ListSource, ...]
    profiles: dict[str, Profile]
    devices: tuple[Device, ...]
    default_profile: str
    disabled_lists: frozenset[str] = frozenset()   # catalog sources a parent switched off

    def blocked_names(self) -> set[str]:
        """Every category or service name any profile blocks, directly, in a schedule or when a
        daily limit is used up (its lists are needed to know what counts toward it)."""
        names: set[str] = set()
        for profile in self.profiles.values():
            names.update(profile.block_categories)
            for schedule in profile.schedules:
                names.update(schedule.block)
            for limit in profile.limits:
                names.update(limit.categories)
                names.update(limit.services)
        return names

    def device(self, name: str | None) -> Device | None:
        """The device with this name, whatever its case (names are unique regardless of case)."""
        if not name:
            return None
        wanted = name.lower()
        return next((d for d in self.devices if d.name.lower() == wanted), None)

    def profile_of(self, device_name: str | None) -> str:
        """The profile a named device is on; the default profile for an unnamed one."""
        device = self.device(device_name)
        return device.profile if device else self.default_profile


def _time(text, path: str, check, end: bool = False) -> int | None:
    if isinstance(text, int) and not isinstance(text, bool):
        text = f"{text // 60:02d}:{text % 60:02d}"  # YAML 1.1 reads 21:00 as sexagesimal 1260
    if not isinstance(text, str) or not _TIME(text.strip()) or (text.strip() == "24:00" and not end):
        check.error(path, f'"{text}" is not a time (write HH:MM, e.g. "21:00"'
                    + (', or "24:00" for midnight)' if end else ")"))
        return None
    hours, minutes = text.strip().split(":")
    return int(hours) * 60 + int(minutes)


def _domains(check, data: dict, key: str, path: str, patterns: bool = False) -> tuple[str, ...]:
    out = []
    for item_path, text in check.string_list(data, key, path, []):
        text = text.strip().lower()
        if patterns and "*" in text:
            if _PATTERN(text) and text.strip("*"):
                out.append(text)
                continue
            check.error(item_path, f'"{text}" is not a domain or a *wildcard* pattern')
            continue
        domain = normalise_domain(text)
        if domain is None:
            check.error(item_path, f'"{text}" is not a domain name')
        elif suffixes.is_public_suffix(domain):
            check.error(item_path, suffixes.problem(domain, key))
        else:
            out.append(domain)
    return tuple(dict.fromkeys(out))


def _names(check, data: dict, key: str, path: str, known: dict | set, what: str) -> tuple[str, ...]:
    out = []
    for item_path, text in check.string_list(data, key, path, []):
        if text not in known:
            check.error(item_path, f'"{text}" is not a known {what}' + did_you_mean(text, known))
        elif text != PROTECTED_CATEGORY:
            out.append(text)
    return tuple(dict.fromkeys(out))


def _parse_web(data, check) -> WebConfig:

    data = check.mapping(data, "web", {"listen", "address", "address6", "hostnames", "blockpage_https", "https_port",
                                       "admin_https"})
    host, port = "127.0.0.1", 8080
    if "listen" in data:
        try:
            listen = parse_listen(str(data["listen"]))
            host, port = listen.host, listen.port
        except ValueError as exc:
            check.error("web.listen", f'"{data["listen"]}" {exc}')
    addresses = {}
    for key, version in (("address", 4), ("address6", 6)):
        value = data.get(key)
        if value is None:
            continue
        try:
            address = ipaddress.ip_address(str(value))
            if address.version != version:
                raise ValueError
            addresses[key] = str(address)
        except ValueError:
            check.error(f"web.{key}", f'"{value}" is not an IPv{version} address')
    hostnames = []
    for item_path, text in check.string_list(data, "hostnames", "web", ["filter.home"]):
        name = normalise_domain(text)
        if name is None:
            check.error(item_path, f'"{text}" is not a host name')
        else:
            hostnames.append(name)
    https = data.get("blockpage_https", "reset")
    if https not in ("reset", "ca"):
        check.error("web.blockpage_https", f'"{https}" must be reset or ca')
        https = "reset"
    https_port = check.integer(data, "https_port", "web", 443, 1, 65535)
    admin_https = data.get("admin_https", "auto")
    admin_https = "off" if admin_https is False else admin_https     # YAML 1.1 reads a bare off as false
    if admin_https not in ("auto", "off"):
        check.error("web.admin_https", f'"{admin_https}" must be auto or off')
        admin_https = "auto"
    return WebConfig(host, port, addresses.get("address"), addresses.get("address6"), tuple(hostnames), https,
                     https_port, admin_https)


def _parse_lists(data, check, categories) -> tuple[tuple[ListSource, ...], frozenset[str]]:
    """The config's own lists, and the catalog sources switched off (`{id: ut1-games, enabled: false}`).

    A list with a catalog source's id and a url or path replaces that source.
    """
    if data is None:
        return (), frozenset()
    if not isinstance(data, list):
        check.error("lists", "must be a list of {id, url or path, category}")
        return (), frozenset()
    catalog = {source.id: category_id for category_id, category in categories.items()
               for source in getattr(category, "sources", ())}
    out: list[ListSource] = []
    disabled: set[str] = set()
    seen: set[str] = set()
    for i, item in enumerate(data):
        path = f"lists[{i}]"
        item = check.mapping(item, path, {"id", "url", "path", "category", "format", "allow_private", "enabled"})
        list_id = item.get("id")
        if not isinstance(list_id, str) or not LIST_ID.fullmatch(list_id):
            check.error(f"{path}.id", f"{show(list_id)} must be a short id of a-z, 0-9, '-', '_', '.'")
            continue
        if list_id in seen:
            check.error(f"{path}.id", f'"{list_id}" is used by another list')
        if list_id.startswith("seed-"):
            check.error(f"{path}.id", f'"{list_id}": ids starting with "seed-" are kept for the shipped seed lists')
        seen.add(list_id)
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            check.error(f"{path}.enabled", f"{show(enabled)} must be true or false")
            continue
        allow_private = item.get("allow_private", False)
        if not isinstance(allow_private, bool):
            check.error(f"{path}.allow_private", f"{show(allow_private)} must be true or false")
        url, file_path = item.get("url"), item.get("path")
        if list_id in catalog and url is None and file_path is None:
            extra = sorted(set(item) - {"id", "enabled"})
            if extra:
                check.error(f"{path}.{extra[0]}", f'"{list_id}" is a catalog list: only enabled can be set '
                            "(or give a url or path to replace it)")
            if not enabled:
                disabled.add(list_id)
            continue
        if not enabled:
            continue
        if (url is None) == (file_path is None):
            check.error(path, "needs exactly one of url (to download) or path (a local file)")
            continue
        if url is not None and (not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url)):
            check.error(f"{path}.url", f"{show(url)} must be an http:// or https:// address")
        if file_path is not None and not isinstance(file_path, str):
            check.error(f"{path}.path", f"{show(file_path)} must be a file path")
        category = item.get("category", catalog.get(list_id))
        if not isinstance(category, str) or category not in categories:
            check.error(f"{path}.category", f"{show(category)} is not a category "
                        f"({', '.join(sorted(categories))})")
        fmt = item.get("format")
        if fmt is not None and fmt not in LIST_FORMATS:
            check.error(f"{path}.format", f"{show(fmt)} must be one of {', '.join(LIST_FORMATS)}")
        if category == PROTECTED_CATEGORY and fmt != "sha256":
            check.error(f"{path}.format", "csam lists are only accepted hashed (format: sha256), "
                        "so their domains are never stored in clear")
        out.append(ListSource(list_id, str(category), url, file_path, fmt, allow_private is True))
    return tuple(out), frozenset(disabled)


def _check_list_count(rules: Rules, categories, check) -> None:
    """Seeds, the catalog sources of blocked categories and the config's lists share one index."""
    blocked = rules.blocked_names() | {c for c, category in categories.items()
                                       if getattr(category, "protected", False)}
    own = {source.id for source in rules.lists}
    seeds = sum(1 for c in categories.values() if getattr(c, "seed", None))
    catalog = sum(1 for c in blocked if c in categories for source in getattr(categories[c], "sources", ())
                  if source.id not in own and source.id not in rules.disabled_lists)
    total = seeds + catalog + len(rules.lists)
    if total > MAX_INDEX_LISTS:
        check.error("lists", f"{len(rules.lists)} lists: with the {seeds} seed lists and {catalog} lists of the "
                    f"blocked categories that makes {total}, and at most {MAX_INDEX_LISTS} fit in the index "
                    "(merge some into one file, or switch catalog lists off with enabled: false)")


def _days(check, item: dict, key: str, path: str) -> set[int]:
    """`days:` of a schedule or a limit: mon … sun and the groups (weekdays, weekends, daily)."""
    days: set[int] = set()
    for day_path, written in check.string_list(item, key, path, list(DAYS)):
        text = written.strip().lower()
        if text in DAY_GROUPS:
            days.update(DAYS.index(d) for d in DAY_GROUPS[text])
        elif text in DAYS or text in DAY_NAMES:
            days.add(DAYS.index(text[:3]))
        else:
            check.error(day_path, f'"{written}" is not a day (mon … sun, weekdays, weekends, daily)'
                        + did_you_mean(text, list(DAYS) + list(DAY_NAMES) + list(DAY_GROUPS)))
    return days


_DURATION = re.compile(r"(?:(\d+)h)?\s*(?:(\d+)m(?:in)?)?").fullmatch
LIMIT_KEYS = ("daily", "weekdays", "weekends") + DAYS


def parse_minutes(value) -> int | None:
    """30m, 1h, 1h30m, 90 (minutes) → minutes; None when it is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip().lower().replace(" ", "")
    match = _DURATION(text)
    if not text or not match or not (match.group(1) or match.group(2)):
        return None
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def _parse_limit(item, path: str, check, categories, services) -> Limit | None:
    known = {"name", "services", "categories", "domains", "all", "days", "per", "reset", "notify", *LIMIT_KEYS}
    item = check.mapping(item, path, known)
    name = item.get("name")
    if not isinstance(name, str) or not _ID(name.strip().lower()):
        check.error(f"{path}.name", f"{show(name)}: every limit needs a short name (letters, digits, - or _), "
                    "e.g. youtube")
        return None
    amounts: dict[str, int] = {}
    for key in LIMIT_KEYS:
        if key in item:
            minutes = parse_minutes(item[key])
            if minutes is None or not 0 <= minutes <= 1440:
                check.error(f"{path}.{key}", f"{show(item[key])} is not a duration from 0m to 24h "
                            "(write e.g. 30m, 1h or 1h30m)")
            else:
                amounts[key] = minutes
    if not any(key in item for key in LIMIT_KEYS):
        check.error(f"{path}.daily", "is needed: how long a day (e.g. daily: 1h)")
    days = _days(check, item, "days", path) if "days" in item else set(range(7))
    minutes: list[int | None] = []
    for index, day in enumerate(DAYS):
        group = "weekends" if index >= 5 else "weekdays"
        amount = amounts.get(day, amounts.get(group, amounts.get("daily")))
        minutes.append(amount if index in days else None)
    scope_all = item.get("all", False)
    if not isinstance(scope_all, bool):
        check.error(f"{path}.all", f"{show(scope_all)} must be true or false")
        scope_all = False
    chosen_services = _names(check, item, "services", path, services, "service")
    chosen_categories = _names(check, item, "categories", path, categories, "category")
    domains = _domains(check, item, "domains", path)
    if not (scope_all or chosen_services or chosen_categories or domains) and not check.problems:
        check.error(path, "needs what it counts: services, categories, domains or all: true")
    per = item.get("per", "device")
    if per not in ("device", "profile"):
        check.error(f"{path}.per", f"{show(per)} must be device or profile")
        per = "device"
    reset = _time(item.get("reset", "00:00"), f"{path}.reset", check) if "reset" in item else 0
    notify = item.get("notify", False)
    if not isinstance(notify, bool):
        check.error(f"{path}.notify", f"{show(notify)} must be true or false")
        notify = False
    return Limit(name.strip().lower(), tuple(minutes), chosen_services, chosen_categories, domains,
                 scope_all, per, reset or 0, notify)


def _parse_schedule(item, path: str, check, blockable: set[str]) -> Schedule | None:
    item = check.mapping(item, path, {"name", "days", "start", "end", "block", "allow"})
    name = item.get("name", "")
    if not isinstance(name, str) or not name.strip():
        check.error(f"{path}.name", "every schedule needs a name (e.g. bedtime)")
        name = "schedule"
    days = _days(check, item, "days", path)
    start = _time(item.get("start"), f"{path}.start", check)
    end = _time(item.get("end"), f"{path}.end", check, end=True)
    if start is not None and end is not None and start == end:
        check.error(f"{path}.end", "is the same as start: a window needs a length")
    block = item.get("block", "all")
    block_all = block == "all"
    blocked: tuple[str, ...] = ()
    if not block_all:
        if isinstance(block, str):
            block = [block]
        if not isinstance(block, list):
            check.error(f"{path}.block", 'must be "all" or a list of categories and services')
        else:
            blocked = _names(check, {"block": block}, "block", path, blockable, "category or service")
    allow = _domains(check, item, "allow", path)
    if start is None or end is None:
        return None
    return Schedule(name.strip(), frozenset(days), start, end,
                    block_all, blocked, allow)


def parse_profile(name: str, data, check, categories, services) -> Profile:
    path = f"profiles.{name}"
    known = {"preset", "block_categories", "block_services", "allow", "block", "safesearch", "youtube",
             "schedules", "bypass_protection", "log", "limits", "block_categories_add", "block_categories_remove",
             "block_services_add", "block_services_remove"}
    data = check.mapping(data, path, known)
    preset_name = data.get("preset")
    preset: dict = {}
    if preset_name is not None:
        if not isinstance(preset_name, str) or preset_name not in PRESETS:
            check.error(f"{path}.preset", f"{show(preset_name)} must be one of {', '.join(PRESETS)}")
        else:
            preset = PRESETS[preset_name]
    merged = {**preset, **{k: v for k, v in data.items() if k != "preset"}}
    safesearch = merged.get("safesearch", False)
    if not isinstance(safesearch, bool):
        check.error(f"{path}.safesearch", f"{show(safesearch)} must be true or false")
        safesearch = False
    bypass = merged.get("bypass_protection", False)
    if not isinstance(bypass, bool):
        check.error(f"{path}.bypass_protection", f"{show(bypass)} must be true or false")
        bypass = False
    youtube = merged.get("youtube", "off")
    if youtube is False:
        youtube = "off"
    if youtube not in YOUTUBE_LEVELS:
        check.error(f"{path}.youtube", f"{show(youtube)} must be one of {', '.join(YOUTUBE_LEVELS)}")
        youtube = "off"
    log_mode = merged.get("log")
    if log_mode is False:   # YAML reads a bare `off` as false
        log_mode = "off"
    if log_mode is not None and log_mode not in LOG_MODES:
        check.error(f"{path}.log", f"{show(log_mode)} must be one of {', '.join(LOG_MODES)}")
        log_mode = None
    schedules = []
    raw_schedules = merged.get("schedules") or []
    if not isinstance(raw_schedules, list):
        check.error(f"{path}.schedules", "must be a list of {name, days, start, end, block}")
        raw_schedules = []
    blockable = set(categories) | set(services)
    for i, item in enumerate(raw_schedules):
        schedule = _parse_schedule(item, f"{path}.schedules[{i}]", check, blockable)
        if schedule is not None:
            schedules.append(schedule)
    limits: list[Limit] = []
    raw_limits = merged.get("limits") or []
    if not isinstance(raw_limits, list):
        check.error(f"{path}.limits", "must be a list of {name, services or categories or all, daily}")
        raw_limits = []
    for i, item in enumerate(raw_limits):
        limit = _parse_limit(item, f"{path}.limits[{i}]", check, categories, services)
        if limit is None:
            continue
        if any(other.name == limit.name for other in limits):
            check.error(f"{path}.limits[{i}].name", f'"{limit.name}" is the name of another limit of this profile')
            continue
        limits.append(limit)
    return Profile(
        name=name,
        preset=preset_name if isinstance(preset_name, str) and preset_name in PRESETS else None,
        block_categories=_relative(check, merged, "block_categories", path, categories, "category"),
        block_services=_relative(check, merged, "block_services", path, services, "service"),
        allow=_domains(check, merged, "allow", path),
        block=_domains(check, merged, "block", path, patterns=True),
        safesearch=safesearch,
        youtube=youtube,
        schedules=tuple(schedules),
        bypass_protection=bypass,
        log=log_mode,
        limits=tuple(limits),
    )


def _relative(check, merged: dict, key: str, path: str, known, what: str) -> tuple[str, ...]:
    """`key` (the preset's or the profile's own list) with `key_add` added and `key_remove`
    taken away: how a profile based on a preset says what it changes and keeps following the
    preset for the rest (a category a later preset adds reaches it too)."""
    base = _names(check, merged, key, path, known, what)
    added = _names(check, merged, f"{key}_add", path, known, what)
    removed = set(_names(check, merged, f"{key}_remove", path, known, what))
    return tuple(name for name in dict.fromkeys(base + added) if name not in removed)


def _parse_devices(data, check, profiles) -> tuple[Device, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        check.error("devices", "must be a list of {name, ip or mac or cidr, profile}")
        return ()
    out = []
    names: set[str] = set()
    client_ids: set[str] = set()
    for i, item in enumerate(data):
        path = f"devices[{i}]"
        item = check.mapping(item, path, {"name", "ip", "mac", "cidr", "client_id", "profile"})
        name = item.get("name")
        if not isinstance(name, str) or not _DEVICE_NAME(name):
            check.error(f"{path}.name", f"{show(name)} must be a name of letters, digits, spaces, '-', '_', '.'")
            continue
        if name.lower() in names:
            check.error(f"{path}.name", f'"{name}" names another device too')
        names.add(name.lower())
        profile = item.get("profile")
        if not isinstance(profile, str) or profile not in profiles:
            check.error(f"{path}.profile", f"{show(profile)} is not a profile ({', '.join(profiles)})")
        client_id = _client_id(item.get("client_id"), f"{path}.client_id", client_ids, check)
        keys = [k for k in ("ip", "mac", "cidr") if item.get(k) is not None]
        if len(keys) > 1 or (not keys and "client_id" not in item):
            check.error(path, "needs exactly one of ip, mac or cidr (or a client_id, alone or beside one)")
            continue
        if not keys:
            if client_id is not None:
                out.append(Device(name, str(profile), client_id=client_id))
            continue
        ip = mac = cidr = None
        value = str(item[keys[0]]).strip()
        try:
            if keys[0] == "ip":
                ip = str(ipaddress.ip_address(value))
            elif keys[0] == "cidr":
                cidr = ipaddress.ip_network(value, strict=False)
            else:
                if not _MAC(value.lower()):
                    raise ValueError
                mac = value.lower().replace("-", ":")
        except ValueError:
            what = {"ip": "an IP address", "mac": "a MAC address (aa:bb:cc:dd:ee:ff)",
                    "cidr": "a network (e.g. 192.168.50.0/24)"}[keys[0]]
            check.error(f"{path}.{keys[0]}", f'"{value}" is not {what}')
            continue
        out.append(Device(name, str(profile), ip, mac, cidr, client_id))
    return tuple(out)


def _client_id(value, path: str, seen: set[str], check) -> str | None:
    """A device's client ID: one DNS label (letters, digits, hyphens), unique in the config;
    compared without case, as SNI host names are."""
    if value is None:
        return None
    if not isinstance(value, str) or not CLIENT_ID(value.lower()):
        check.error(path, f"{show(value)} must be letters, digits and '-' (up to 63, e.g. emma-phone)")
        return None
    value = value.lower()
    if value in seen:
        check.error(path, f'"{value}" is the client ID of another device too')
    seen.add(value)
    return value


def parse_rules(data: dict, check, categories, services) -> Rules:
    """The rules sections of a config; problems go to `check`."""
    web = _parse_web(data.get("web"), check)
    lists, disabled_lists = _parse_lists(data.get("lists"), check, categories)
    raw_profiles = data.get("profiles")
    profiles: dict[str, Profile] = {}
    if raw_profiles is None:
        profiles["default"] = Profile("default")
    elif not isinstance(raw_profiles, dict) or not raw_profiles:
        check.error("profiles", "must be a mapping of profile names to their rules")
    else:
        for name, body in raw_profiles.items():
            if not isinstance(name, str) or not _ID(name):
                check.error(f"profiles.{name}", "a profile name is a short id of a-z, 0-9, '-', '_'")
                continue
            profiles[name] = parse_profile(name, body, check, categories, services)
    default = data.get("default_profile", "default" if "default" in profiles else next(iter(profiles), None))
    if (not isinstance(default, str) or default not in profiles) and profiles:
        check.error("default_profile", f"{show(default)} is not a profile ({', '.join(profiles)})")
    devices = _parse_devices(data.get("devices"), check, profiles)
    rules = Rules(web, lists, profiles, devices, str(default), disabled_lists)
    _check_list_count(rules, categories, check)
    return rules
