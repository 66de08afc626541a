"""The catalogs: categories and their lists, services and their domains, SafeSearch targets.

They are data shipped with filterd (`config/categories.yaml`, `config/services.yaml`,
`config/safesearch.yaml` and the seed lists in `config/lists/`), loaded once into frozen
objects. Loading checks everything a mistake in them could break in a family's home — ids,
references, that every domain is a domain, that no shared infrastructure (google.com,
akamaihd.net…) is ever blocked whole — and names the file, YAML path and line of each problem:
`config/services.yaml: services[3].category: "socal" is not a category (line 42)`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from filterd.rules.checking import Checker, ConfigError, YamlSyntaxError, parse_yaml, show
from filterd.lists.domains import FORMATS, LIST_ID, normalise_domain
from filterd.lists.essential import ESSENTIAL_DOMAINS, essential_conflict

__all__ = [
    "Catalog", "CatalogError", "Category", "DEFAULT_CONFIG_DIR", "ESSENTIAL_DOMAINS",
    "SafeSearch", "SafeSearchEngine", "Service", "Source", "YOUTUBE_LEVELS", "YouTubeRestrict",
    "essential_conflict", "load_catalog",
]

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
YOUTUBE_LEVELS = ("strict", "moderate", "off")

# libyaml's parser where installed: the catalog is re-read on every config reload, on a Pi.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CATEGORY_ID = re.compile(r"[a-z][a-z0-9_]{0,31}").fullmatch
_SERVICE_ID = _CATEGORY_ID
_SOURCE_ID = LIST_ID.fullmatch


class CatalogError(ConfigError):
    """One or more problems in the catalog files; `problems` lists them, one line each."""


# ---------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class Source:
    """A block list a category is kept up to date from: downloaded (url) or local (path)."""

    id: str
    format: str                      # domains | hosts | adblock | sha256
    licence: str
    url: str | None = None           # the first (or only) file to download
    path: Path | None = None         # a file the operator provides (e.g. the hashed IWF list)
    approx_domains: int | None = None
    homepage: str | None = None
    urls: tuple[str, ...] = ()       # every file, in order: a list split in parts is their concatenation
    parts: str | None = None         # a list in numbered parts ("…/domains.{n}"): as many as are served


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    description: str
    protected: bool                  # always blocked, for everyone (only csam)
    seed: Path | None                # the shipped seed list (absolute path), if any
    seed_domains: frozenset[str]     # its normalised domains
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    category: str
    icon: str
    domains: tuple[str, ...]         # each covers its subdomains
    note: str | None = None


@dataclass(frozen=True)
class SafeSearchEngine:
    id: str
    name: str
    target: str                      # the engine's safe host, answered as a CNAME
    hosts: frozenset[str]            # exact host names rewritten to it
    documentation: str | None = None


@dataclass(frozen=True)
class YouTubeRestrict:
    hosts: frozenset[str]
    strict: str
    moderate: str


@dataclass(frozen=True)
class SafeSearch:
    engines: tuple[SafeSearchEngine, ...]
    youtube: YouTubeRestrict
    unsupported_domains: frozenset[str]    # engines with no safe mode: blocked when SafeSearch is on
    unsupported_sources: tuple[Source, ...]
    _targets: dict[str, str] = field(init=False, repr=False, compare=False)   # host → target

    def __post_init__(self) -> None:
        targets = {host: engine.target for engine in self.engines for host in engine.hosts}
        object.__setattr__(self, "_targets", targets)

    def target(self, host: str) -> str | None:
        """The safe host a search engine's `host` is rewritten to, or None."""
        return self._targets.get(host)


@dataclass(frozen=True)
class Catalog:
    categories: dict[str, Category]
    services: dict[str, Service]
    safesearch: SafeSearch

    def safesearch_target(self, host: str, youtube_level: str, search: bool = True) -> str | None:
        """Where a query for `host` is rewritten: a search engine's safe host (when `search`,
        i.e. SafeSearch is on) or YouTube's restricted host for `youtube_level`; None if neither.
        """
        if youtube_level not in YOUTUBE_LEVELS:
            raise ValueError(f"youtube_level must be one of {', '.join(YOUTUBE_LEVELS)}, not {youtube_level!r}")
        host = host.rstrip(".").lower()
        youtube = self.safesearch.youtube
        if host in youtube.hosts:
            if youtube_level == "strict":
                return youtube.strict
            return youtube.moderate if youtube_level == "moderate" else None
        return self.safesearch.target(host) if search else None

    def services_in(self, category: str) -> tuple[Service, ...]:
        """The services of one category, in catalog order (the web UI groups them so)."""
        return tuple(s for s in self.services.values() if s.category == category)


# ---------------------------------------------------------------- loading


def load_catalog(config_dir: Path = DEFAULT_CONFIG_DIR) -> Catalog:
    """Read and check the three catalog files in `config_dir` and the seed lists they name.

    Relative seed and source paths are relative to the folder holding `config_dir` (the
    project root), as written in the files: `seed: config/lists/adult.txt`.
    Raises CatalogError listing every problem found.
    """
    config_dir = Path(config_dir)
    root = config_dir.resolve().parent
    problems: list[str] = []
    source_ids: dict[str, str] = {}

    check = _Checker(config_dir / "categories.yaml", problems)
    categories = _categories(check, root, source_ids)
    check = _Checker(config_dir / "services.yaml", problems)
    services = _services(check, categories)
    check = _Checker(config_dir / "safesearch.yaml", problems)
    safesearch = _safesearch(check, root, source_ids)
    if problems or safesearch is None:
        raise CatalogError(problems or [f"{_shown(config_dir)}: the catalog did not load"])
    return Catalog(categories, services, safesearch)


class _Checker(Checker):
    """Reads one catalog file and collects its problems, each with the file, YAML path and line.

    The three files share one list of problems, so one error lists everything wrong.
    """

    def __init__(self, path: Path, problems: list[str]):
        super().__init__({})
        self.path = path
        self.shown = _shown(path)
        self.prefix = f"{self.shown}: "
        self.problems = problems
        self.ok = True

    def read(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._fail("file not found")
        except OSError as exc:
            return self._fail(f"cannot read: {exc.strerror}")
        except UnicodeDecodeError:
            return self._fail("not UTF-8 text")
        try:
            parsed = parse_yaml(text, _YAML_LOADER)
        except YamlSyntaxError as exc:
            return self._fail(str(exc))
        data, self.lines = parsed or (None, {})
        if not isinstance(data, dict):
            return self._fail("the top level must be a mapping")
        return data

    def _fail(self, message: str) -> dict:
        self.problems.append(f"{self.shown}: {message}")
        self.ok = False
        return {}

    def error(self, path: str, message: str) -> None:
        super().error(path, message)
        self.ok = False

    def mapping(self, data: Any, path: str, required: set[str], optional: set[str] = frozenset()) -> dict | None:
        """`data` if it is a mapping with every `required` key (and no other than `optional`);
        None when it is no mapping at all. Unlike the config's, a catalog entry is never optional."""
        if not isinstance(data, dict):
            self.error(path, f"must be a mapping, got {show(data)}")
            return None
        self.unknown_keys(data, path, required | optional)
        for key in sorted(required - data.keys()):
            self.error(path or key, f"is missing {key}" if path else "is missing")
        return data

    def items(self, data: dict, key: str, path: str, allow_empty: bool = False) -> list[tuple[str, Any]]:
        """(YAML path, item) for the list under `key`."""
        value = data.get(key)
        where = f"{path}.{key}" if path else key
        if not isinstance(value, list) or (not value and not allow_empty):
            self.error(where, "must be a list" + ("" if allow_empty else " with at least one item"))
            return []
        return [(f"{where}[{i}]", item) for i, item in enumerate(value)]

    def text(self, data: dict, key: str, path: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
            self.error(f"{path}.{key}", f"{show(value)} must be one line of text")
            return ""
        return value.strip()

    def domain(self, path: str, value: Any, what: str = "domain", blocked: bool = True) -> str | None:
        """The normalised domain, or None after recording why it cannot be one.

        A `blocked` domain must not be, nor cover, one a family's normal internet needs.
        """
        name = normalise_domain(value) if isinstance(value, str) else None
        if name is None:
            self.error(path, f"{show(value)} is not a {what} name")
            return None
        problem = essential_conflict(name) if blocked else None
        if problem:
            self.error(path, problem)
            return None
        return name


def _shown(path: Path) -> str:
    """A path as a person would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- categories.yaml


def _categories(check: _Checker, root: Path, source_ids: dict[str, str]) -> dict[str, Category]:
    data = check.read()
    if not check.ok:
        return {}
    check.mapping(data, "", {"categories"})
    out: dict[str, Category] = {}
    for path, item in check.items(data, "categories", ""):
        item = check.mapping(item, path, {"id", "name", "description", "sources"}, {"protected", "seed"})
        if item is None:
            continue
        category_id = item.get("id")
        if not isinstance(category_id, str) or not _CATEGORY_ID(category_id):
            check.error(f"{path}.id", f"{show(category_id)} must be a short id of a-z, 0-9 and _")
            continue
        if category_id in out:
            check.error(f"{path}.id", f'"{category_id}" is already a category')
            continue
        protected = item.get("protected", False)
        if not isinstance(protected, bool):
            check.error(f"{path}.protected", f"{show(protected)} must be true or false")
            protected = True
        seed, seed_domains = _seed(check, item.get("seed"), f"{path}.seed", root, protected)
        sources = tuple(_source(check, p, s, root, source_ids)
                        for p, s in check.items(item, "sources", path, allow_empty=True))
        sources = tuple(s for s in sources if s is not None)
        if protected and any(s.format != "sha256" for s in sources):
            check.error(f"{path}.sources", "a protected category's lists are only accepted hashed "
                        "(format: sha256), so its domains are never stored in clear")
        if not sources and not seed_domains and "sources" in item:
            check.error(path, "blocks nothing: give it at least one source or a seed list")
        out[category_id] = Category(category_id, check.text(item, "name", path),
                                    check.text(item, "description", path), protected, seed,
                                    seed_domains, sources)
    return out


def _seed(check: _Checker, value: Any, path: str, root: Path,
          protected: bool) -> tuple[Path | None, frozenset[str]]:
    """The seed list's absolute path and its domains; every line must be a domain."""
    if value is None:
        return None, frozenset()
    if not isinstance(value, str) or not value:
        check.error(path, f"{show(value)} must be a file path")
        return None, frozenset()
    seed = Path(value) if Path(value).is_absolute() else root / value
    try:
        lines = seed.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        check.error(path, f'"{value}" does not exist')
        return None, frozenset()
    except (OSError, UnicodeDecodeError) as exc:
        check.error(path, f'"{value}" cannot be read: {getattr(exc, "strerror", None) or exc}')
        return None, frozenset()
    domains: set[str] = set()
    shown = _shown(seed)
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name = normalise_domain(text)
        problem = f"{show(text)} is not a domain name" if name is None else essential_conflict(name)
        if problem:
            check.problems.append(f"{shown}:{number}: {problem}")
            check.ok = False
        else:
            domains.add(name)
    if protected and domains:
        check.error(path, f'"{value}" lists {len(domains)} domains: a protected category\'s seed must be '
                    "empty — its list is only accepted hashed (format: sha256), never in clear")
        domains.clear()
    return seed, frozenset(domains)


def _source(check: _Checker, path: str, item: Any, root: Path, source_ids: dict[str, str]) -> Source | None:
    item = check.mapping(item, path, {"id", "format", "licence"},
                         {"url", "urls", "parts", "path", "approx_domains", "homepage"})
    if item is None:
        return None
    source_id = item.get("id")
    if not isinstance(source_id, str) or not _SOURCE_ID(source_id):
        check.error(f"{path}.id", f"{show(source_id)} must be a short id of a-z, 0-9, '-', '_' and '.'")
        return None
    where = f"{check.shown}: {path}"
    if source_id in source_ids:
        check.error(f"{path}.id", f'"{source_id}" is already the id of {source_ids[source_id]}')
    source_ids[source_id] = where
    url, file_path = item.get("url"), item.get("path")
    given = [key for key in ("url", "urls", "parts", "path") if item.get(key) is not None]
    if len(given) != 1:
        check.error(path, "needs exactly one of url (to download), urls (a list split in parts, "
                    "downloaded and read as one), parts (the same, numbered from {n} = 0 for as long as "
                    "they are served) or path (a local file)")
    numbered = item.get("parts")
    if numbered is not None and (not isinstance(numbered, str) or numbered.count("{n}") != 1
                                 or not re.fullmatch(r"https://[^\s/]+/\S*", numbered)):
        check.error(f"{path}.parts", f"{show(numbered)} must be an https:// address with {{n}} where the part's "
                    "number goes")
        numbered = None
    urls: list[str] = []
    parts = [(f"{path}.url", url)] if url is not None else []
    if item.get("urls") is not None:
        parts = check.items(item, "urls", path)
    for part_path, part in parts:
        if not isinstance(part, str) or not re.fullmatch(r"https://[^\s/]+/\S*", part):
            check.error(part_path, f"{show(part)} must be an https:// address")
        else:
            urls.append(part)
    url = urls[0] if urls else (numbered.replace("{n}", "0") if numbered else None)
    local = None
    if file_path is not None:
        if isinstance(file_path, str) and file_path:
            local = Path(file_path) if Path(file_path).is_absolute() else root / file_path
        else:
            check.error(f"{path}.path", f"{show(file_path)} must be a file path")
    fmt = item.get("format")
    if fmt not in FORMATS:
        check.error(f"{path}.format", f"{show(fmt)} must be one of {', '.join(FORMATS)}")
    licence = item.get("licence")
    if not isinstance(licence, str) or not licence.strip():
        check.error(f"{path}.licence", f"{show(licence)} must name the list's licence")
    approx = item.get("approx_domains")
    if approx is not None and (isinstance(approx, bool) or not isinstance(approx, int) or approx < 0):
        check.error(f"{path}.approx_domains", f"{show(approx)} must be a whole number of domains")
        approx = None
    homepage = item.get("homepage")
    if homepage is not None and (not isinstance(homepage, str) or not homepage.startswith(("https://", "http://"))):
        check.error(f"{path}.homepage", f"{show(homepage)} must be a web address")
        homepage = None
    return Source(source_id, str(fmt), str(licence).strip(), url, local, approx, homepage, tuple(urls),
                  numbered)


# ---------------------------------------------------------------- services.yaml


def _services(check: _Checker, categories: dict[str, Category]) -> dict[str, Service]:
    data = check.read()
    if not check.ok:
        return {}
    check.mapping(data, "", {"services"})
    out: dict[str, Service] = {}
    owner: dict[str, str] = {}
    for path, item in check.items(data, "services", ""):
        item = check.mapping(item, path, {"id", "name", "category", "icon", "domains"}, {"note"})
        if item is None:
            continue
        service_id = item.get("id")
        if not isinstance(service_id, str) or not _SERVICE_ID(service_id):
            check.error(f"{path}.id", f"{show(service_id)} must be a short id of a-z, 0-9 and _")
            continue
        if service_id in out:
            check.error(f"{path}.id", f'"{service_id}" is already a service')
            continue
        if service_id in categories:
            check.error(f"{path}.id", f'"{service_id}" is a category id: a rule naming it would be ambiguous')
        category = item.get("category")
        if not categories:
            pass  # categories.yaml did not load: its own errors say why
        elif category not in categories:
            known = ", ".join(categories) or "none loaded"
            check.error(f"{path}.category", f"{show(category)} is not a category ({known})")
        elif categories[category].protected:
            check.error(f"{path}.category", f'"{category}" is protected: no service belongs there')
        icon = item.get("icon")
        if not isinstance(icon, str) or not 1 <= len(icon.strip()) <= 3:
            check.error(f"{path}.icon", f"{show(icon)} must be one to three characters (e.g. YT)")
            icon = "?"
        note = item.get("note")
        if note is not None:
            note = check.text(item, "note", path) or None
        domains: list[str] = []
        for domain_path, value in check.items(item, "domains", path):
            name = check.domain(domain_path, value)
            if name is None:
                continue
            if name in owner:
                check.error(domain_path, f'"{name}" is already listed by service "{owner[name]}"')
                continue
            owner[name] = service_id
            domains.append(name)
        out[service_id] = Service(service_id, check.text(item, "name", path), str(category),
                                  icon.strip(), tuple(domains), note)
    return out


# ---------------------------------------------------------------- safesearch.yaml


def _safesearch(check: _Checker, root: Path, source_ids: dict[str, str]) -> SafeSearch | None:
    data = check.read()
    if not check.ok:
        return None
    check.mapping(data, "", {"engines", "youtube"}, {"unsupported_engines"})
    seen: dict[str, str] = {}          # host → who rewrites it

    def hosts_of(item: dict, path: str, who: str) -> frozenset[str]:
        out = set()
        for host_path, value in check.items(item, "hosts", path):
            name = check.domain(host_path, value, "host", blocked=False)
            if name is None:
                continue
            if name in seen:
                check.error(host_path, f'"{name}" is already rewritten for {seen[name]}')
                continue
            seen[name] = who
            out.add(name)
        return frozenset(out)

    engines: list[SafeSearchEngine] = []
    engine_ids: set[str] = set()
    for path, item in check.items(data, "engines", ""):
        item = check.mapping(item, path, {"id", "name", "target", "hosts"}, {"documentation"})
        if item is None:
            continue
        engine_id = item.get("id")
        if not isinstance(engine_id, str) or not _CATEGORY_ID(engine_id) or engine_id in engine_ids:
            check.error(f"{path}.id", f"{show(engine_id)} must be a new short id of a-z, 0-9 and _")
            continue
        engine_ids.add(engine_id)
        target = check.domain(f"{path}.target", item.get("target"), "host", blocked=False)
        hosts = hosts_of(item, path, f"engine {engine_id}")
        if target in hosts:
            check.error(f"{path}.target", f'"{target}" is also one of the hosts: it would rewrite to itself')
        documentation = item.get("documentation")
        engines.append(SafeSearchEngine(engine_id, check.text(item, "name", path), target or "",
                                        hosts, documentation if isinstance(documentation, str) else None))

    youtube_data = check.mapping(data.get("youtube"), "youtube", {"hosts", "strict", "moderate"}, {"documentation"})
    youtube = YouTubeRestrict(frozenset(), "", "")
    if youtube_data is not None:
        youtube = YouTubeRestrict(hosts_of(youtube_data, "youtube", "YouTube"),
                                  check.domain("youtube.strict", youtube_data.get("strict"), "host", False) or "",
                                  check.domain("youtube.moderate", youtube_data.get("moderate"), "host", False) or "")

    unsupported: set[str] = set()
    unsupported_sources: list[Source] = []
    if "unsupported_engines" in data:
        block = check.mapping(data["unsupported_engines"], "unsupported_engines", {"domains"}, {"sources"})
        if block is not None:
            for path, value in check.items(block, "domains", "unsupported_engines"):
                name = check.domain(path, value)
                if name in seen:
                    check.error(path, f'"{name}" is rewritten for {seen[name]}: it cannot also be blocked')
                elif name:
                    unsupported.add(name)
            if "sources" in block:
                for path, item in check.items(block, "sources", "unsupported_engines", allow_empty=True):
                    source = _source(check, path, item, root, source_ids)
                    if source is not None:
                        unsupported_sources.append(source)
    return SafeSearch(tuple(engines), youtube, frozenset(unsupported), tuple(unsupported_sources))
