"""The actions parents take, shared by the pages and the JSON API so the two cannot drift.

Each takes the current config and a DB connection, validates its input, changes state (the
state DB for overrides, the config file through filterd.store.configfile for rules) and records the
change in the audit trail.
"""
from __future__ import annotations

import re
import time

from flask import current_app, g

from filterd.family import limits
from filterd.family.limits import LimitUsage
from filterd.lists.domains import LIST_ID
from filterd.store import config_versions, configfile, overrides
from filterd.store.state import audit


class ActionError(ValueError):
    """A parent's request that cannot be done; `field` names the form field at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _actor() -> str:
    return g.get("actor", "web UI")


def _minutes(value, field: str = "minutes", allow_none: bool = True) -> float | None:
    if value in (None, ""):
        if allow_none:
            return None
        raise ActionError("Say for how many minutes.", field)
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise ActionError("Minutes must be a number.", field) from None
    if not 1 <= minutes <= 366 * 1440:
        raise ActionError("Minutes must be between 1 and a year.", field)
    return minutes * 60


def pause(config, db, name: str, minutes=None) -> None:
    try:
        overrides.pause(db, config, name, _minutes(minutes), time.time(), _actor())
    except overrides.OverrideError as exc:
        raise ActionError(str(exc), "name") from None


def resume(config, db, name: str) -> int:
    try:
        return overrides.resume(db, config, name, time.time(), _actor())
    except overrides.OverrideError as exc:
        raise ActionError(str(exc), "name") from None


class NoChange(ActionError):
    """Nothing was in force to undo, or the allow was there already: nothing written."""


def allow(config, db, name: str, what: str, minutes=None, keep_schedules: bool = False) -> None:
    try:
        overrides.allow(db, config, name, what or "", _minutes(minutes), time.time(), _actor(),
                        keep_schedules=keep_schedules)
    except overrides.NoChange as exc:
        raise NoChange(str(exc), "domain") from None
    except overrides.OverrideError as exc:
        raise ActionError(str(exc), "domain") from None


def allow_for(config, db, name: str, what: str, seconds: float | None, keep_schedules: bool = False) -> None:
    """A temporary (or until undone, `seconds` None) allow; `keep_schedules`: bedtime still applies."""
    try:
        overrides.allow(db, config, name, what, seconds, time.time(), _actor(), keep_schedules=keep_schedules)
    except overrides.NoChange as exc:
        raise NoChange(str(exc), "domain") from None
    except overrides.OverrideError as exc:
        raise ActionError(str(exc), "domain") from None


def undo(config, db, name: str, kind: str, what: str | None = None) -> int:
    """End now an allow (of `what`), bonus time or a pause of a device or profile."""
    try:
        return overrides.end(db, config, name, kind, time.time(), _actor(), what)
    except overrides.NoChange as exc:
        raise NoChange(str(exc), "undo") from None
    except overrides.OverrideError as exc:
        raise ActionError(str(exc), "undo") from None


def bonus(config, db, name: str, minutes=None) -> None:
    try:
        overrides.bonus(db, config, name, _minutes(minutes), time.time(), _actor())
    except overrides.OverrideError as exc:
        raise ActionError(str(exc), "minutes") from None


def extend_limit(config, db, name: str, limit: str, minutes) -> LimitUsage:
    """Add minutes to a device's daily limit, for today."""
    seconds = _minutes(minutes, allow_none=False)
    try:
        return limits.extend(db, config, name, limit, int(round(seconds / 60)), time.time(), _actor())
    except limits.LimitError as exc:
        raise ActionError(str(exc), "minutes" if "minutes" in str(exc) else "limit") from None


def limit_label(config, name: str) -> str:
    """A limit's name as a person reads it: the service's own name ("YouTube") where it is one."""
    service = config.catalog.services.get(name) if config.catalog else None
    return service.name if service else name.replace("_", " ").replace("-", " ").capitalize()


def limits_of(config, db, name: str) -> list[dict]:
    """A device's limits today, with its last 7 days (for the device page and the API)."""
    rows = limits.usage(db, config, name)
    history = limits.daily_history(db, config, name, 7)
    return [{**row.as_dict(), "extra_minutes": row.extra_minutes, "spent": row.spent,
             "label": limit_label(config, row.name), "week": history.get(row.name, [])} for row in rows]


def edit_config(db, version: str | None, change, what: str, new_text: str | None = None):
    """Apply a rules change to the config file (validated, atomic), keep the version in the
    history and audit it with what changed. `new_text`: replace the whole file (a restore)."""
    app_state = current_app.extensions["filterd"]
    changes: list[str] = []

    def written(old_text: str, text: str) -> None:
        changes.extend(config_versions.describe_changes(old_text, text))
        config_versions.record(db, old_text, text, _actor(), what, changes=changes)

    try:
        if new_text is not None:
            config, new_version = configfile.replace(app_state.config_path, version, new_text, written)
        else:
            config, new_version = configfile.edit(app_state.config_path, version, change, written)
    except configfile.VersionConflict as exc:
        raise ActionError(str(exc), "version") from None
    except configfile.ConfigError as exc:
        first = exc.problems[0] if exc.problems else str(exc)
        # "(line N)" would point into the text that was refused, not into the file: left out.
        raise ActionError(re.sub(r" \(line \d+\)$", "", first), first.split(":", 1)[0]) from None
    detail = what + (": " + "; ".join(changes) if changes else "")
    audit(db, _actor(), "config", detail if len(detail) <= 500 else detail[:499] + "…")
    return config, new_version


def set_device(db, version: str | None, name: str, profile: str, ip: str | None = None,
               mac: str | None = None, old_name: str | None = None, client_id: str | None = None):
    """Name a device and give it a profile (adding it when new; a new one seen only by its
    encrypted-DNS client ID is added with that ID)."""
    def change(document):
        devices = document.setdefault("devices", [])
        entry = None
        for item in devices:
            if str(item.get("name", "")).lower() == (old_name or name).lower():
                entry = item
        if entry is not None and not old_name:
            # Naming a new device after one that exists would silently take over that device.
            raise ActionError(f"A device named {name} exists already: choose another name.", "name")
        if old_name and entry is None:
            raise ActionError(f"There is no device named {old_name} (renamed meanwhile?).", "name")
        if entry is None:
            entry = {"name": name}
            if client_id:
                entry["client_id"] = client_id
            elif mac:
                entry["mac"] = mac
            elif ip:
                entry["ip"] = ip
            else:
                raise ActionError("A new device needs its IP or MAC address.", "ip")
            devices.append(entry)
        entry["name"] = name
        entry["profile"] = profile
    return edit_config(db, version, change, f"device {name} → profile {profile}")


PARENTS_PROFILE = "adults"      # made with the adult preset when the config has no such profile


def parents_profile(rules) -> str | None:
    """The profile a parent's own device gets: `adults` if there is one, else the first profile
    on the adult preset (None: neither, and marking a device makes `adults`)."""
    if PARENTS_PROFILE in rules.profiles:
        return PARENTS_PROFILE
    return next((name for name, profile in rules.profiles.items() if profile.preset == "adult"), None)


def open_profiles(rules) -> set[str]:
    """Profiles that filter (almost) nothing: no category but malware, no service, no list of
    blocked names, no schedule. A device nobody named should not land in one of these."""
    return {name for name, p in rules.profiles.items()
            if set(p.block_categories) <= {"malware"} and not p.block_services and not p.block
            and not p.schedules and not p.limits}


def set_default_profile(db, version: str | None, profile: str):
    def change(document):
        if profile not in (document.get("profiles") or {}):
            raise ActionError(f"There is no profile named {profile}.", "profile")
        document["default_profile"] = profile
    return edit_config(db, version, change, f"devices nobody has named → profile {profile}")


def mark_parents_device(config, db, version: str | None, name: str, ip: str | None, mac: str | None):
    """One tap on an unnamed device: name it and give it the parents' (unfiltered) profile."""
    profile = parents_profile(config.rules) or PARENTS_PROFILE
    name = device_name_from(name)
    if not name:
        taken = {device.name.lower() for device in config.rules.devices}
        name = next(f"parent-device-{i}" for i in range(1, len(taken) + 2) if f"parent-device-{i}" not in taken)

    def change(document):
        profiles = document.get("profiles")
        if profiles is None:
            profiles = document["profiles"] = {}
        profiles.setdefault(profile, {"preset": "adult"})
        devices = document.get("devices")
        if devices is None:
            devices = document["devices"] = []
        if any(str(item.get("name", "")).lower() == name.lower() for item in devices):
            raise ActionError(f"A device named {name} exists already: name this one yourself.", "name")
        entry = {"name": name}
        if mac:
            entry["mac"] = mac
        elif ip:
            entry["ip"] = ip
        else:
            raise ActionError("A new device needs its IP or MAC address.", "ip")
        entry["profile"] = profile
        devices.append(entry)
    edit_config(db, version, change, f"device {name} → profile {profile} (a parent's device)")
    return name, profile


_DEVICE_NAME_CHARS = re.compile(r"[^A-Za-z0-9 _.'-]+")


def device_name_from(hostname: str) -> str:
    """A device name from the host name a device gave itself ("Emma's iPad", "Galaxy-Tab"),
    with the characters a device name may not hold replaced; "" when nothing is left."""
    return _DEVICE_NAME_CHARS.sub("-", hostname.strip()).strip("-_. '")[:64]


def set_client_id(db, version: str | None, name: str, client_id: str):
    """Give a device its client ID for encrypted DNS (beside its address, which still names it
    over plain DNS). The config's own check refuses an ID that is no label or is taken."""
    client_id = client_id.strip().lower()
    if not client_id:
        raise ActionError("Type a client ID: letters, digits and '-' (e.g. emma-phone).", "client_id")

    def change(document):
        for item in document.get("devices") or []:
            if str(item.get("name", "")).lower() == name.lower():
                item["client_id"] = client_id
                return
        raise ActionError(f"There is no device named {name} (renamed meanwhile?).", "name")
    return edit_config(db, version, change, f"device {name}: client ID {client_id}")


def _profile_entry(document, profile: str):
    """A profile's mapping in the YAML document (made when the file has `name:` with nothing)."""
    profiles = document.get("profiles") or {}
    if profile not in profiles:
        raise ActionError(f"There is no profile named {profile}.", "profile")
    if profiles[profile] is None:
        profiles[profile] = {}
    return profiles[profile]


def set_profile_list(db, version: str | None, profile: str, key: str, values: list[str]):
    """Replace one list setting of a profile (block_categories, block_services, allow, block)."""
    if key not in ("block_categories", "block_services", "allow", "block"):
        raise ActionError(f"{key} cannot be changed here", key)

    def change(document):
        _profile_entry(document, profile)[key] = list(values)
    return edit_config(db, version, change, f"profile {profile}: {key} = {', '.join(values) or 'none'}")


def add_to_profile(db, profile: str, key: str, *domains: str):
    """One-tap allow/block of a site from the log or an approval: appended to the profile's list
    (with the companions the site needs)."""
    def change(document):
        items = _profile_entry(document, profile).setdefault(key, [])
        for domain in domains:
            if domain not in items:
                items.append(domain)
    return edit_config(db, None, change, f"profile {profile}: {key} += {', '.join(domains)}")


def remove_from_profile(db, profile: str, key: str, *domains: str) -> list[str]:
    """Undo of an "always": take entries off a profile's list; returns those that were there."""
    removed: list[str] = []

    def change(document):
        items = _profile_entry(document, profile).get(key) or []
        for domain in domains:
            if domain in items:
                items.remove(domain)
                removed.append(domain)
    current = getattr(current_app.extensions["filterd"].config().rules.profiles[profile], key)
    if not any(domain in current for domain in domains):
        raise NoChange(f"none of {', '.join(domains)} is on the {profile} profile's {key} list: nothing changed", key)
    edit_config(db, None, change, f"profile {profile}: {key} -= {', '.join(domains)}")
    return removed


def config_version() -> str:
    """The config file's current version, which every edit form sends back."""
    return configfile.read(current_app.extensions["filterd"].config_path)[1]


def paused(db) -> dict[str, float | None]:
    """Device and profile names paused right now → when the pause ends (None: until resumed)."""
    return {o.subject: o.until for o in overrides.active(db, time.time()) if o.kind == "pause"}


def start_lists_update(config, db) -> None:
    """`filterd lists update` in the background (its output in data_dir/lists/update.log, its
    progress in data_dir/lists/update-status.json for the Lists page); the daemon picks the
    compiled result up by itself. Refused while an update is still running."""
    import subprocess
    import sys

    from filterd.lists import sources

    running = sources.read_update_status(config)
    if running is not None and running["running"]:
        raise ActionError("An update is running already: its progress is shown below.", "update")
    log_path = config.data_dir / "lists" / "update.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        subprocess.Popen([sys.executable, "-m", "filterd", "lists", "update", "--config",
                          str(current_app.extensions["filterd"].config_path)],
                         stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    audit(db, _actor(), "lists update", "started")


# ---------------------------------------------------------------- adding a list by URL

LIST_DOWNLOAD_DEADLINE_S = 60          # the parent waits for the page: a minute at most
LIST_DOWNLOAD_MAX_BYTES = 100 * 2**20  # bigger lists: add them to the config file by hand


def list_url_guard(config):
    """The SSRF guard for list URLs: this machine's addresses (web.address too) refused.
    Tests replace it through app.config["LIST_URL_GUARD"], which no config file or form reaches."""
    from filterd.lists.urlcheck import UrlGuard

    guard = current_app.config.get("LIST_URL_GUARD")
    if guard is not None:
        return guard
    import ipaddress

    web = config.rules.web
    own = []
    for address in (web.host, web.address, web.address6):
        try:
            if address and not ipaddress.ip_address(address).is_unspecified:   # "every address": covered anyway
                own.append(address)
        except ValueError:
            pass
    return UrlGuard(extra_own=own)


def add_list_by_url(config, db, version: str | None, list_id: str, url: str, category: str):
    """Check the fields, download the list once (http/https only, size and time caps, every
    address checked by the guard), and only then add it to `lists:` in the config."""
    from urllib.parse import urlsplit

    from filterd.lists import fetch, sources

    list_id, url, category = list_id.strip().lower(), url.strip(), category.strip()
    if not LIST_ID.fullmatch(list_id) or list_id.startswith("seed-"):
        raise ActionError("Use 1-64 lower-case letters, digits, '-', '_' or '.', e.g. hagezi-gambling "
                          "(not starting with seed-).", "id")
    if any(source.id == list_id for source in config.rules.lists):
        raise ActionError(f"A list named {list_id} exists already: choose another name.", "id")
    categories = config.catalog.categories
    if category not in categories or getattr(categories[category], "protected", False):
        raise ActionError("Choose one of the categories offered.", "category")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ActionError("This is not a web address.", "url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise ActionError("Write the list's address starting with https:// (or http://).", "url")
    if parts.username is not None or parts.password is not None:
        raise ActionError("Addresses with a user name or password are not supported.", "url")
    store = sources.lists_dir(config)
    result = fetch.fetch_list(list_id, url, store, timeout_s=15, deadline_s=LIST_DOWNLOAD_DEADLINE_S,
                              max_bytes=LIST_DOWNLOAD_MAX_BYTES, check_url=list_url_guard(config))
    if result.status == "failed":
        _forget_download(store, list_id)
        raise ActionError(f"Not added: {result.error}", "url")

    def change(document):
        entries = document.get("lists")
        if entries is None:
            entries = document["lists"] = []
        entries.append({"id": list_id, "url": url, "category": category})
    try:
        return edit_config(db, version, change, f"list {list_id} added ({category}) from {url}")
    except ActionError:
        # No config entry: the file must not linger for a later list of that name (unless a
        # list of that name was added meanwhile, in another tab: its file stays).
        if not any(source.id == list_id for source in current_app.extensions["filterd"].config().rules.lists):
            _forget_download(store, list_id)
        raise


def _forget_download(store, list_id: str) -> None:
    for name in (f"{list_id}.txt", f"{list_id}.meta.json"):
        try:
            (store / name).unlink()
        except OSError:
            pass
