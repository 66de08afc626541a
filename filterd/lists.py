"""Which list files make up the index, compiling them, and `filterd lists update`.

Sources are the catalog's seed lists (so a fresh install filters before any download) and
the config's `lists:` (downloaded copies in `data_dir/lists/`, or local files). The compiled
index is named after a signature of its sources (ids, categories, formats, file sizes and
mtimes): a worker that finds the file for the current signature just maps it; only when it is
missing does anyone compile. Writers rename atomically, so readers never see half a file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .domains import parse_list
from .index import DomainIndex, IndexList, compile_index

log = logging.getLogger("filterd.lists")

INDEX_PREFIX = "index-"
KEEP_OLD_INDEXES = 2


@dataclass(frozen=True)
class SourceFile:
    id: str
    category: str
    path: Path
    format: str | None
    url: str | None = None


def lists_dir(config) -> Path:
    return config.data_dir / "lists"


def sources(config) -> tuple[list[SourceFile], list[str]]:
    """The list files to compile, and one line per configured list that has no file (yet)."""
    out: list[SourceFile] = []
    missing: list[str] = []
    for category in config.catalog.categories.values():
        seed = getattr(category, "seed", None)
        if seed and Path(seed).is_file() and Path(seed).stat().st_size:
            out.append(SourceFile(f"seed-{category.id}", category.id, Path(seed), "domains"))
    for source in config.rules.lists:
        if source.url:
            path = lists_dir(config) / f"{source.id}.txt"
        else:
            path = Path(source.path)
        if path.is_file():
            out.append(SourceFile(source.id, source.category, path, source.format, source.url))
        elif source.url:
            missing.append(f"{source.id}: not downloaded yet (run `filterd lists update`)")
        else:
            missing.append(f"{source.id}: {path} does not exist")
    return out, missing


def signature(files: list[SourceFile]) -> str:
    parts = []
    for f in files:
        try:
            st = f.path.stat()
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None
        parts.append((f.id, f.category, f.format, str(f.path), stamp))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def index_path(config, files: list[SourceFile]) -> Path:
    return lists_dir(config) / f"{INDEX_PREFIX}{signature(files)}.idx"


def compile_sources(files: list[SourceFile], path: Path) -> None:
    """Parse every source file and compile them into the index at `path`."""
    started = time.monotonic()
    entries = []
    for f in files:
        try:
            data = f.path.read_bytes()
        except OSError as exc:
            log.error("list %s: cannot read %s: %s", f.id, f.path, exc.strerror)
            continue
        parsed = parse_list(data, f.format)
        if parsed.invalid:
            log.info("list %s: %s", f.id, parsed.summary())
        entries.append(IndexList(f.id, f.category, parsed, {"path": str(f.path)}))
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = compile_index(entries, path)
    log.info("compiled %d lists (%s blocked names) into %s in %.1f s", stats.lists,
             f"{stats.blocked_keys:,}", path.name, time.monotonic() - started)


def remove_old_indexes(directory: Path, keep: Path) -> None:
    """Keep the newest few compiled indexes (a worker may still map the previous one)."""
    olds = sorted((p for p in directory.glob(f"{INDEX_PREFIX}*.idx") if p != keep),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for old in olds[KEEP_OLD_INDEXES - 1:]:
        try:
            old.unlink()
        except OSError:
            pass


def ensure_compiled(config) -> Path | None:
    """Compile the config's current sources unless their index exists; return its path."""
    files, _ = sources(config)
    if not files:
        return None
    path = index_path(config, files)
    if not path.exists():
        compile_sources(files, path)
        remove_old_indexes(path.parent, path)
    return path


def compile_in_child(config) -> None:
    """Compile in a separate process, so the daemon never holds a million names in memory.

    Parsing builds large sets of strings that Python does not hand back to the system
    afterwards; a child process takes that peak and exits, and the daemon only maps the file.
    """
    if config.path is None:
        ensure_compiled(config)
        return
    files, _ = sources(config)
    if not files or index_path(config, files).exists():
        return
    result = subprocess.run([sys.executable, "-m", "filterd", "--log-level", "info", "lists", "compile",
                             "--config", str(config.path)], stdin=subprocess.DEVNULL)
    if result.returncode:
        raise RuntimeError(f"compiling the lists failed (exit {result.returncode}); see the log above")


def open_index(config, compile_if_missing: bool = True) -> DomainIndex:
    """The index for the config's current sources: mapped if compiled, else compiled first."""
    files, missing = sources(config)
    for line in missing:
        log.warning("list %s", line)
    if not files:
        return DomainIndex.empty()
    path = index_path(config, files)
    if not path.exists():
        if not compile_if_missing:
            raise FileNotFoundError(path)
        compile_in_child(config)
    return DomainIndex.open(path)


def update(config, stream=None) -> list:
    """Download every `url` list (keeping the last good copy on failure), then compile.

    Prints a progress bar per list on a terminal, plain lines otherwise. Returns the
    FetchResults; the caller decides the exit status from their `status`.
    """
    from .fetch import ProgressBar, fetch_list

    results = []
    store = lists_dir(config)
    store.mkdir(parents=True, exist_ok=True)
    for source in config.rules.lists:
        if not source.url:
            continue
        bar = ProgressBar(source.id, stream)
        result = fetch_list(source.id, source.url, store, progress=bar)
        bar.finish(result.message())
        results.append(result)
    ensure_compiled(config)
    return results


def current_signature_path(config) -> Path | None:
    files, _ = sources(config)
    return index_path(config, files) if files else None


def file_age_s(path: Path) -> float | None:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return None
