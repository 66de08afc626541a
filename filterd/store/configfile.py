"""Changing the config file safely: validate, write atomically, keep the comments.

The web UI (and anything else that edits rules) goes through `edit`: it reads the file with
ruamel.yaml (round-trip, so the parent's comments and key order survive where the edit does
not touch them), applies the change, validates the result exactly as `filterd check` does,
and only then writes a temp file, fsyncs it and renames it over the config, keeping the
previous version as `.bak`. Every edit names the version it was based on: a file changed
meanwhile (by hand, in another tab) is refused, never silently overwritten.

ruamel.yaml keeps comments and key order but re-flows what it writes (a flow list the parent
wrapped over two lines comes back on one), so the sections an edit leaves alone — top-level
keys, and the keys one level below them — are copied from the original text byte for byte.
Edits are serialised (a lock in this process and an flock on the config's folder), so two
requests based on the same version cannot both be written.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
import re
import threading
from pathlib import Path
from typing import Callable

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from filterd.rules.config import Config, ConfigError, parse_config, read_yaml
from filterd import files


class VersionConflict(Exception):
    """The file changed since the page that sent this edit was rendered."""


def _yaml() -> YAML:
    yaml = YAML()  # round-trip mode
    # YAML 1.1, as filterd reads the file (PyYAML): "yes"/"off" are booleans and a string
    # such as "on" or "21:00" is written quoted, so what is written reads back the same.
    yaml.version = (1, 1)
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def version_of(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


def read(path: Path) -> tuple[str, str]:
    """The file's text and its version."""
    text = Path(path).read_text(encoding="utf-8")
    return text, version_of(text)


def validate_text(text: str, path: Path) -> Config:
    data, lines = read_yaml(text, str(path))
    return parse_config(data, lines, Path(path))


_EDIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _edit_lock(path: Path):
    """One edit at a time: in this process, and (flock on the folder) across processes."""
    with _EDIT_LOCK:
        try:
            fd = os.open(path.parent, os.O_RDONLY)
        except OSError:
            fd = None
        try:
            if fd is not None:
                try:
                    import fcntl
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except (OSError, ImportError):
                    pass
            yield
        finally:
            if fd is not None:
                os.close(fd)   # releases the flock


def _conflict() -> VersionConflict:
    return VersionConflict("the config was changed meanwhile (by hand or in another tab): "
                           "reload the page and make the change again")


def edit(path: Path, expected_version: str | None, change: Callable[[dict], None],
         written: Callable[[str, str], None] | None = None) -> tuple[Config, str]:
    """Apply `change` to the parsed document, validate, write atomically; return the new config
    and version. Raises VersionConflict, or ConfigError (nothing written) when invalid.
    `written(old_text, new_text)` is called once the new file is in place (the history keeps it)."""
    path = Path(path)
    with _edit_lock(path):
        text, version = read(path)
        if expected_version is not None and expected_version != version:
            raise _conflict()
        yaml = _yaml()
        try:
            document = yaml.load(text)
            original = yaml.load(text)
        except YAMLError as exc:
            raise ConfigError([f"{path}: the file is not valid YAML ({str(exc).splitlines()[0]}); "
                               f"fix it by hand, or restore {path.name}.bak"]) from None
        if document is None:
            document, original = {}, {}
        if not isinstance(document, dict):
            raise ConfigError([f"{path}: the file must be a mapping of settings (timezone:, dns:, …)"])
        change(document)
        new_text = keep_untouched(text, original, _dump(yaml, document, text), document)
        config = validate_text(new_text, path)
        if read(path)[1] != version:   # edited by hand while we worked: never overwrite that
            raise _conflict()
        write_atomically(path, new_text)
        if written is not None:
            written(text, new_text)
    return config, version_of(new_text)


def replace(path: Path, expected_version: str | None, new_text: str,
            written: Callable[[str, str], None] | None = None) -> tuple[Config, str]:
    """Replace the whole file with `new_text` (an older version being restored), validated like
    any edit and with the same version check. Raises VersionConflict or ConfigError."""
    path = Path(path)
    with _edit_lock(path):
        text, version = read(path)
        if expected_version is not None and expected_version != version:
            raise _conflict()
        config = validate_text(new_text, path)
        write_atomically(path, new_text)
        if written is not None:
            written(text, new_text)
    return config, version_of(new_text)


def _dump(yaml: YAML, document, original_text: str) -> str:
    out = io.StringIO()
    yaml.dump(document, out)
    text = out.getvalue()
    directive = "%YAML 1.1\n---\n"
    if text.startswith(directive) and not original_text.startswith("%YAML"):
        text = text[len(directive):]   # the version is for ruamel's quoting; the file never said it
    return text


# ---------------------------------------------------------------- keeping untouched text


def _plain(node):
    """A comparable copy of a loaded node: types kept apart (true is not 1), no comments."""
    if isinstance(node, dict):
        return ("map", tuple((_plain(k), _plain(v)) for k, v in node.items()))
    if isinstance(node, (list, tuple)):
        return ("seq", tuple(_plain(v) for v in node))
    for kind in (bool, int, float, str, datetime.datetime, datetime.date):
        if isinstance(node, kind):
            return (kind.__name__, kind(node) if kind in (bool, int, float, str) else node)
    return (type(node).__name__, node)


def _split_blocks(lines: list[str], indent: int) -> tuple[list[str], list[list[str]]]:
    """Lines of a block mapping at `indent` → (lines before the first key, one block per key).
    A block runs from its key's line to the next key at the same indent (comments included)."""
    head: list[str] = []
    blocks: list[list[str]] = []
    for line in lines:
        is_key = (len(line) > indent and line[:indent] == " " * indent and line[indent] not in " \t#-?\n\r"
                  and not line.startswith(("---", "...")))
        if is_key:
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        else:
            head.append(line)
    return head, blocks


def _child_indent(block: list[str]) -> int | None:
    """The indent of a block mapping's keys under `key:` (None when the value is not a block mapping)."""
    if not re.fullmatch(r"[^#]*:\s*(#.*)?\n?", block[0]):
        return None
    for line in block[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            indent = len(line) - len(line.lstrip(" "))
            return indent if not stripped.startswith("-") else None
    return None


def _merge(old_lines: list[str], old, new_lines: list[str], new, indent: int, depth: int) -> list[str] | None:
    """The new text, with the blocks of keys whose value did not change taken from the old text."""
    old_head, old_blocks = _split_blocks(old_lines, indent)
    new_head, new_blocks = _split_blocks(new_lines, indent)
    if len(old_blocks) != len(old) or len(new_blocks) != len(new):
        return None   # the text does not split as expected (complex keys, odd layout): leave it to ruamel
    old_by_key = dict(zip(old.keys(), old_blocks))
    out = list(new_head)
    last_old_key = list(old.keys())[-1] if old else None
    moved: list[str] = []
    for key, block in zip(new.keys(), new_blocks):
        if key in old_by_key:
            old_block, old_value, new_value = old_by_key[key], old[key], new[key]
            if _plain(old_value) == _plain(new_value):
                block = old_block
            elif depth > 0 and isinstance(old_value, dict) and isinstance(new_value, dict):
                old_indent, new_indent = _child_indent(old_block), _child_indent(block)
                if old_indent is not None and old_indent == new_indent:
                    inner = _merge(old_block[1:], old_value, block[1:], new_value, new_indent, depth - 1)
                    if inner is not None:
                        block = [block[0]] + inner
        if indent > 0 and key == last_old_key and key != list(new.keys())[-1]:
            # The comments after the last key belong to the next key of the parent (ruamel
            # keeps them with this one): when keys are added after it, they move to the end.
            block, moved = _without_outdented_tail(block, indent)
        out.extend(block)
    return out + moved


def _without_outdented_tail(block: list[str], indent: int) -> tuple[list[str], list[str]]:
    """Split off the trailing blank lines and comments indented less than `indent`."""
    cut = len(block)
    while cut > 1:
        line = block[cut - 1]
        stripped = line.strip()
        if stripped and not (stripped.startswith("#") and len(line) - len(line.lstrip(" ")) < indent):
            break
        cut -= 1
    tail = block[cut:]
    if not any(line.strip() for line in tail):
        return block, []      # blank lines only: leave them where they are
    return block[:cut], tail


def keep_untouched(old_text: str, old_document, new_text: str, new_document) -> str:
    """`new_text` (ruamel's dump of the edited document) with every section the edit left alone
    copied from `old_text` as the parent wrote it; ruamel's text when that cannot be done safely."""
    if not isinstance(old_document, dict) or not isinstance(new_document, dict) or not old_document:
        return new_text
    if not old_text.endswith("\n"):
        old_text += "\n"
    try:
        merged_lines = _merge(old_text.splitlines(keepends=True), old_document,
                              new_text.splitlines(keepends=True), new_document, 0, 1)
        if merged_lines is None:
            return new_text
        merged = "".join(merged_lines)
        if not merged.endswith("\n"):
            merged += "\n"
        if _plain(_yaml().load(merged)) != _plain(new_document):
            return new_text
        return merged
    except Exception:  # any surprise: ruamel's own text is right, only less faithful to the layout
        return new_text


def write_atomically(path: Path, text: str) -> None:
    """Keep the current file as .bak, then replace it all at once (`files.write_atomically`),
    with the mode it had: a config holding notification secrets stays readable by root only."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = 0o644

    def keep_backup() -> None:
        if not path.exists():
            return
        # A hard link to the current file becomes the .bak: no copy, no window without one.
        backup = path.with_name(path.name + ".bak")
        staged = path.with_name(path.name + ".bak.new")
        try:
            if staged.exists():
                staged.unlink()
            os.link(path, staged)
        except OSError:
            staged.write_bytes(path.read_bytes())
        os.replace(staged, backup)

    files.write_atomically(path, text.encode("utf-8"), mode, before_replace=keep_backup)


__all__ = ["ConfigError", "VersionConflict", "edit", "read", "replace", "validate_text", "version_of", "write_atomically"]
