"""The YAML config → validated, frozen objects.

Every error names the YAML path at fault (`dns.listen[0]`) and, where known, the line, so a
parent or an engineer can fix the file from the message alone. The rest of the code never sees
raw dicts: it gets a `Config`. Reading YAML with its lines and the `Checker` that collects the
problems are shared with the catalogs, in `checking.py`.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filterd.rules.checking import (Checker, ConfigError, Listen, YamlSyntaxError, by_line, parse_listen,  # noqa: F401 (re-exported)
                                    parse_yaml, show)
from filterd.rules.dhcp_settings import parse_dhcp_config
from filterd.rules.notify_settings import parse_notify_config
from filterd.rules.log_settings import parse_log_config
from filterd.rules.model import parse_minutes, parse_rules
from filterd.rules.catalog import CatalogError, load_catalog


# ---------------------------------------------------------------- typed config


@dataclass(frozen=True)
class UpstreamSpec:
    """One upstream resolver: scheme udp | tcp | tls | https."""

    url: str
    scheme: str
    host: str
    port: int
    path: str = "/dns-query"


@dataclass(frozen=True)
class CacheConfig:
    size: int = 10_000
    min_ttl: int = 0
    max_ttl: int = 86_400
    negative_max_ttl: int = 3_600
    stale_s: int = 86_400


@dataclass(frozen=True)
class TcpConfig:
    max_connections: int = 256
    max_per_client: int = 16
    idle_timeout_s: float = 10.0


@dataclass(frozen=True)
class DnsConfig:
    listen: tuple[Listen, ...] = (Listen("127.0.0.1", 5353),)
    upstreams: tuple[UpstreamSpec, ...] = ()
    workers: int = 1
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    rate_limit: int = 200
    upstream_timeout_s: float = 2.0
    max_pending: int = 1024
    max_pending_per_client: int = 100
    tls_ca_file: str | None = None
    bootstrap: tuple[str, ...] = ()
    cache: CacheConfig = field(default_factory=CacheConfig)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    block_mode: str = "blockpage"
    encrypted: "EncryptedConfig" = field(default_factory=lambda: EncryptedConfig())


@dataclass(frozen=True)
class EncryptedConfig:
    """DNS over TLS and HTTPS from the filter (both off until a listen address is given).

    The certificate is the parent's (`tls_cert`/`tls_key`, e.g. from an ACME client) or, by
    default, one the house CA signs for `names` and, under each, any one label (the client ID).
    """

    tls_listen: tuple[Listen, ...] = ()
    https_listen: tuple[Listen, ...] = ()
    names: tuple[str, ...] = ()       # empty: web.hostnames (and web.address/address6)
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def on(self) -> bool:
        return bool(self.tls_listen or self.https_listen)


@dataclass(frozen=True)
class Config:
    path: Path | None
    timezone: str
    data_dir: Path
    dns: DnsConfig
    rules: Any = None            # rules.Rules: web, lists, profiles, devices
    log: Any = None              # log_settings.LogConfig
    notify: Any = None           # notify_settings.NotifyConfig: channels and which events go where
    dhcp: Any = None             # dhcp_settings.DhcpConfig: dnsmasq as the house's DHCP server (off by default)
    catalog: Any = field(default=None, repr=False, compare=False)   # catalog.Catalog
    lists_mirror: str | None = None   # every list https://HOST/PATH is fetched from MIRROR/HOST/PATH
    limits_gap_s: int = 300           # daily limits: queries less apart than this are one session


DEFAULT_ALLOW_NETWORKS = (
    "127.0.0.0/8", "::1/128",            # loopback
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "169.254.0.0/16", "fe80::/10",       # link-local
    "fc00::/7",                          # ULA
    "100.64.0.0/10",                     # carrier-grade NAT (some ISP routers hand these out)
)

UPSTREAM_DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}
BLOCK_MODES = ("blockpage", "null", "nxdomain")


# ---------------------------------------------------------------- loading with line numbers


def read_yaml(text: str, source: str = "<config>") -> tuple[dict, dict[str, int]]:
    """Parse YAML text into plain data plus a map of path → line number."""
    try:
        parsed = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    if parsed is None:
        return {}, {}
    data, lines = parsed
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of sections (dns:, profiles:, …)"])
    return data, lines


# ---------------------------------------------------------------- addresses


def parse_upstream(text: str) -> UpstreamSpec:
    """udp://host[:port], tcp://…, tls://host[:port] (DoT), https://host[:port]/path (DoH)."""
    if "://" not in text:
        try:
            if ipaddress.ip_address(text).version == 6:
                text = f"[{text}]"
        except ValueError:
            pass
        text = "udp://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in UPSTREAM_DEFAULT_PORTS:
        raise ValueError("must start with udp://, tcp://, tls:// or https://")
    try:
        port = parts.port or UPSTREAM_DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("has an invalid port") from None
    host = parts.hostname
    if not host:
        raise ValueError("has no host")
    if scheme in ("udp", "tcp"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("plain DNS upstreams need an IP address, not a host name") from None
    path = (parts.path or "/dns-query") if scheme == "https" else "/dns-query"
    return UpstreamSpec(text, scheme, host, port, path)


# ---------------------------------------------------------------- sections


def _parse_dns(data: Any, check: Checker) -> DnsConfig:
    known = {"listen", "upstreams", "workers", "allow_networks", "rate_limit", "upstream_timeout",
             "max_pending", "max_pending_per_client", "tls_ca_file", "bootstrap", "cache", "tcp",
             "block_mode", "tls_listen", "https_listen", "tls_names", "tls_cert", "tls_key"}
    data = check.mapping(data, "dns", known)
    listen = []
    for path, text in check.string_list(data, "listen", "dns", ["127.0.0.1:5353"]):
        try:
            listen.append(parse_listen(text))
        except ValueError as exc:
            check.error(path, f'"{text}" {exc}')
    if "listen" in data and not listen and not check.problems:
        check.error("dns.listen", "needs at least one address")
    upstreams = []
    for path, text in check.string_list(data, "upstreams", "dns", []):
        try:
            upstreams.append(parse_upstream(text))
        except ValueError as exc:
            check.error(path, f'"{text}" {exc}')
    networks = []
    problems_before = len(check.problems)
    for path, text in check.string_list(data, "allow_networks", "dns", list(DEFAULT_ALLOW_NETWORKS)):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            check.error(path, f'"{text}" is not a network (write e.g. 192.168.0.0/16)')
    if "allow_networks" in data and not networks and len(check.problems) == problems_before:
        check.error("dns.allow_networks", "is empty: every client would be refused "
                    "(leave the key out for the private ranges)")
    bootstrap = []
    for path, text in check.string_list(data, "bootstrap", "dns", []):
        try:
            bootstrap.append(str(ipaddress.ip_address(text)))
        except ValueError:
            check.error(path, f'"{text}" is not an IP address')
    ca_file = data.get("tls_ca_file")
    if ca_file is not None and (not isinstance(ca_file, str) or not os.path.isfile(ca_file)):
        check.error("dns.tls_ca_file", f"{show(ca_file)} is not a readable file")
        ca_file = None
    block_mode = data.get("block_mode", "blockpage")
    if block_mode not in BLOCK_MODES:
        check.error("dns.block_mode", f"{show(block_mode)} must be one of {', '.join(BLOCK_MODES)}")
        block_mode = "blockpage"

    cache_data = check.mapping(data.get("cache"), "dns.cache",
                               {"size", "min_ttl", "max_ttl", "negative_max_ttl", "stale"})
    cache = CacheConfig(
        size=check.integer(cache_data, "size", "dns.cache", 10_000, 0, 10_000_000),
        min_ttl=check.integer(cache_data, "min_ttl", "dns.cache", 0, 0, 86_400),
        max_ttl=check.integer(cache_data, "max_ttl", "dns.cache", 86_400, 0, 7 * 86_400),
        negative_max_ttl=check.integer(cache_data, "negative_max_ttl", "dns.cache", 3_600, 0, 86_400),
        stale_s=check.integer(cache_data, "stale", "dns.cache", 86_400, 0, 7 * 86_400),
    )
    if cache.min_ttl > cache.max_ttl:
        check.error("dns.cache.min_ttl", f"{cache.min_ttl} is above max_ttl ({cache.max_ttl})")
    tcp_data = check.mapping(data.get("tcp"), "dns.tcp", {"max_connections", "max_per_client", "idle_timeout"})
    tcp = TcpConfig(
        max_connections=check.integer(tcp_data, "max_connections", "dns.tcp", 256, 1, 100_000),
        max_per_client=check.integer(tcp_data, "max_per_client", "dns.tcp", 16, 1, 100_000),
        idle_timeout_s=check.number(tcp_data, "idle_timeout", "dns.tcp", 10.0, 0.1, 3600),
    )
    return DnsConfig(
        listen=tuple(listen) or (Listen("127.0.0.1", 5353),),
        upstreams=tuple(upstreams),
        workers=check.integer(data, "workers", "dns", os.cpu_count() or 1, 1, 64),
        allow_networks=tuple(networks),
        rate_limit=check.integer(data, "rate_limit", "dns", 200, 0, 1_000_000),
        upstream_timeout_s=check.number(data, "upstream_timeout", "dns", 2.0, 0.05, 30),
        max_pending=check.integer(data, "max_pending", "dns", 1024, 1, 1_000_000),
        max_pending_per_client=check.integer(data, "max_pending_per_client", "dns", 100, 1, 1_000_000),
        tls_ca_file=ca_file,
        bootstrap=tuple(bootstrap),
        cache=cache,
        tcp=tcp,
        block_mode=block_mode,
        encrypted=_parse_encrypted(data, check, listen),
    )


def _parse_encrypted(data: dict, check: Checker, plain: list[Listen]) -> EncryptedConfig:
    """dns.tls_listen (DoT, port 853 unless given), dns.https_listen (DoH, 443), the names the
    certificate covers, or the parent's certificate files. Whether the files hold a matching
    key and certificate is checked where TLS is at hand (`dns.certificates.problems`)."""
    listens: dict[str, list[Listen]] = {}
    for key, port in (("tls_listen", 853), ("https_listen", 443)):
        listens[key] = []
        for path, text in check.string_list(data, key, "dns", []):
            try:
                listen = parse_listen(text, port)
            except ValueError as exc:
                check.error(path, f'"{text}" {exc}')
                continue
            if listen in plain or any(listen in other for other in listens.values()):
                check.error(path, f'"{text}" is already used by another dns listener')
                continue
            listens[key].append(listen)
    names = []
    for path, text in check.string_list(data, "tls_names", "dns", []):
        name = text.strip().lower().rstrip(".")
        labels = name.split(".")
        if len(labels) < 2 or not all(_LABEL(label) for label in labels):
            check.error(path, f'"{text}" is not a host name (write e.g. filter.home)')
            continue
        names.append(name)
    files = {}
    for key in ("tls_cert", "tls_key"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            check.error(f"dns.{key}", f"{show(value)} must be a file path")
        elif not os.path.isfile(value) or not os.access(value, os.R_OK):
            check.error(f"dns.{key}", f'"{value}" is not a readable file')
        files[key] = value
    if ("tls_cert" in data) != ("tls_key" in data):
        missing = "tls_key" if "tls_cert" in data else "tls_cert"
        check.error(f"dns.{missing}", "is needed too: give both tls_cert and tls_key, or neither "
                    "(the house CA then signs the certificate)")
    return EncryptedConfig(tuple(listens["tls_listen"]), tuple(listens["https_listen"]), tuple(names),
                           files.get("tls_cert"), files.get("tls_key"))


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?").fullmatch


TOP_LEVEL_KEYS = {"timezone", "data_dir", "catalog_dir", "dns", "web", "lists", "profiles", "devices",
                  "default_profile", "log", "notify", "dhcp", "lists_mirror", "limits_gap"}


def parse_config(data: dict, lines: dict[str, int], path: Path | None = None) -> Config:
    """Validate plain data; raise ConfigError listing every problem found."""
    check = Checker(lines)
    check.mapping(data, "", TOP_LEVEL_KEYS)
    timezone = data.get("timezone", "UTC")
    if not isinstance(timezone, str) or not _valid_timezone(timezone):
        check.error("timezone", f"{show(timezone)} is not a time zone (write e.g. Europe/London)")
        timezone = "UTC"
    data_dir_value = data.get("data_dir", "./var")
    if not isinstance(data_dir_value, str) or not data_dir_value:
        check.error("data_dir", f"{show(data_dir_value)} must be a folder path")
        data_dir_value = "./var"
    data_dir = Path(data_dir_value)
    if not data_dir.is_absolute() and path is not None:
        # Relative to the working directory, as a person running `make run` expects.
        data_dir = Path.cwd() / data_dir
    dns = _parse_dns(data.get("dns"), check)
    if not dns.upstreams:
        check.error("dns.upstreams", "needs at least one upstream resolver (e.g. udp://9.9.9.9)")
    catalog = _load_catalog(data.get("catalog_dir"), check)
    rules = parse_rules(data, check, catalog.categories if catalog else {},
                        catalog.services if catalog else {})
    log_config = parse_log_config(data.get("log"), check)
    notify = parse_notify_config(data.get("notify"), check, catalog.categories if catalog else None, rules.profiles)
    dhcp = parse_dhcp_config(data.get("dhcp"), check, data_dir)
    lists_mirror = data.get("lists_mirror")
    if lists_mirror is not None and not _mirror_url(lists_mirror):
        check.error("lists_mirror", f"{show(lists_mirror)} must be an http:// or https:// address "
                    "(e.g. http://192.168.1.5:8000/lists)")
        lists_mirror = None
    gap = parse_minutes(data.get("limits_gap", "5m"))
    if gap is None or not 1 <= gap <= 60:
        check.error("limits_gap", f"{show(data.get('limits_gap'))} must be a duration from 1m to 60m (e.g. 5m)")
        gap = 5
    if check.problems:
        raise ConfigError(by_line(check.problems))
    return Config(path=path, timezone=timezone, data_dir=data_dir, dns=dns, rules=rules,
                  catalog=catalog, log=log_config, notify=notify, dhcp=dhcp,
                  lists_mirror=lists_mirror.rstrip("/") if lists_mirror else None, limits_gap_s=gap * 60)


def _mirror_url(value: Any) -> bool:
    """An http(s) base address: no query, fragment, credentials or spaces."""
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query
            and not parts.fragment and parts.username is None)


def _load_catalog(folder: Any, check: Checker):
    """The categories, services and SafeSearch catalogs (config/*.yaml shipped with filterd)."""
    if folder is not None and not isinstance(folder, str):
        check.error("catalog_dir", f"{show(folder)} must be a folder path")
        folder = None
    try:
        return load_catalog(Path(folder)) if folder else load_catalog()
    except CatalogError as exc:
        check.error("catalog_dir", f"the catalog does not load: {exc}")
        return None


def _valid_timezone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        ZoneInfo(name)
        return True
    except (ZoneInfoNotFoundError, ValueError):
        return False


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a config file; raise ConfigError with every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    data, lines = read_yaml(text, str(path))
    return parse_config(data, lines, path)

