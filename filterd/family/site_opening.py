"""What approving a site opens: the whole site, not the one name the child happened to ask for.

Approving `www.reddit.com` alone leaves `i.redd.it`, `redditstatic.com` … blocked and the page
broken, so the child asks again. `plan` says what an approval (or an allow from the log or the
device page) should open:

  1. a name that belongs to a service of the catalog opens that service (all of its domains);
  2. otherwise its registrable domain (public-suffix aware: www.bbc.co.uk → bbc.co.uk), plus
     its companions: the names of config/companions.yaml for that site, and the names the same
     device was refused in a short window around its request (its page's CDNs, APIs, image hosts).

Companions are offered to the parent as checkboxes. Pre-ticked: the curated ones, and observed
ones blocked for the same reason (same category, or the same rule) that are not in a stronger
category. Names blocked as `csam` are never offered; `adult`, `malware` and `phishing` ones are
offered unticked (unless the request itself was for that category).
"""
from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import yaml

from filterd.rules import suffixes
from filterd.rules.catalog import DEFAULT_CONFIG_DIR

WINDOW_BEFORE_S = 60     # an app asks for its names at once; a page within seconds of its main name
WINDOW_AFTER_S = 30
NEVER_OFFERED = frozenset({"csam"})
STRONGER = frozenset({"adult", "malware", "phishing"})
MAX_COMPANIONS = 20
RULE_WORDS = {"profile_block": "the profile's block list", "service": "a blocked app", "category": "blocked"}


@dataclass(frozen=True)
class Companion:
    domain: str          # a registrable domain (it covers its subdomains)
    why: str             # "needed by poki.com" or "refused 12 times around the request (games)"
    ticked: bool


@dataclass(frozen=True)
class Opening:
    opens: str                            # a service id or the site's registrable domain
    service: str | None                   # set when `opens` is a service of the catalog
    companions: tuple[Companion, ...] = ()

    def ticked(self) -> list[str]:
        return [c.domain for c in self.companions if c.ticked]


@functools.lru_cache(maxsize=4)
def curated(config_dir: Path = DEFAULT_CONFIG_DIR) -> dict[str, tuple[str, ...]]:
    """config/companions.yaml: site → its companion domains."""
    path = config_dir / "companions.yaml"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return {str(site).lower(): tuple(str(d).lower() for d in names or ())
            for site, names in (data.get("sites") or {}).items()}


def service_of(catalog, domain: str) -> str | None:
    """The catalog service whose domains cover `domain`, if any."""
    for service in catalog.services.values():
        for owned in service.domains:
            if domain == owned or domain.endswith("." + owned):
                return service.id
    return None


def plan(config, conn: sqlite3.Connection | None, domain: str, unblocks: str, *, device: str = "",
         client: str | None = None, around: float | None = None) -> Opening:
    """What to open for a request (or an allow) of `domain`, whose own answer was `unblocks`
    (access_requests.unblocks_for). `around`: when the device was refused (the request's time),
    to read its other refused names from the log."""
    catalog = config.catalog
    if unblocks in catalog.services:
        return Opening(unblocks, unblocks)
    service = service_of(catalog, domain) or service_of(catalog, unblocks)
    if service is not None:
        return Opening(service, service)
    site = unblocks if "." in unblocks else domain
    if not suffixes.is_public_suffix(suffixes.registrable(site)):
        site = suffixes.registrable(site)
    companions: dict[str, Companion] = {}
    for name in curated().get(site, ()):
        companions[name] = Companion(name, f"needed by {site}", True)
    if conn is not None and around is not None:
        for companion in _observed(conn, site, device, client, around):
            companions.setdefault(companion.domain, companion)
    return Opening(site, None, tuple(list(companions.values())[:MAX_COMPANIONS]))


def _observed(conn: sqlite3.Connection, site: str, device: str, client: str | None,
              around: float) -> list[Companion]:
    if not (device or client):
        return []
    rows = _refused(conn, device, client, around - WINDOW_BEFORE_S, around + WINDOW_AFTER_S)
    own = [(rule, category) for name, rule, category, _ in rows
           if name == site or name.endswith("." + site)]
    own_rule, own_category = own[0] if own else (None, None)
    found: dict[str, list] = {}
    for name, rule, category, count in rows:
        if category in NEVER_OFFERED or rule in ("csam", "pause", "schedule", "limit", "bypass"):
            continue
        domain = suffixes.registrable(name)
        if domain == site or suffixes.is_public_suffix(domain):
            continue
        entry = found.setdefault(domain, [0, rule, category])
        entry[0] += count
    out = []
    for domain, (count, rule, category) in sorted(found.items(), key=lambda kv: -kv[1][0]):
        same = (category == own_category) if own_category else (rule == own_rule)
        stronger = category in STRONGER and category != own_category
        what = category.replace("_", " ") if category else RULE_WORDS.get(rule or "", "blocked")
        out.append(Companion(domain, f"refused {count} time{'s' if count != 1 else ''} around the request "
                             f"({what})", same and not stronger))
    return out


def _refused(conn: sqlite3.Connection, device: str, client: str | None, start: float, end: float) -> list[tuple]:
    """(name, rule, category, count) of what the device was refused between start and end."""
    # A named device by its name (its rows carry it), an unnamed one by its address.
    return conn.execute(
        "SELECT name, rule, category, count(*) FROM queries WHERE (device = ? OR (? = '' AND device IS NULL"
        " AND client = ?)) AND action = 'block' AND ts BETWEEN ? AND ? AND name IS NOT NULL"
        " GROUP BY name, rule, category",
        (device, device, client, start, end)).fetchall()


STILL_REFUSED_S = 600    # what a child's reload of an opened site looks back on
MAX_STILL_REFUSED = 8


def still_refused(conn: sqlite3.Connection, site: str, device: str, client: str | None, since: float,
                  now: float) -> list[str]:
    """The names a device was refused since `since` (at most 10 minutes back) that are not `site`
    itself: what an opened site still misses (its CDN, its API), most refused first, for the block
    page to offer one more request. csam and the rules a request cannot lift here (pause,
    bedtime, a limit, bypass protection) are left out; the caller checks each is still blocked."""
    if not (device or client):
        return []
    counts: dict[str, int] = {}
    for name, rule, category, count in _refused(conn, device, client, max(since, now - STILL_REFUSED_S), now):
        if category in NEVER_OFFERED or rule in ("csam", "pause", "schedule", "limit", "bypass"):
            continue
        if name == site or name.endswith("." + site):
            continue
        counts[name] = counts.get(name, 0) + count
    return sorted(counts, key=lambda name: -counts[name])[:MAX_STILL_REFUSED]
