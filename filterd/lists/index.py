"""The compiled block-list index: one file, mmapped read-only and shared by every worker.

Why this shape: a Pi Zero has 512 MB and lists reach millions of names, so the daemon must
not hold Python objects per domain, and the file must stay small (under 8 bytes a domain).
A name is looked up by walking its suffixes (`a.b.example.com`, `b.example.com`,
`example.com`, `com`), one search each in a bucket of a handful of entries, so the cost grows
with the number of labels, not with the size of the lists.

Keys are the first 8 bytes (big-endian) of SHA-256 of the normalised name. That is the same
key a "sha256" list gives us from its digests, so plain and hashed lists share one table
and a lookup computes one hash per suffix whatever the lists are; no list entry is ever
stored in clear.

Of a key only `bits + 32` bits are kept: its top `bits` choose a bucket (the fence maps a
bucket to its slice of the table; about 4-8 entries each) and its low 32 bits are the entry's
fingerprint, stored as a u32 (a lookup reads both from one struct unpack). Two names share a stored key with a chance of about
one in 2**(bits + 32) per lookup (below one in 10**15 for a million names). Beside each
fingerprint a u16 numbers the set of lists holding that name; the distinct sets (masks of
list bits) are a small table of their own. So an entry costs 4 + 2 bytes, plus 4 bytes of
fence per bucket: about 6.5-7 bytes a domain.

File layout (tables in native byte order, recorded in the header; a device compiles its
own index, so this is never a portability concern):

    header    128 bytes, see _HEADER
    table 0   blocked:    fence u32[2**bits + 1], fingerprints u32[n], mask ids u16[n],
                          masks u64[m] (each section 8-aligned)
    table 1   exceptions: same shape (adblock `@@` rules)
    metadata  JSON: format version, build time, one entry per list

Compiling streams (see `IndexBuilder`): lists are fed batch by batch, each key kept as 8
bytes in one of 256 arrays (its list number in bits 32-39, which the index drops anyway);
each array is then sorted and written in turn, so the peak is about 8 bytes a domain plus
one array's sort, never a Python object per domain.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import sys
import tempfile
import time
import zlib
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

from filterd.files import fsync_directory
from filterd.lists.domains import ParsedList

__all__ = [
    "MAX_LISTS",
    "CorruptIndexError",
    "DomainIndex",
    "Hit",
    "IndexBuilder",
    "IndexList",
    "IndexStats",
    "ListInfo",
    "Match",
    "compile_index",
    "digest_key",
    "domain_key",
]

MAX_LISTS = 64
FORMAT_VERSION = 2
_MAGIC = b"FLTRDIDX"
# magic, version, byte order (0 little / 1 big), crc32 of the file (this field as 0),
# file size, metadata offset and length, then per table: count, bucket bits, number of masks,
# and the offsets of fence, fingerprints, mask ids and masks.
_HEADER = struct.Struct("<8sIII4xQQQ" + "IIIIIII4x" * 2)
_HEADER_SIZE = 128
_TABLES = 2
_BUCKET_TARGET = 8
_MIN_BUCKET_BITS = 8            # a bucket never spans two of the compile's sort arrays
_MAX_BUCKET_BITS = 24           # bits 32-39 stay free for the list number while compiling
_SORT_BITS = 8                  # the compile sorts 256 arrays one at a time
_MAX_MASKS = 1 << 16
_FINGERPRINT = 0xFFFFFFFF
_sha256 = hashlib.sha256
_key_of_digest = struct.Struct(">Q").unpack_from
_halves_of_digest = struct.Struct(">II").unpack_from     # (top 32 bits, fingerprint)
_LIST_BITS = 0xFF << 32


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
    """Compile parsed lists into one index file at `path`, atomically (see IndexBuilder.write)."""
    if len(lists) > MAX_LISTS:
        raise ValueError(f"{len(lists)} lists given but an index holds at most {MAX_LISTS}: "
                         "merge lists of the same category or disable some")
    ids = [item.id for item in lists]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"list ids must be unique; repeated: {', '.join(duplicates)}")
    builder = IndexBuilder()
    for item in lists:
        parsed = item.parsed
        bit = builder.add_list(item.id, item.category, parsed.format, item.extra)
        builder.add(bit, parsed.domains, parsed.exceptions, parsed.digests)
        builder.finish_list(bit, parsed)
    return builder.write(path)


class _Keys:
    """Keys of one table while compiling: 8 bytes each, in 256 arrays by their top byte, the
    list's bit number in bits 32-39 (between the bucket bits and the fingerprint)."""

    def __init__(self) -> None:
        self.arrays: list[array | None] = [array("Q") for _ in range(1 << _SORT_BITS)]
        self._appends = [a.append for a in self.arrays]   # type: ignore[union-attr]
        self.count = 0

    def add_names(self, bit: int, names: Iterable[str]) -> None:
        appends, sha256, unpack = self._appends, _sha256, _key_of_digest
        clear, top = ~_LIST_BITS, 64 - _SORT_BITS
        count = 0
        for name in names:
            key = unpack(sha256(name.encode()).digest())[0]
            appends[key >> top](key & clear | bit << 32)
            count += 1
        self.count += count

    def add_digests(self, bit: int, digests: Iterable[bytes]) -> None:
        appends, unpack = self._appends, _key_of_digest
        clear, top = ~_LIST_BITS, 64 - _SORT_BITS
        count = 0
        for digest in digests:
            key = unpack(digest)[0]
            appends[key >> top](key & clear | bit << 32)
            count += 1
        self.count += count

    def table(self, spill_dir: Path) -> tuple[_Sections, Counter]:
        """Sort and merge the arrays one at a time (each freed once done) into the file's sections,
        and count the distinct keys of each list bit. Fingerprints and mask ids go to temporary
        files in `spill_dir` as they are made: only the fence and the masks stay in memory."""
        bits = _MIN_BUCKET_BITS
        while (self.count >> bits) > _BUCKET_TARGET and bits < _MAX_BUCKET_BITS:
            bits += 1
        top = 64 - bits
        sections = _Sections(bits, 0, array("I"), tempfile.TemporaryFile(dir=spill_dir),
                             tempfile.TemporaryFile(dir=spill_dir), array("Q"))
        try:
            per_bit = self._merge(sections, top)
        except BaseException:
            sections.close()
            raise
        return sections, per_bit

    def _merge(self, sections: _Sections, top: int) -> Counter:
        fingerprints = array("I")
        mask_ids = array("H")
        sizes = array("I", bytes(4 << sections.bits))
        ids: dict[int, int] = {}
        masks: list[int] = []
        per_mask: Counter = Counter()
        add_fingerprint, add_mask_id = fingerprints.append, mask_ids.append
        for number, keys in enumerate(self.arrays):
            # (bucket, fingerprint, list) in one int, so one sort orders the entries as stored;
            # a bucket never spans two arrays (bits ≥ _SORT_BITS), so neither does a run
            ordered = sorted([(t >> top) << 40 | (t & _FINGERPRINT) << 8 | (t >> 32 & 0xFF)
                              for t in keys])                 # type: ignore[union-attr]
            self.arrays[number] = None                        # free as we go
            ordered.append(-1 << 8)                           # stored as -1: ends the last run
            previous, mask = -1, 0
            for tagged in ordered:
                stored = tagged >> 8
                if stored == previous:
                    mask |= 1 << (tagged & 0xFF)
                    continue
                if previous >= 0:
                    add_fingerprint(previous & _FINGERPRINT)
                    mask_id = ids.get(mask)
                    if mask_id is None:
                        mask_id = ids[mask] = len(masks)
                        masks.append(mask)
                    add_mask_id(mask_id)
                    sizes[previous >> 32] += 1
                previous, mask = stored, 1 << (tagged & 0xFF)
            del ordered
            sections.fingerprints.write(fingerprints)
            sections.mask_ids.write(mask_ids)
            sections.count += len(fingerprints)
            per_mask.update(mask_ids)
            del fingerprints[:], mask_ids[:]
        if len(masks) > _MAX_MASKS:
            raise ValueError(f"{len(masks):,} different combinations of lists: an index holds at most "
                             f"{_MAX_MASKS:,}; merge some lists")
        sections.fence = array("I", accumulate(sizes, initial=0))
        sections.masks = array("Q", masks)
        per_bit: Counter = Counter()
        for mask_id, count in per_mask.items():
            value = masks[mask_id]
            while value:
                low = value & -value
                per_bit[low.bit_length() - 1] += count
                value ^= low
        return per_bit


@dataclass
class _Sections:
    """One table ready to write: fence and masks in memory, fingerprints and mask ids spilled."""

    bits: int
    count: int
    fence: array
    fingerprints: BinaryIO
    mask_ids: BinaryIO
    masks: array

    def close(self) -> None:
        self.fingerprints.close()
        self.mask_ids.close()


class IndexBuilder:
    """Compiles lists fed batch by batch (never a whole list in memory) into one index file.

        builder = IndexBuilder()
        bit = builder.add_list("ut1-adult", "adult", "domains", {"url": …})
        for domains, exceptions, digests in parser.batches(chunks):
            builder.add(bit, domains, exceptions, digests)
        builder.finish_list(bit, parser.parsed)
        builder.write(path)
    """

    def __init__(self) -> None:
        self._blocked = _Keys()
        self._exceptions = _Keys()
        self._entries: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._started = time.perf_counter()

    def check_list(self, list_id: str) -> None:
        """Refuse a list that could not be added (too many, or its id taken) before any work."""
        if len(self._ids) >= MAX_LISTS:
            raise ValueError(f"more than {MAX_LISTS} lists given but an index holds at most "
                             f"{MAX_LISTS}: merge lists of the same category or disable some")
        if list_id in self._ids:
            raise ValueError(f"list ids must be unique; repeated: {list_id}")

    def add_list(self, list_id: str, category: str, fmt: str, extra: dict[str, Any] | None = None) -> int:
        """Start a list; returns its bit in the masks."""
        self.check_list(list_id)
        self._ids.add(list_id)
        self._entries.append({"id": list_id, "bit": len(self._entries), "category": category,
                              "format": fmt, "counts": {}, "extra": dict(extra or {})})
        return len(self._entries) - 1

    def add(self, bit: int, domains: Iterable[str] = (), exceptions: Iterable[str] = (),
            digests: Iterable[bytes] = ()) -> None:
        self._blocked.add_names(bit, domains)
        self._blocked.add_digests(bit, digests)
        self._exceptions.add_names(bit, exceptions)

    def finish_list(self, bit: int, parsed: ParsedList) -> None:
        """Record what was read (lines, invalid lines, lines of each kind) for the metadata."""
        self._entries[bit]["counts"] = {"invalid": parsed.invalid, "lines": parsed.lines,
                                        "kinds": dict(parsed.kinds)}

    def write(self, path: Path) -> IndexStats:
        """Write the index at `path` atomically: beside it under a temporary name, fsynced and
        renamed over it. Readers see the old index or the new one, never half of one, and a
        failure at any point (metadata that is not JSON, a full disk) leaves the old file alone.
        """
        path = Path(path)
        _json(self._entries)      # refused before the long part, not after
        blocked, blocked_per_bit = self._blocked.table(path.parent)
        try:
            exceptions, exceptions_per_bit = self._exceptions.table(path.parent)
        except BaseException:
            blocked.close()
            raise
        try:
            return self._write(path, blocked, blocked_per_bit, exceptions, exceptions_per_bit)
        finally:
            blocked.close()
            exceptions.close()

    def _write(self, path: Path, blocked: _Sections, blocked_per_bit: Counter, exceptions: _Sections,
               exceptions_per_bit: Counter) -> IndexStats:
        for entry in self._entries:
            bit, counts = entry["bit"], entry["counts"]
            distinct = blocked_per_bit.get(bit, 0)
            hashed = entry["format"] == "sha256"
            counts.update(domains=0 if hashed else distinct, digests=distinct if hashed else 0,
                          exceptions=exceptions_per_bit.get(bit, 0))
            counts.setdefault("invalid", 0)
            counts.setdefault("lines", 0)
        meta = _json({
            "format_version": FORMAT_VERSION,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "lists": self._entries,
        })
        size = _write_atomically(path, (blocked, exceptions), meta)
        return IndexStats(
            path=path,
            lists=len(self._entries),
            blocked_keys=blocked.count,
            exception_keys=exceptions.count,
            size_bytes=size,
            elapsed_s=time.perf_counter() - self._started,
        )


def _json(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as error:
        raise ValueError(f"list metadata must be JSON-serialisable: {error}") from None


def _write_atomically(path: Path, tables: tuple[_Sections, ...], meta: bytes) -> int:
    directory = path.parent
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(bytes(_HEADER_SIZE))
            offset = _HEADER_SIZE
            crc = 0
            table_fields: list[int] = []
            for table in tables:
                placed = []
                for section in (table.fence, table.fingerprints, table.mask_ids, table.masks):
                    placed.append(offset)
                    if isinstance(section, array):
                        pieces: Iterable[Any] = (section,)
                    else:
                        section.seek(0)
                        pieces = iter(lambda section=section: section.read(1 << 20), b"")
                    for piece in pieces:
                        out.write(piece)
                        crc = zlib.crc32(piece, crc)
                        offset += len(piece) * getattr(piece, "itemsize", 1)
                    padding = -offset % 8
                    if padding:
                        out.write(bytes(padding))
                        crc = zlib.crc32(bytes(padding), crc)
                        offset += padding
                table_fields += [table.count, table.bits, len(table.masks), *placed]
            out.write(meta)
            crc = zlib.crc32(meta, crc)
            size = offset + len(meta)
            if size >= 1 << 32:
                raise ValueError("the index would pass 4 GiB: too many lists")
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
    """One table viewed straight from the mapping (fence, fingerprints, mask ids); the few
    distinct masks are read into a tuple."""

    __slots__ = ("count", "shift", "fence", "fingerprints", "mask_ids", "masks")  # shift: of the top half

    def __init__(self, view: memoryview | None, count: int, bits: int, mask_count: int,
                 fence_at: int, fingerprints_at: int, mask_ids_at: int, masks_at: int) -> None:
        self.count = count
        self.shift = 32 - bits
        if view is None or count == 0:
            self.fence = self.fingerprints = self.mask_ids = None
            self.masks: tuple[int, ...] = ()
            return
        self.fence = view[fence_at : fence_at + 4 * ((1 << bits) + 1)].cast("I")
        self.fingerprints = view[fingerprints_at : fingerprints_at + 4 * count].cast("I")
        self.mask_ids = view[mask_ids_at : mask_ids_at + 2 * count].cast("H")
        self.masks = tuple(view[masks_at : masks_at + 8 * mask_count].cast("Q"))

    def mask(self, key: int) -> int:
        """Mask of the lists holding the 64-bit `key` (0: none)."""
        return self.mask_of(key >> 32, key & _FINGERPRINT)

    def mask_of(self, top: int, fingerprint: int) -> int:
        bucket = top >> self.shift
        high = self.fence[bucket + 1]
        i = bisect_left(self.fingerprints, fingerprint, self.fence[bucket], high)
        if i < high and self.fingerprints[i] == fingerprint:
            return self.masks[self.mask_ids[i]]
        return 0

    def release(self) -> None:
        """Let go of the mapping; any later lookup raises instead of answering "allowed"."""
        for view in (self.fence, self.fingerprints, self.mask_ids):
            if isinstance(view, memoryview):
                view.release()
        self.fence = self.fingerprints = self.mask_ids = _CLOSED
        self.count = max(self.count, 1)
        self.shift = 32


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

    def _hot_state(self) -> tuple[Any, Any, Any, Any, int, _Table | None] | None:
        blocked = self._blocked
        if not blocked.count:
            return None
        exceptions = self._exceptions if self._exceptions.count else None
        return (blocked.fingerprints, blocked.mask_ids, blocked.masks, blocked.fence, blocked.shift,
                exceptions)

    # -- opening

    @classmethod
    def empty(cls) -> DomainIndex:
        """An index of no lists: every lookup answers 0."""
        tables = (_Table(None, 0, 0, 0, 0, 0, 0, 0), _Table(None, 0, 0, 0, 0, 0, 0, 0))
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
            count, bits, mask_count, fence_at, fingerprints_at, mask_ids_at, masks_at = \
                fields[7 + 7 * n : 14 + 7 * n]
            fence_len = 4 * ((1 << bits) + 1) if bits <= _MAX_BUCKET_BITS else -1
            end = meta_at if n == _TABLES - 1 else fields[14 + 7 * n + 3]
            if (
                fence_len < 0 or mask_count > _MAX_MASKS
                or fence_at % 8 or fingerprints_at % 8 or mask_ids_at % 8 or masks_at % 8
                or fence_at < _HEADER_SIZE
                or fence_at + fence_len > fingerprints_at
                or fingerprints_at + 4 * count > mask_ids_at
                or mask_ids_at + 2 * count > masks_at
                or masks_at + 8 * mask_count > min(end, meta_at)
            ):
                raise corrupt("inconsistent header (table out of place)")
            tables.append((count, bits, mask_count, fence_at, fingerprints_at, mask_ids_at, masks_at))
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
        fingerprints, mask_ids, masks, fence, shift, exceptions = hot
        sha256, halves, search = _sha256, _halves_of_digest, bisect_left
        data = name.lower().encode()
        if data.endswith(b"."):
            data = data[:-1]
        result = cleared = 0
        while True:
            top, fingerprint = halves(sha256(data).digest())
            if exceptions is not None:
                cleared |= exceptions.mask_of(top, fingerprint)
            bucket = top >> shift
            high = fence[bucket + 1]
            i = search(fingerprints, fingerprint, fence[bucket], high)
            if i < high and fingerprints[i] == fingerprint:
                result |= masks[mask_ids[i]] & ~cleared
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

