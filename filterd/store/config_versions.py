"""The config's history: the last versions the web UI (or a restore) wrote, who wrote them and
what changed, so a parent can compare two and go back to one.

Versions live in the state DB (`config_versions`), newest last, at most KEEP of them. The first
change recorded also keeps the file as it was before it ("the file before the web UI's first
change"), so the oldest rules can always be restored. `describe_changes` says what changed in
YAML paths (`profiles.kids.allow: + khanacademy.org`), for the audit trail and the history page.
"""
from __future__ import annotations

import difflib
import time
from dataclasses import dataclass

from filterd.rules.checking import YamlSyntaxError, parse_yaml
from filterd.store.state import transaction

KEEP = 50
SECRET_KEYS = {"secret", "token", "password"}     # notification secrets: say "changed", never the value


@dataclass(frozen=True)
class ConfigVersion:
    id: int
    ts: float
    actor: str
    what: str
    changes: str
    text: str


def record(db, old_text: str, new_text: str, actor: str, what: str, now: float | None = None,
           changes: list[str] | None = None) -> int:
    """Keep `new_text` as the newest version (and `old_text` first, when the history is empty).
    `changes`: what `describe_changes` said of the two texts, when the caller has it already."""
    now = time.time() if now is None else now
    if changes is None:
        changes = describe_changes(old_text, new_text)
    with transaction(db):
        if db.execute("SELECT count(*) FROM config_versions").fetchone()[0] == 0:
            db.execute("INSERT INTO config_versions (ts, actor, what, changes, text) VALUES (?, ?, ?, '', ?)",
                       (now, "file", "the file before the first change made here", old_text))
        cursor = db.execute("INSERT INTO config_versions (ts, actor, what, changes, text) VALUES (?, ?, ?, ?, ?)",
                            (now, actor, what, "\n".join(changes), new_text))
        db.execute("DELETE FROM config_versions WHERE id NOT IN "
                   "(SELECT id FROM config_versions ORDER BY id DESC LIMIT ?)", (KEEP,))
    return cursor.lastrowid


def versions(db) -> list[ConfigVersion]:
    """Newest first."""
    return [ConfigVersion(*row) for row in db.execute(
        "SELECT id, ts, actor, what, changes, text FROM config_versions ORDER BY id DESC")]


def get(db, version_id: int) -> ConfigVersion | None:
    row = db.execute("SELECT id, ts, actor, what, changes, text FROM config_versions WHERE id = ?",
                     (version_id,)).fetchone()
    return ConfigVersion(*row) if row else None


def text_diff(old_text: str, new_text: str, old_name: str, new_name: str) -> list[str]:
    """The lines that differ, as `diff -u` shows them (for the page that compares two versions)."""
    return list(difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), old_name, new_name,
                                     lineterm="", n=2))


# ---------------------------------------------------------------- what changed, in YAML paths


def _load(text: str):
    try:
        parsed = parse_yaml(text)
    except YamlSyntaxError:
        return None
    return parsed[0] if parsed else {}


def _show(value) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        import json
        return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    return str(value)


def _named(items: list) -> dict | None:
    """A list of mappings that each have a unique `name` (schedules, devices, limits) by name."""
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    names = [i["name"] for i in items]
    return dict(zip(names, items)) if len(set(names)) == len(names) else None


def describe_changes(old_text: str, new_text: str) -> list[str]:
    """One line per change: `path: + added`, `path: - removed`, `path: old → new`."""
    old, new = _load(old_text), _load(new_text)
    if old is None or new is None:
        return ["the file was rewritten (one side is not valid YAML)"]
    out: list[str] = []
    _compare(old, new, "", out)
    return out


def _compare(old, new, path: str, out: list[str]) -> None:
    key = path.rsplit(".", 1)[-1]
    if key in SECRET_KEYS and old != new:
        out.append(f"{path}: changed (secret not shown)")
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for name in list(old) + [k for k in new if k not in old]:
            child = f"{path}.{name}" if path else str(name)
            if name not in new:
                if isinstance(old[name], list) and all(not isinstance(i, (dict, list)) for i in old[name]):
                    _compare(old[name], [], child, out)                    # each item removed
                else:
                    out.append(f"{child}: removed")
            elif name not in old:
                if isinstance(new[name], (dict, list)):
                    _compare(type(new[name])(), new[name], child, out)     # each item added
                else:
                    out.append(f"{child}: + {_show(_redacted(new[name], name))}")
            else:
                _compare(old[name], new[name], child, out)
        return
    if isinstance(old, list) and isinstance(new, list):
        old_named, new_named = _named(old), _named(new)
        if (old_named is not None or not old) and new_named is not None:
            old_named = old_named or {}
            _compare(old_named, new_named, path, out)
            return
        if all(not isinstance(i, (dict, list)) for i in old + new):
            out.extend(f"{path}: + {_show(i)}" for i in new if i not in old)
            out.extend(f"{path}: - {_show(i)}" for i in old if i not in new)
            return
    if old != new:
        out.append(f"{path}: {_show(old)} → {_show(new)}")


def _redacted(value, key):
    if key in SECRET_KEYS:
        return "(secret)"
    if isinstance(value, dict):
        return {k: _redacted(v, k) for k, v in value.items()}
    return value
