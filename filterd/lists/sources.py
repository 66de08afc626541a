"""Which lists make up the index, downloading them (`filterd lists update`) and compiling them.

A category is its lists. Sources are, in this order:
- the catalog's seed lists (so a fresh install filters before any download);
- the catalog's sources of every category some profile blocks (directly, through its preset or
  in a schedule) and of the protected category: no config needed, a parent may switch one off
  in `lists:` (`{id: ut1-games, enabled: false}`) or replace it (same id, their own url);
- the config's own `lists:` (downloaded copies in `data_dir/lists/`, or local files).

`filterd lists update` (the daily timer and the web UI's "Update now" run it) downloads every
list with an address through `fetch.fetch_list`, each address checked by `urlcheck.UrlGuard`
(this host, loopback, link-local and private addresses refused unless the list says
`allow_private: true`; a `lists_mirror:` set by the operator is trusted), then compiles.

The compiled index is named after a signature of its sources (ids, categories, formats, file
sizes and mtimes): a worker that finds the file for the current signature just maps it; only
when it is missing does anyone compile, in a child process, streaming (see index.IndexBuilder),
while the last good index keeps serving. Writers rename atomically, so readers never see half a
file.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from filterd.files import write_atomically
from filterd.lists.domains import LineParser, describe_kinds
from filterd.lists.essential import LIST_GUARDED, list_conflict
from filterd.lists.fetch import FetchResult, ProgressBar, Throttled, fetch_list
from filterd.lists.index import CorruptIndexError, DomainIndex, IndexBuilder
from filterd.lists.urlcheck import UrlGuard

log = logging.getLogger("filterd.lists")

INDEX_PREFIX = "index-"
KEEP_OLD_INDEXES = 2
_READ_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
MAX_PARTS = 20                    # a list in numbered parts: UT1 adult has 3 of 50 MB
MAX_UNPACKED_BYTES = 1 << 30      # a gzip list unpacked: UT1 adult is about 110 MB


@dataclass(frozen=True)
class ListSpec:
    """One list the config asks for (seed lists aside), present on disk or not."""

    id: str
    category: str
    urls: tuple[str, ...] = ()        # downloaded (a list split in parts: every part, in order)
    path: Path | None = None          # or a local file
    format: str | None = None
    allow_private: bool = False
    origin: str = "config"            # "config" (lists:) or "catalog" (the category's own sources)
    licence: str | None = None
    homepage: str | None = None
    parts: str | None = None          # or parts numbered from 0 ("…/domains.{n}"), as many as are served

    @property
    def url(self) -> str | None:
        """The (first) address, to show."""
        if self.parts:
            return self.parts.replace("{n}", "0")
        return self.urls[0] if self.urls else None

    def part_ids(self) -> list[str]:
        """The file names (without .txt) its fixed downloads are kept under in data_dir/lists."""
        if len(self.urls) <= 1:
            return [self.id]
        return [f"{self.id}.{number}" for number in range(len(self.urls))]

    def numbered_parts(self) -> Iterator[tuple[str, str]]:
        """(file name, URL) of every part of a list served in numbered parts, until MAX_PARTS."""
        if self.parts is None:
            yield from zip(self.part_ids(), self.urls)
            return
        for number in range(MAX_PARTS):
            yield f"{self.id}.{number}", self.parts.replace("{n}", str(number))


@dataclass(frozen=True)
class SourceFile:
    """A list to compile: one file, or the parts of a split list read as one."""

    id: str
    category: str
    paths: tuple[Path, ...]
    format: str | None
    url: str | None = None
    origin: str = "seed"
    licence: str | None = None
    homepage: str | None = None

    @property
    def path(self) -> Path:
        return self.paths[0]


def lists_dir(config) -> Path:
    return config.data_dir / "lists"


def blocked_categories(config) -> set[str]:
    """Categories some profile blocks (directly, through a preset, in a schedule or a limit), and the
    protected ones (blocked for everyone)."""
    categories = config.catalog.categories
    wanted = {name for name in config.rules.blocked_names() if name in categories}
    wanted |= {category_id for category_id, category in categories.items() if category.protected}
    return wanted


def wanted_lists(config) -> list[ListSpec]:
    """Every list to compile besides the seeds: the blocked categories' catalog sources (unless
    switched off or replaced), then the config's own."""
    rules = config.rules
    own = {source.id for source in rules.lists}
    disabled = getattr(rules, "disabled_lists", frozenset())
    out: list[ListSpec] = []
    blocked = blocked_categories(config)
    for category_id, category in config.catalog.categories.items():
        if category_id not in blocked:
            continue
        for source in category.sources:
            if source.id in own or source.id in disabled:
                continue
            parts = getattr(source, "parts", None)
            urls = tuple(getattr(source, "urls", ()) or ((source.url,) if source.url else ()))
            out.append(ListSpec(source.id, category_id, urls, source.path, source.format, False, "catalog",
                                source.licence, source.homepage, parts))
    for source in rules.lists:
        out.append(ListSpec(source.id, source.category, (source.url,) if source.url else (),
                            Path(source.path) if source.path else None, source.format,
                            getattr(source, "allow_private", False), "config"))
    return out


def sources(config) -> tuple[list[SourceFile], list[str]]:
    """The list files to compile, and one line per wanted list that has no file (yet)."""
    out: list[SourceFile] = []
    missing: list[str] = []
    for category in config.catalog.categories.values():
        seed = getattr(category, "seed", None)
        if seed and Path(seed).is_file() and Path(seed).stat().st_size:
            out.append(SourceFile(f"seed-{category.id}", category.id, (Path(seed),), "domains"))
    store = lists_dir(config)
    for spec in wanted_lists(config):
        if spec.parts:
            paths = tuple(_consecutive(store / f"{part}.txt" for part, _ in spec.numbered_parts()))
        elif spec.urls:
            paths = tuple(p for p in (store / f"{part}.txt" for part in spec.part_ids()) if p.is_file())
        else:
            paths = (spec.path,) if spec.path is not None and spec.path.is_file() else ()
        if paths:
            out.append(SourceFile(spec.id, spec.category, paths, spec.format, spec.url, spec.origin,
                                  spec.licence, spec.homepage))
        elif spec.urls or spec.parts:
            missing.append(f"{spec.id}: not downloaded yet (run `filterd lists update`)")
        elif spec.origin == "config":
            missing.append(f"{spec.id}: {spec.path} does not exist")
        # a catalog list kept on a local path (the hashed IWF list) is there only if the operator has it
    return out, missing


def _consecutive(paths) -> Iterator[Path]:
    """The paths that exist, up to the first that does not."""
    for path in paths:
        if not path.is_file():
            return
        yield path


def describe_list(config, list_id: str) -> str:
    """Where a list comes from, in one line, so a parent can report a wrong block to the
    people who keep it (and allow the name meanwhile)."""
    categories = config.catalog.categories
    if list_id.startswith("seed-"):
        category = categories.get(list_id.removeprefix("seed-"))
        where = f" ({category.seed})" if category is not None and category.seed else ""
        return f"list {list_id}: filterd's own starter list{where}; a wrong block? report it to filterd's project"
    for spec in wanted_lists(config):
        if spec.id != list_id:
            continue
        where = spec.url or str(spec.path)
        if spec.origin == "catalog":
            name = categories[spec.category].name if spec.category in categories else spec.category
            report = f"; a wrong block? report it at {spec.homepage}" if spec.homepage else ""
            return f"list {list_id}: the {name} category's list from {where} ({spec.licence}){report}"
        return f"list {list_id}: a list of this config (lists:) from {where}"
    return f"list {list_id}: no longer in the config (the index predates the change)"


def signature(files: list[SourceFile]) -> str:
    parts = []
    for f in files:
        stamps = []
        for path in f.paths:
            try:
                st = path.stat()
                stamps.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                stamps.append(None)
        parts.append((f.id, f.category, f.format, [str(p) for p in f.paths], stamps))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def index_path(config, files: list[SourceFile]) -> Path:
    return lists_dir(config) / f"{INDEX_PREFIX}{signature(files)}.idx"


# ---------------------------------------------------------------- compiling


def read_chunks(paths: tuple[Path, ...], max_unpacked: int = MAX_UNPACKED_BYTES) -> Iterator[bytes]:
    """The bytes of a list, a megabyte at a time: its parts one after the other (a list split
    in parts may cut a line between two), each gunzipped if it is gzip data (a `.gz` source).
    A gzip file that unpacks beyond `max_unpacked` bytes (a zip bomb) is cut there."""
    for path in paths:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            unpacked = 0
            while chunk := stream.read(_READ_BYTES):
                unpacked += len(chunk)
                if gzipped and unpacked > max_unpacked:
                    raise ValueError(f"{path.name} unpacks to more than {max_unpacked >> 20} MB")
                yield chunk


def compile_sources(files: list[SourceFile], path: Path) -> None:
    """Parse every source file and compile them into the index at `path`, streaming: a list
    is never held whole in memory. Entries that would block what every device needs are left
    out (essential.list_conflict), and each is logged with the list that had it."""
    started = time.monotonic()
    builder = IndexBuilder()
    guarded = LIST_GUARDED
    for f in files:
        parser = LineParser(f.format)
        bit = builder.add_list(f.id, f.category, f.format or "domains",
                               {"paths": [str(p) for p in f.paths], "url": f.url, "origin": f.origin})
        dropped: list[str] = []
        try:
            for domains, exceptions, digests in parser.batches(read_chunks(f.paths)):
                kept = [name for name in domains if name not in guarded and "." in name]
                if len(kept) != len(domains):
                    dropped += [name for name in domains if name in guarded or "." not in name]
                builder.add(bit, kept, exceptions, digests)
        except (OSError, EOFError, ValueError, zlib.error) as exc:   # gzip.BadGzipFile is an OSError
            log.error("list %s: cannot read %s: %s (compiled what was read)", f.id,
                      ", ".join(map(str, f.paths)), getattr(exc, "strerror", None) or exc)
        builder.finish_list(bit, parser.parsed)
        log.info("list %s: %s", f.id, describe_kinds(parser.parsed.kinds))
        if dropped:
            shown = sorted(set(dropped))
            log.warning("list %s: left out %d entr%s that would block what every device needs: %s", f.id,
                        len(shown), "y" if len(shown) == 1 else "ies",
                        "; ".join(list_conflict(name) or name for name in shown[:5]))
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = builder.write(path)
    log.info("compiled %d lists (%s blocked names, %.1f bytes each) into %s in %.1f s", stats.lists,
             f"{stats.blocked_keys:,}", stats.size_bytes / max(stats.blocked_keys, 1), path.name,
             time.monotonic() - started)


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

    Parsing makes many short-lived strings that Python does not hand back to the system
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


def update_running(config) -> bool:
    """A `filterd lists update` is downloading or compiling right now: it compiles the new index
    itself once its downloads are done, so the daemon waits for that instead of compiling each
    half-updated set of files."""
    status = read_update_status(config)
    return bool(status and status["running"])


def last_good_index(config) -> Path | None:
    """The newest compiled index that opens: what the daemon serves from at start while the
    index for changed sources is compiled."""
    candidates = sorted(lists_dir(config).glob(f"{INDEX_PREFIX}*.idx"),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in candidates:
        try:
            DomainIndex.open(candidate).close()
            return candidate
        except (OSError, CorruptIndexError):
            continue
    return None


def open_index(config, compile_if_missing: bool = True, last_good: bool = False) -> DomainIndex:
    """The index for the config's current sources: mapped if compiled, else compiled first.

    With `last_good`, a missing index is not waited for: the newest good one is mapped instead
    (its `path` then differs from current_signature_path, which tells the daemon to reload).
    """
    files, missing = sources(config)
    for line in missing:
        log.warning("list %s", line)
    if not files:
        return DomainIndex.empty()
    path = index_path(config, files)
    if path.exists():
        try:
            return DomainIndex.open(path)
        except CorruptIndexError as exc:   # a damaged disk block, a half-copied file: compile again
            log.error("%s; removed, the lists are compiled again", exc)
            path.unlink(missing_ok=True)
    if not path.exists():
        previous = last_good_index(config) if last_good else None
        if previous is not None:
            log.info("serving the last good lists (%s) until the changed lists are compiled", previous.name)
            return DomainIndex.open(previous)
        if not compile_if_missing:
            raise FileNotFoundError(path)
        compile_in_child(config)
    return DomainIndex.open(path)


# ---------------------------------------------------------------- downloading


def mirrored(url: str, mirror: str | None) -> str:
    """`https://HOST/PATH` as fetched through `lists_mirror` (`MIRROR/HOST/PATH`), or itself."""
    if not mirror:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return url
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")


def url_guard(config, spec: ListSpec) -> UrlGuard:
    """The SSRF guard for one list's downloads: this host's own addresses (the web UI's too),
    loopback, link-local and the like always refused; private (LAN) addresses only when the
    list says `allow_private: true`; the operator's `lists_mirror` trusted, redirects from it
    checked as usual."""
    web = config.rules.web
    own = [a for a in (web.host, web.address, web.address6) if a and a not in ("0.0.0.0", "::")]  # nosec B104
    mirror = getattr(config, "lists_mirror", None)
    return UrlGuard(extra_own=own, allow_private=spec.allow_private,
                    trusted_prefix=f"{mirror.rstrip('/')}/" if mirror else None)


def update(config, stream=None, check_url=None) -> list[FetchResult]:
    """Download every list with an address (keeping the last good copy on failure), then compile.

    Prints a progress bar per list on a terminal, plain lines otherwise, and keeps
    `data_dir/lists/update-status.json` current for the web UI's "Update now" page. Returns
    the FetchResults (one per file); the caller decides the exit status from their `status`.
    check_url replaces the per-list `url_guard` (tests only).
    """
    results: list[FetchResult] = []
    store = lists_dir(config)
    store.mkdir(parents=True, exist_ok=True)
    remote = [spec for spec in wanted_lists(config) if spec.urls or spec.parts]
    mirror = getattr(config, "lists_mirror", None)
    status = UpdateStatus(update_status_path(config), remote)
    try:
        for spec in remote:
            guard = check_url or url_guard(config, spec)
            bar = ProgressBar(spec.id, stream)
            drawn = Throttled(bar)     # the terminal redraws ~10 times a second
            before = 0
            outcomes = []
            status.downloading(spec.id, 0, None)
            for number, (part, url) in enumerate(spec.numbered_parts()):
                def progress(done: int, total: int | None, drawn=drawn, list_id=spec.id, before=before) -> None:
                    drawn(before + done, None if total is None else before + total)
                    status.downloading(list_id, before + done, None if total is None else before + total)

                # Every chunk reaches the status (kept in memory, written on its own clock), so a
                # download that stalls still shows the bytes it got so far.
                result = fetch_list(part, mirrored(url, mirror), store, progress=progress, check_url=guard,
                                    progress_interval_s=0)
                if spec.parts and number and result.status == "failed" and result.http_status == 404:
                    _forget_parts_from(store, spec, number)    # the list has `number` parts now
                    break
                before += result.size
                outcomes.append(result)
                results.append(result)
                if spec.parts and result.status == "failed":
                    break                                      # the later parts keep their copies
            message = "; ".join(r.message() for r in outcomes)
            bar.finish(message)
            status.fetched(spec.id, outcomes, message)
        status.compiling()
        index = ensure_compiled(config)
        counts = _domain_counts(index)
        for spec in remote:
            if spec.id in counts:
                domains, kinds = counts[spec.id]
                (stream if stream is not None else sys.stderr).write(f"{spec.id}: {domains:,} domains ({kinds})\n")
        status.finish(counts)
    except BaseException as exc:
        status.finish({}, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        status.close()
    return results


def _forget_parts_from(store: Path, spec: ListSpec, first: int) -> None:
    """Remove the kept copies of parts a list no longer has (it was split in more before)."""
    for number, (part, _) in enumerate(spec.numbered_parts()):
        if number >= first:
            for leftover in (store / f"{part}.txt", store / f"{part}.meta.json", store / f"{part}.lock"):
                leftover.unlink(missing_ok=True)


# ---------------------------------------------------------------- progress for the web UI

UPDATE_STATUS_FILE = "update-status.json"
STATUS_WRITE_INTERVAL_S = 0.5     # a download's byte counts reach the file twice a second


def update_status_path(config) -> Path:
    return lists_dir(config) / UPDATE_STATUS_FILE


class UpdateStatus:
    """The progress of one `filterd lists update`, as a small JSON file replaced atomically
    (files.write_atomically: a reader never sees half of it).

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
                     "lists": [{"id": s.id, "url": s.url, "category": s.category,
                                "origin": getattr(s, "origin", "config"),
                                "state": "waiting", "done": 0, "total": None,
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

    def fetched(self, list_id: str, results: list, message: str) -> None:
        """A list's files are in (or failed: then the message says what was kept)."""
        with self._lock:
            item = self._by_id[list_id]
            failed = any(r.status == "failed" for r in results)
            outcome = "failed" if failed else ("updated" if any(r.status == "updated" for r in results)
                                               else "unchanged")
            item.update(state="error" if failed else "done", message=message, result=outcome,
                        size=sum(r.size for r in results))
        self._write()

    def compiling(self) -> None:
        with self._lock:
            self.data["phase"] = "compiling"
        self._write()

    def finish(self, counts: dict[str, tuple[int, str]], error: str | None = None) -> None:
        with self._lock:
            for item in self.data["lists"]:
                if item["id"] in counts:
                    item["domains"], item["lines"] = counts[item["id"]]
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
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(self.path, text.encode("utf-8"))
            except OSError as exc:   # progress is a courtesy: never fail an update over it
                log.warning("cannot write %s: %s", self.path, exc)


def _domain_counts(index_file: Path | None) -> dict[str, tuple[int, str]]:
    """List id → (domains or hashed domains compiled, the lines read by kind), from the index's
    own metadata."""
    if index_file is None:
        return {}
    try:
        with DomainIndex.open(index_file, verify=False) as index:
            return {info.id: (info.counts.get("domains", 0) or info.counts.get("digests", 0),
                              describe_kinds(info.counts.get("kinds") or {}))
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
