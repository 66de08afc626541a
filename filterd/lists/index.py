"""The compiled block-list index: one file, mmapped read-only and shared by every worker.

Why this shape: a Pi Zero has 512 MB and lists reach millions of names, so the daemon must
not hold Python objects per domain. The index is sorted arrays of 64-bit keys with a 64-bit
mask of lists beside each key; a name is looked up by walking its suffixes
(`a.b.example.com`, `b.example.com`, `example.com`, `com`), one binary search each, so the
cost grows with the number of labels, not with the size of the lists.

Keys are the first 8 bytes (big-endian) of SHA-256 of the normalised name. That is the same
key a "sha256" list gives us from its digests, so plain and hashed lists share one table
and a lookup computes one hash per suffix whatever the lists are; it costs about what
blake2b does here, and no list entry is ever stored in clear.

File layout (tables in native byte order, recorded in the header; a device compiles its
own index, so this is never a portability concern):

    header    128 bytes, see _HEADER
    table 0   blocked:    keys u64[n], masks u64[n], fence u32[2**bits + 1] (8-aligned)
    table 1   exceptions: same shape (adblock `@@` rules)
    metadata  JSON: format version, build time, one entry per list

The fence maps the top `bits` bits of a key to the slice of the table holding such keys;
keys are uniform, so each slice holds ~8 keys and a search takes 3-4 probes, not 20.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import operator
import os
import struct
import sys
import tempfile
import time
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice, repeat
from pathlib import Path
from typing import Any

from filterd.lists.domains import ParsedList

from filterd.files import fsync_directory

__all__ = [
    "MAX_LISTS",
    "CorruptIndexError",
    "DomainIndex",
    "Hit",
    "IndexList",
    "IndexStats",
    "ListInfo",
    "Match",
    "compile_index",
    "digest_key",
    "domain_key",
]

MAX_LISTS = 64
FORMAT_VERSION = 1
_MAGIC = b"FLTRDIDX"
# magic, version, byte order (0 little / 1 big), crc32 of the file (this field as 0),
# file size, metadata offset and length, then per table: count, fence bits, keys, masks
# and fence offsets.
_HEADER = struct.Struct("<8sIII4xQQQ" + "QI4xQQQ" * 2)
_HEADER_SIZE = 128
_TABLES = 2
_BUCKET_TARGET = 8
_SORT_BUCKET_BITS = 4
_MAX_FENCE_BITS = 24
_sha256 = hashlib.sha256
_key_of_digest = struct.Struct(">Q").unpack_from


class CorruptIndexError(ValueError):
    """The index file is truncated, damaged or from an incompatible version."""


def domain_key(name: str) -> int:
    """The index key of a normalised name: first 8 bytes of its SHA-256, big-endian."""
    return _key_of_digest(_sha256(name.encode()).digest())[0]


def digest_key(digest: bytes) -> int:
    """The index key of a name given as its SHA-256 digest (a "sha256" list line)."""
    return _key_of_digest(digest)[0]


@dataclass
class IndexList:
    """One list to compile: its id, category, parsed content and anything to remember
    about its source (checksum, URL, fetch time) so the daemon can tell when to recompile."""

    id: str
    category: str
    parsed: ParsedList
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexStats:
    """What a compile produced, for logs and the web UI."""

    path: Path
    lists: int
    blocked_keys: int
    exception_keys: int
    size_bytes: int
    elapsed_s: float


@dataclass(frozen=True)
class ListInfo:
    """A compiled list as recorded in the index metadata."""

    id: str
    bit: int
    category: str
    format: str
    counts: dict[str, int]
    extra: dict[str, Any]

    @property
    def hashed(self) -> bool:
        """Its entries are SHA-256 digests: a match never reveals which name was listed."""
        return self.format == "sha256"


@dataclass(frozen=True)
class Hit:
    """One list that blocks a name; `suffix` is the listed name, None for hashed lists."""

    list: ListInfo
    suffix: str | None


@dataclass(frozen=True)
class Match:
    """Why a name is blocked: the mask of lists, and per list the suffix that matched."""

    mask: int
    hits: tuple[Hit, ...]

    @property
    def list_ids(self) -> tuple[str, ...]:
        return tuple(hit.list.id for hit in self.hits)


# ---------------------------------------------------------------- compiling


def compile_index(lists: list[IndexList], path: Path) -> IndexStats:
    """Compile lists into one index file at `path`, atomically.

    The file is written beside `path` under a temporary name, fsynced and renamed over
    it: readers see the old index or the new one, never half of one, and a failure at
    any point (a list that cannot be read, a full disk) leaves the old file untouched.
    """
    started = time.perf_counter()
    path = Path(path)
    if len(lists) > MAX_LISTS:
        raise ValueError(
            f"{len(lists)} lists given but an index holds at most {MAX_LISTS}: "
            "merge lists of the same category or disable some"
        )
    ids = [item.id for item in lists]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"list ids must be unique; repeated: {', '.join(duplicates)}")
    meta = _metadata(lists)
    blocked = _merge([_bucketed_keys(item.parsed.domains, item.parsed.digests) for item in lists])
    exceptions = _merge([_bucketed_keys(item.parsed.exceptions, ()) for item in lists])
    size = _write_atomically(path, (blocked, exceptions), meta)
    return IndexStats(
        path=path,
        lists=len(lists),
        blocked_keys=len(blocked[0]),
        exception_keys=len(exceptions[0]),
        size_bytes=size,
        elapsed_s=time.perf_counter() - started,
    )


def _metadata(lists: list[IndexList]) -> bytes:
    entries = []
    for bit, item in enumerate(lists):
        parsed = item.parsed
        entries.append({
            "id": item.id,
            "bit": bit,
            "category": item.category,
            "format": parsed.format,
            "counts": {
                "domains": len(parsed.domains),
                "exceptions": len(parsed.exceptions),
                "digests": len(parsed.digests),
                "invalid": parsed.invalid,
                "lines": parsed.lines,
            },
            "extra": item.extra,
        })
    meta = {
        "format_version": FORMAT_VERSION,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lists": entries,
    }
    try:
        return json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as error:
        raise ValueError(f"list metadata must be JSON-serialisable: {error}") from None


def _bucketed_keys(names: Iterable[str], digests: Iterable[bytes]) -> list[array]:
    """A list's keys, 8 bytes each (not Python ints), split by their top bits.

    Sorting bucket by bucket keeps the transient Python ints of a sort to a fraction of
    the list: this is what keeps compiling a million names well under the Pi's memory.
    """
    buckets = [array("Q") for _ in range(1 << _SORT_BUCKET_BITS)]
    appends = [bucket.append for bucket in buckets]
    shift = 64 - _SORT_BUCKET_BITS
    sha256, unpack = _sha256, _key_of_digest
    for name in names:
        key = unpack(sha256(name.encode()).digest())[0]
        appends[key >> shift](key)
    for digest in digests:
        key = unpack(digest)[0]
        appends[key >> shift](key)
    return buckets


def _merge(per_list: list[list[array]]) -> tuple[array, array]:
    """Union of the lists' keys, sorted, each with the mask of the lists holding it."""
    keys = array("Q")
    masks = array("Q")
    for bucket in range(1 << _SORT_BUCKET_BITS):
        present = [(bit, buckets[bucket]) for bit, buckets in enumerate(per_list)
                   if len(buckets[bucket])]
        if len(present) == 1:  # the common case: no key shared between lists here
            bit, unsorted = present[0]
            ordered = sorted(unsorted)
            if any(map(operator.eq, ordered, islice(ordered, 1, None))):
                ordered = list(dict.fromkeys(ordered))
            keys.extend(ordered)
            masks.extend(repeat(1 << bit, len(ordered)))
        elif present:
            _merge_tagged(present, keys, masks)
        for buckets in per_list:
            buckets[bucket] = array("Q")  # free as we go
    return keys, masks


def _merge_tagged(present: list[tuple[int, array]], keys: array, masks: array) -> None:
    """Merge keys of several lists: sort (key, bit) packed in one int, then group."""
    tagged = [key << 6 | bit for bit, unsorted in present for key in unsorted]
    tagged.sort()
    previous = -1
    for tagged_key in tagged:
        key = tagged_key >> 6
        if key == previous:
            masks[-1] |= 1 << (tagged_key & 63)
        else:
            keys.append(key)
            masks.append(1 << (tagged_key & 63))
            previous = key


def _fence(keys: array) -> tuple[int, array]:
    """Start offset of each bucket of keys sharing their top `bits` bits, plus the end."""
    count = len(keys)
    bits = 0
    while (count >> bits) > _BUCKET_TARGET and bits < _MAX_FENCE_BITS:
        bits += 1
    shift = 64 - bits
    fence = array("I", (bisect_left(keys, bucket << shift) for bucket in range(1 << bits)))
    fence.append(count)
    return bits, fence


def _write_atomically(path: Path, tables: tuple[tuple[array, array], ...], meta: bytes) -> int:
    directory = path.parent
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(bytes(_HEADER_SIZE))
            offset = _HEADER_SIZE
            crc = 0
            table_fields: list[int] = []
            for keys, masks in tables:
                bits, fence = _fence(keys)
                if len(fence) % 2:
                    fence.append(0)  # pad to 8 bytes
                placed = []
                for section in (keys, masks, fence):
                    placed.append(offset)
                    out.write(section)
                    crc = zlib.crc32(section, crc)
                    offset += len(section) * section.itemsize
                table_fields += [len(keys), bits, *placed]
            out.write(meta)
            crc = zlib.crc32(meta, crc)
            size = offset + len(meta)
            fields = [_MAGIC, FORMAT_VERSION, sys.byteorder == "big", 0, size, offset,
                      len(meta), *table_fields]
            fields[3] = zlib.crc32(_HEADER.pack(*fields), crc)  # header too, crc field as 0
            header = _HEADER.pack(*fields)
            os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would lock out other users
            out.seek(0)
            out.write(header)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)
    return size


# ---------------------------------------------------------------- looking up


class _Table:
    """One sorted key table viewed straight from the mapping; no copies."""

    __slots__ = ("count", "shift", "keys", "masks", "fence")

    def __init__(self, view: memoryview | None, count: int, bits: int,
                 keys_at: int, masks_at: int, fence_at: int) -> None:
        self.count = count
        self.shift = 64 - bits
        if view is None or count == 0:
            self.keys = self.masks = self.fence = None
            return
        self.keys = view[keys_at : keys_at + 8 * count].cast("Q")
        self.masks = view[masks_at : masks_at + 8 * count].cast("Q")
        self.fence = view[fence_at : fence_at + 4 * ((1 << bits) + 1)].cast("I")

    def mask(self, key: int) -> int:
        bucket = key >> self.shift
        high = self.fence[bucket + 1]
        i = bisect_left(self.keys, key, self.fence[bucket], high)
        if i < high and self.keys[i] == key:
            return self.masks[i]
        return 0

    def release(self) -> None:
        """Let go of the mapping; any later lookup raises instead of answering "allowed"."""
        for view in (self.keys, self.masks, self.fence):
            if isinstance(view, memoryview):
                view.release()
        self.keys = self.masks = self.fence = _CLOSED
        self.count = max(self.count, 1)
        self.shift = 64


class _Closed:
    """Stands in for the arrays of a closed index: touching it raises."""

    def __getitem__(self, index: object) -> int:
        raise ValueError("lookup on a closed DomainIndex")


_CLOSED: Any = _Closed()


class DomainIndex:
    """A compiled index opened read-only; cheap to open, safe to share between processes.

    To reload: open the new file, swap the one reference the daemon holds, and close the
    old index once no lookup can still be running on it (or just drop it). Lookups take
    normalised names; they lowercase and drop a trailing dot anyway, because a miss
    caused by a query's letter case would be a way around the filter.
    """

    def __init__(self, lists: tuple[ListInfo, ...], meta: dict[str, Any],
                 tables: tuple[_Table, _Table], mapping: mmap.mmap | None = None,
                 view: memoryview | None = None, path: Path | None = None) -> None:
        self.lists = lists
        self.meta = meta
        self.path = path
        self._mapping = mapping
        self._view = view
        self._blocked, self._exceptions = tables
        self._hot = self._hot_state()

    def _hot_state(self) -> tuple[Any, Any, Any, int, _Table | None] | None:
        blocked = self._blocked
        if not blocked.count:
            return None
        exceptions = self._exceptions if self._exceptions.count else None
        return blocked.keys, blocked.masks, blocked.fence, blocked.shift, exceptions

    # -- opening

    @classmethod
    def empty(cls) -> DomainIndex:
        """An index of no lists: every lookup answers 0."""
        tables = (_Table(None, 0, 0, 0, 0, 0), _Table(None, 0, 0, 0, 0, 0))
        return cls((), {"format_version": FORMAT_VERSION, "lists": []}, tables)

    @classmethod
    def open(cls, path: Path, *, verify: bool = True) -> DomainIndex:
        """Map an index file; `verify` also checks its checksum (reads every page once)."""
        path = Path(path)
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < _HEADER_SIZE:
                raise CorruptIndexError(
                    f"{path}: truncated index ({size} bytes, header alone is {_HEADER_SIZE}); "
                    "recompile the lists"
                )
            mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapping)
        try:
            return cls._from_mapping(path, mapping, view, size, verify)
        except BaseException:
            view.release()
            mapping.close()
            raise

    @classmethod
    def _from_mapping(cls, path: Path, mapping: mmap.mmap, view: memoryview,
                      size: int, verify: bool) -> DomainIndex:
        def corrupt(why: str) -> CorruptIndexError:
            return CorruptIndexError(f"{path}: {why}; recompile the lists")

        fields = _HEADER.unpack_from(view, 0)
        magic, version, big_endian, crc, recorded_size, meta_at, meta_len = fields[:7]
        if magic != _MAGIC:
            raise corrupt("not a filterd index (bad magic)")
        if version != FORMAT_VERSION:
            raise corrupt(f"index format version {version}, this filterd reads {FORMAT_VERSION}")
        if bool(big_endian) != (sys.byteorder == "big"):
            raise corrupt("index compiled on a machine of the other byte order")
        if recorded_size != size:
            raise corrupt(f"truncated or extended index ({size} bytes, expected {recorded_size})")
        if meta_at + meta_len != size or meta_at < _HEADER_SIZE:
            raise corrupt("inconsistent header (metadata out of place)")
        tables = []
        for n in range(_TABLES):
            count, bits, keys_at, masks_at, fence_at = fields[7 + 5 * n : 12 + 5 * n]
            fence_len = 4 * ((1 << bits) + 1) if bits <= _MAX_FENCE_BITS else -1
            if (
                fence_len < 0
                or keys_at % 8 or masks_at % 8 or fence_at % 8
                or keys_at < _HEADER_SIZE
                or keys_at + 8 * count > masks_at
                or masks_at + 8 * count > fence_at
                or fence_at + fence_len > meta_at
            ):
                raise corrupt("inconsistent header (table out of place)")
            tables.append((count, bits, keys_at, masks_at, fence_at))
        if verify and zlib.crc32(_HEADER.pack(*fields[:3], 0, *fields[4:]),
                                 zlib.crc32(view[_HEADER_SIZE:])) != crc:
            raise corrupt("checksum mismatch (the file is damaged)")
        try:
            meta = json.loads(bytes(view[meta_at:size]))
            lists = tuple(
                ListInfo(
                    id=entry["id"], bit=entry["bit"], category=entry["category"],
                    format=entry["format"], counts=entry["counts"], extra=entry["extra"],
                )
                for entry in meta["lists"]
            )
        except (ValueError, KeyError, TypeError) as error:
            raise corrupt(f"unreadable metadata ({error})") from None
        built = tuple(_Table(view, *table) for table in tables)
        return cls(lists, meta, (built[0], built[1]), mapping, view, path)

    # -- looking up

    def lookup(self, name: str) -> int:
        """Mask of the lists that block `name` (a normalised name), after exceptions.

        Walks the suffixes from the most specific; an exception at a suffix clears its
        lists' bits for that suffix and every less specific one, so `@@||ok.example.com^`
        allows ok.example.com and below while `||example.com^` still blocks the rest.
        This is the hot path: everything it needs is bound to locals first.
        """
        hot = self._hot
        if hot is None:
            return 0
        keys, masks, fence, shift, exceptions = hot
        sha256, unpack, search = _sha256, _key_of_digest, bisect_left
        data = name.lower().encode()
        if data.endswith(b"."):
            data = data[:-1]
        result = cleared = 0
        while True:
            key = unpack(sha256(data).digest())[0]
            if exceptions is not None:
                cleared |= exceptions.mask(key)
            bucket = key >> shift
            high = fence[bucket + 1]
            i = search(keys, key, fence[bucket], high)
            if i < high and keys[i] == key:
                result |= masks[i] & ~cleared
            dot = data.find(b".")
            if dot < 0:
                return result
            data = data[dot + 1 :]

    def match(self, name: str) -> Match | None:
        """Which lists block `name` and at which suffix, or None if it is not blocked.

        For hashed (sha256) lists the suffix is withheld: those lists are published
        hashed so that their entries stay private, and an explanation must not undo that.
        """
        if not self._blocked.count:
            return None
        data = name.lower().encode()
        if data.endswith(b"."):
            data = data[:-1]
        exceptions = self._exceptions if self._exceptions.count else None
        result = cleared = 0
        first_suffix: dict[int, str] = {}
        start = 0
        while True:
            key = _key_of_digest(_sha256(data[start:]).digest())[0]
            if exceptions is not None:
                cleared |= exceptions.mask(key)
            found = self._blocked.mask(key) & ~cleared & ~result
            if found:
                suffix = data[start:].decode()
                for info in self.lists:
                    if found >> info.bit & 1:
                        first_suffix[info.bit] = suffix
                result |= found
            start = data.find(b".", start) + 1
            if not start:
                break
        if not result:
            return None
        hits = tuple(
            Hit(info, None if info.hashed else first_suffix[info.bit])
            for info in self.lists
            if result >> info.bit & 1
        )
        return Match(result, hits)

    # -- lifetime

    @property
    def blocked_keys(self) -> int:
        return self._blocked.count

    @property
    def exception_keys(self) -> int:
        return self._exceptions.count

    def close(self) -> None:
        """Unmap the file; lookups after this raise ValueError (never a silent "allowed")."""
        for table in (self._blocked, self._exceptions):
            table.release()
        self._hot = self._hot_state()
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None

    def __enter__(self) -> DomainIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

