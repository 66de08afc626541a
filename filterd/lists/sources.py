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
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from filterd.lists.domains import parse_list
from filterd.lists.index import DomainIndex, IndexList, compile_index

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
        drop_essential(f.id, parsed)
        entries.append(IndexList(f.id, f.category, parsed, {"path": str(f.path)}))
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = compile_index(entries, path)
    log.info("compiled %d lists (%s blocked names) into %s in %.1f s", stats.lists,
             f"{stats.blocked_keys:,}", path.name, time.monotonic() - started)


def drop_essential(list_id: str, parsed) -> list[str]:
    """Leave out entries that would break a family's normal internet (a top-level domain,
    googleapis.com, apple-dns.net behind which iCloud sits…): public lists do carry such names.
    Returns what was dropped (logged)."""
    from filterd.rules.catalog import ESSENTIAL_DOMAINS, ESSENTIAL_PARENTS, essential_conflict

    suspects = parsed.domains & (ESSENTIAL_DOMAINS | ESSENTIAL_PARENTS.keys())
    suspects |= {name for name in parsed.domains if "." not in name}
    dropped = sorted(name for name in suspects if essential_conflict(name))
    if dropped:
        parsed.domains.difference_update(dropped)
        log.warning("list %s: left out %d entr%s that would block what every device needs: %s", list_id,
                    len(dropped), "y" if len(dropped) == 1 else "ies", ", ".join(dropped[:10]))
    return dropped


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


def update(config, stream=None, check_url=None) -> list:
    """Download every `url` list (keeping the last good copy on failure), then compile.

    Prints a progress bar per list on a terminal, plain lines otherwise, and keeps
    `data_dir/lists/update-status.json` current for the web UI's "Update now" page. Returns
    the FetchResults; the caller decides the exit status from their `status`. check_url is
    fetch_list's hook (urlcheck.UrlGuard refuses addresses of this machine and the like).
    """
    from filterd.lists.fetch import ProgressBar, Throttled, fetch_list

    results = []
    store = lists_dir(config)
    store.mkdir(parents=True, exist_ok=True)
    remote = [source for source in config.rules.lists if source.url]
    status = UpdateStatus(update_status_path(config), remote)
    try:
        for source in remote:
            bar = ProgressBar(source.id, stream)
            drawn = Throttled(bar)     # the terminal redraws ~10 times a second

            def progress(done: int, total: int | None, drawn=drawn, list_id=source.id) -> None:
                drawn(done, total)
                status.downloading(list_id, done, total)

            status.downloading(source.id, 0, None)
            # Every chunk reaches the status (kept in memory, written on its own clock), so a
            # download that stalls still shows the bytes it got so far.
            result = fetch_list(source.id, source.url, store, progress=progress, check_url=check_url,
                                progress_interval_s=0)
            bar.finish(result.message())
            status.fetched(result)
            results.append(result)
        status.compiling()
        index = ensure_compiled(config)
        status.finish(_domain_counts(index))
    except BaseException as exc:
        status.finish({}, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        status.close()
    return results


# ---------------------------------------------------------------- progress for the web UI

UPDATE_STATUS_FILE = "update-status.json"
STATUS_WRITE_INTERVAL_S = 0.5     # a download's byte counts reach the file twice a second


def update_status_path(config) -> Path:
    return lists_dir(config) / UPDATE_STATUS_FILE


class UpdateStatus:
    """The progress of one `filterd lists update`, as a small JSON file replaced atomically
    (temp file + rename: a reader never sees half of it). Not fsynced: it only describes a
    run in progress, and a power cut ends that run anyway.

    Per list: waiting → downloading (bytes, and the total when the server says it) → done
    (updated / unchanged, with the domain count once compiled) or error (the one-line message).
    """

    def __init__(self, path: Path, sources, clock=time.time):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._dirty = False
        self._closed = threading.Event()
        now = clock()
        self.data = {"pid": os.getpid(), "started": now, "updated": now, "finished": None,
                     "phase": "downloading", "error": None,
                     "lists": [{"id": s.id, "url": s.url, "state": "waiting", "done": 0, "total": None,
                                "message": "", "domains": None} for s in sources]}
        self._by_id = {item["id"]: item for item in self.data["lists"]}
        self._write()
        # Byte counts change with every chunk; they reach the file on this clock, so a stalled
        # download still shows what it got (nobody's code runs while a read waits).
        self._flusher = threading.Thread(target=self._flush_now_and_then, name="update-status", daemon=True)
        self._flusher.start()

    def downloading(self, list_id: str, done: int, total: int | None) -> None:
        with self._lock:
            item = self._by_id[list_id]
            first = item["state"] != "downloading"
            item.update(state="downloading", done=done, total=total)
            self._dirty = True
        if first:
            self._write()

    def fetched(self, result) -> None:
        with self._lock:
            item = self._by_id[result.list_id]
            state = "error" if result.status == "failed" else "done"
            item.update(state=state, message=result.message(), result=result.status, size=result.size)
        self._write()

    def compiling(self) -> None:
        with self._lock:
            self.data["phase"] = "compiling"
        self._write()

    def finish(self, counts: dict[str, int], error: str | None = None) -> None:
        with self._lock:
            for item in self.data["lists"]:
                if item["id"] in counts:
                    item["domains"] = counts[item["id"]]
                if error and item["state"] in ("waiting", "downloading"):
                    item.update(state="error", message=f"{item['id']}: not done ({error})")
            self.data.update(phase="done", finished=self._clock(), error=error)
        self._write()

    def close(self) -> None:
        self._closed.set()
        self._flusher.join()

    def _flush_now_and_then(self) -> None:
        while not self._closed.wait(STATUS_WRITE_INTERVAL_S):
            if self._dirty:
                self._write()

    def _write(self) -> None:
        with self._lock:
            self._dirty = False
            self.data["updated"] = self._clock()
            text = json.dumps(self.data)
            part = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                part.write_text(text, encoding="utf-8")
                os.replace(part, self.path)
            except OSError as exc:   # progress is a courtesy: never fail an update over it
                log.warning("cannot write %s: %s", self.path, exc)
                part.unlink(missing_ok=True)


def _domain_counts(index_file: Path | None) -> dict[str, int]:
    """List id → domains (or hashed domains) compiled, from the index's own metadata."""
    if index_file is None:
        return {}
    try:
        with DomainIndex.open(index_file, verify=False) as index:
            return {info.id: info.counts.get("domains", 0) or info.counts.get("digests", 0)
                    for info in index.lists}
    except (OSError, ValueError) as exc:
        log.warning("cannot read the list counts of %s: %s", index_file, exc)
        return {}


def read_update_status(config) -> dict | None:
    """The last update's progress (None: no update has run here), with `running` telling a
    run in progress from one whose process died without finishing (`stopped`)."""
    try:
        data = json.loads(update_status_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("lists"), list):
        return None
    alive = data.get("finished") is None and _process_alive(data.get("pid"))
    data["running"] = alive
    data["stopped"] = data.get("finished") is None and not alive
    for item in data["lists"]:
        total, done = item.get("total"), item.get("done") or 0
        if item.get("state") == "done":
            item["percent"] = 100
        else:
            item["percent"] = min(100, int(done * 100 / total)) if total else None
    return data


def _process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_signature_path(config) -> Path | None:
    files, _ = sources(config)
    return index_path(config, files) if files else None


def file_age_s(path: Path) -> float | None:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return None
