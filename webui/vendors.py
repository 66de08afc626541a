"""Who made a device, from its MAC address: the IEEE's registry of address blocks, as Debian's
`ieee-data` package installs it (a Recommends of the package; absent, no maker is shown).

A parent tells "New device at 192.168.1.74" from the printer by "made by Nintendo". The registry
is a 3 MB CSV: it is scanned (not loaded) for the prefixes a page needs, and the answers kept,
so the web UI's memory does not grow by the registry's 35,000 entries.
"""
from __future__ import annotations

import csv
import threading
from pathlib import Path

# MA-L (24-bit prefixes), then MA-M (28-bit) and MA-S (36-bit) blocks carved out of some of them.
REGISTRIES = (("oui.csv", 6), ("mam.csv", 7), ("oui36.csv", 9))
DEFAULT_FOLDER = Path("/usr/share/ieee-data")
MAX_REMEMBERED = 4096
NOT_A_MAKER = {"IEEE Registration Authority", "Private"}    # a block sold on in smaller pieces, or hidden

_known: dict[str, str | None] = {}
_lock = threading.Lock()


def _hex(mac: str) -> str:
    return "".join(c for c in mac.upper() if c in "0123456789ABCDEF")


def makers(macs, folder: Path = DEFAULT_FOLDER) -> dict[str, str]:
    """MAC → the maker registered for its block, for the MACs found in the registry. Private
    (random) addresses have no maker and are skipped."""
    wanted = {mac: _hex(mac) for mac in macs if mac and len(_hex(mac)) == 12 and not int(_hex(mac)[1], 16) & 2}
    with _lock:
        missing = {digits for digits in wanted.values() if digits not in _known}
        if missing:
            _scan(missing, folder)
        return {mac: _known[digits] for mac, digits in wanted.items() if _known.get(digits)}


def _scan(missing: set[str], folder: Path) -> None:
    """Find the longest registered block of each MAC in `missing` (most specific wins)."""
    found: dict[str, str] = {}
    for name, length in REGISTRIES:
        prefixes = {digits[:length]: digits for digits in missing}
        path = folder / name
        try:
            with path.open(encoding="utf-8", errors="replace", newline="") as handle:
                for row in csv.reader(line for line in handle if line[5:5 + length] in prefixes):
                    if len(row) >= 3 and row[1] in prefixes and row[2].strip() not in NOT_A_MAKER:
                        found[prefixes[row[1]]] = row[2].strip()
        except OSError:
            continue
    if len(_known) + len(missing) > MAX_REMEMBERED:
        _known.clear()
    for digits in missing:
        _known[digits] = found.get(digits)
