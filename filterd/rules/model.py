"""The family's rules in the config: web addresses, block lists, profiles, schedules, devices.

Parsed into frozen objects and validated against the catalog (categories, services), every
error naming its YAML path: `profiles.kids.schedules[0].start: "25:00" is not a time (HH:MM)`.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from filterd.rules.checking import show
from filterd.lists.domains import normalise_domain
from filterd.rules import suffixes
from filterd.lists.index import MAX_LISTS as MAX_INDEX_LISTS
from filterd.rules.presets import PRESETS
from filterd.store.log_writer import LOG_MODES

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_GROUPS = {"weekdays": DAYS[:5], "weekends": DAYS[5:], "weekend": DAYS[5:], "daily": DAYS,
              "everyday": DAYS, "all": DAYS}
LIST_FORMATS = ("hosts", "domains", "adblock", "sha256")
YOUTUBE_LEVELS = ("strict", "moderate", "off")
PROTECTED_CATEGORY = "csam"

_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}").fullmatch
_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.'-]{0,63}").fullmatch
_PATTERN = re.compile(r"[a-z0-9*_.-]{1,253}").fullmatch
_MAC = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}").fullmatch
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


@dataclass(frozen=True)
class Device:
    name: str
    profile: str
    ip: str | None = None
    mac: str | None = None
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


@dataclass(frozen=True)
class Rules:
    web: WebConfig
    lists: tuple[ListSource, ...]
    profiles: dict[str, Profile]
    devices: tuple[Device, ...]
    default_profile: str


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
            check.error(item_path, f'"{text}" is not a known {what}')
        elif text != PROTECTED_CATEGORY:
            out.append(text)
    return tuple(dict.fromkeys(out))


def _parse_web(data, check) -> WebConfig:
    from filterd.rules.config import parse_listen

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


def _parse_lists(data, check, categories, max_lists: int) -> tuple[ListSource, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        check.error("lists", "must be a list of {id, url or path, category}")
        return ()
    out: list[ListSource] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        path = f"lists[{i}]"
        item = check.mapping(item, path, {"id", "url", "path", "category", "format"})
        list_id = item.get("id")
        if not isinstance(list_id, str) or not _ID(list_id):
            check.error(f"{path}.id", f"{show(list_id)} must be a short id of a-z, 0-9, '-', '_', '.'")
            continue
        if list_id in seen:
            check.error(f"{path}.id", f'"{list_id}" is used by another list')
        if list_id.startswith("seed-"):
            check.error(f"{path}.id", f'"{list_id}": ids starting with "seed-" are kept for the shipped seed lists')
        seen.add(list_id)
        url, file_path = item.get("url"), item.get("path")
        if (url is None) == (file_path is None):
            check.error(path, "needs exactly one of url (to download) or path (a local file)")
            continue
        if url is not None and (not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url)):
            check.error(f"{path}.url", f"{show(url)} must be an http:// or https:// address")
        if file_path is not None and not isinstance(file_path, str):
            check.error(f"{path}.path", f"{show(file_path)} must be a file path")
        category = item.get("category")
        if not isinstance(category, str) or category not in categories:
            check.error(f"{path}.category", f"{show(category)} is not a category "
                        f"({', '.join(sorted(categories))})")
        fmt = item.get("format")
        if fmt is not None and fmt not in LIST_FORMATS:
            check.error(f"{path}.format", f"{show(fmt)} must be one of {', '.join(LIST_FORMATS)}")
        if category == PROTECTED_CATEGORY and fmt != "sha256":
            check.error(f"{path}.format", "csam lists are only accepted hashed (format: sha256), "
                        "so their domains are never stored in clear")
        out.append(ListSource(list_id, str(category), url, file_path, fmt))
    if len(out) > max_lists:
        check.error("lists", f"{len(out)} lists: at most {max_lists} fit beside the "
                    f"{MAX_INDEX_LISTS - max_lists} seed lists (merge some into one file)")
    return tuple(out)


def _parse_schedule(item, path: str, check, blockable: set[str]) -> Schedule | None:
    item = check.mapping(item, path, {"name", "days", "start", "end", "block", "allow"})
    name = item.get("name", "")
    if not isinstance(name, str) or not name.strip():
        check.error(f"{path}.name", "every schedule needs a name (e.g. bedtime)")
        name = "schedule"
    days: set[int] = set()
    for day_path, text in check.string_list(item, "days", path, list(DAYS)):
        text = text.strip().lower()[:3] if text.strip().lower() not in DAY_GROUPS else text.strip().lower()
        if text in DAY_GROUPS:
            days.update(DAYS.index(d) for d in DAY_GROUPS[text])
        elif text in DAYS:
            days.add(DAYS.index(text))
        else:
            check.error(day_path, f'"{text}" is not a day (mon … sun, weekdays, weekends, daily)')
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
             "schedules", "bypass_protection", "log"}
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
    return Profile(
        name=name,
        preset=preset_name if isinstance(preset_name, str) and preset_name in PRESETS else None,
        block_categories=_names(check, merged, "block_categories", path, categories, "category"),
        block_services=_names(check, merged, "block_services", path, services, "service"),
        allow=_domains(check, merged, "allow", path),
        block=_domains(check, merged, "block", path, patterns=True),
        safesearch=safesearch,
        youtube=youtube,
        schedules=tuple(schedules),
        bypass_protection=bypass,
        log=log_mode,
    )


def _parse_devices(data, check, profiles) -> tuple[Device, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        check.error("devices", "must be a list of {name, ip or mac or cidr, profile}")
        return ()
    out = []
    names: set[str] = set()
    for i, item in enumerate(data):
        path = f"devices[{i}]"
        item = check.mapping(item, path, {"name", "ip", "mac", "cidr", "profile"})
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
        keys = [k for k in ("ip", "mac", "cidr") if item.get(k) is not None]
        if len(keys) != 1:
            check.error(path, "needs exactly one of ip, mac or cidr")
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
        out.append(Device(name, str(profile), ip, mac, cidr))
    return tuple(out)


def parse_rules(data: dict, check, categories, services) -> Rules:
    """The rules sections of a config; problems go to `check`."""
    web = _parse_web(data.get("web"), check)
    seeds = sum(1 for c in categories.values() if getattr(c, "seed", None))
    lists = _parse_lists(data.get("lists"), check, categories, MAX_INDEX_LISTS - seeds)
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
    return Rules(web, lists, profiles, devices, str(default))
