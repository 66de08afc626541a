"""Changing the config file safely: validate, write atomically, keep the comments.

The web UI (and anything else that edits rules) goes through `edit`: it reads the file with
ruamel.yaml (round-trip, so the parent's comments and key order survive where the edit does
not touch them), applies the change, validates the result exactly as `filterd check` does,
and only then writes a temp file, fsyncs it and renames it over the config, keeping the
previous version as `.bak`. Every edit names the version it was based on: a file changed
meanwhile (by hand, in another tab) is refused, never silently overwritten.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Callable

from ruamel.yaml import YAML

from .config import Config, ConfigError, parse_config, read_yaml


class VersionConflict(Exception):
    """The file changed since the page that sent this edit was rendered."""


def _yaml() -> YAML:
    yaml = YAML()  # round-trip mode
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


def edit(path: Path, expected_version: str | None, change: Callable[[dict], None]) -> tuple[Config, str]:
    """Apply `change` to the parsed document, validate, write atomically; return the new config
    and version. Raises VersionConflict, or ConfigError (nothing written) when invalid."""
    path = Path(path)
    text, version = read(path)
    if expected_version is not None and expected_version != version:
        raise VersionConflict("the config was changed meanwhile (by hand or in another tab): "
                              "reload the page and make the change again")
    yaml = _yaml()
    document = yaml.load(text) or {}
    change(document)
    out = io.StringIO()
    yaml.dump(document, out)
    new_text = out.getvalue()
    config = validate_text(new_text, path)
    write_atomically(path, new_text)
    return config, version_of(new_text)


def write_atomically(path: Path, text: str) -> None:
    """temp file in the same folder → fsync → keep the old file as .bak → rename over it."""
    path = Path(path)
    directory = path.parent
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(temp, os.stat(path).st_mode & 0o777)
        except OSError:
            pass
        if path.exists():
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
        os.replace(temp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


__all__ = ["ConfigError", "VersionConflict", "edit", "read", "validate_text", "version_of", "write_atomically"]
