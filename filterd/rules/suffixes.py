"""Public suffixes: names under which anyone may register a site (com, co.uk, github.io,
blogspot.com…). An allow entry `com` would let every site through; a block entry `co.uk`
would block a whole country's sites. Both are refused everywhere a parent types a name.

The Public Suffix List comes from a package, never from the network: Debian's `publicsuffix`
(/usr/share/publicsuffix/public_suffix_list.dat, which the .deb depends on) when installed, else
the snapshot bundled with the `publicsuffix2` wheel. Both sections count (ICANN's and the
private domains such as github.io), and the list's own algorithm applies: wildcard rules
(`*.ck`), exceptions (`!www.ck`) and the implicit `*` (any single label is a top-level domain).
"""
from __future__ import annotations

import bisect
import functools
import hashlib
from array import array
from pathlib import Path

from filterd.lists.domains import normalise_domain

SYSTEM_LIST = Path("/usr/share/publicsuffix/public_suffix_list.dat")


class SuffixListMissing(RuntimeError):
    """Neither Debian's publicsuffix package nor the publicsuffix2 library is installed."""


def list_path() -> Path:
    if SYSTEM_LIST.is_file():
        return SYSTEM_LIST
    try:
        import publicsuffix2
    except ImportError:
        raise SuffixListMissing("no Public Suffix List: install Debian's publicsuffix package or "
                                "`pip install publicsuffix2`") from None
    return Path(publicsuffix2.__file__).with_name("public_suffix_list.dat")


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@functools.lru_cache(maxsize=1)
def _rules() -> tuple[array, array, array]:
    """(plain rules, parents of wildcard rules, exceptions) as sorted arrays of 64-bit hashes of
    their ASCII names: ~80 KB for the whole list instead of ~1.5 MB of strings (the daemon on a
    Pi Zero keeps it), looked up by binary search."""
    plain, wildcards, exceptions = [], [], []
    with open(list_path(), encoding="utf-8") as handle:
        for line in handle:
            rule = line.strip().split(" ", 1)[0]
            if not rule or rule.startswith("//"):
                continue
            target = plain
            if rule.startswith("!"):
                target, rule = exceptions, rule[1:]
            elif rule.startswith("*."):
                target, rule = wildcards, rule[2:]
            name = normalise_domain(rule)
            if name:
                target.append(_hash(name))
    return tuple(array("q", sorted(set(hashes))) for hashes in (plain, wildcards, exceptions))


def _holds(hashes: array, name: str) -> bool:
    value = _hash(name)
    at = bisect.bisect_left(hashes, value)
    return at < len(hashes) and hashes[at] == value


def is_public_suffix(domain: str) -> bool:
    """Whether `domain` (normalised, ASCII) is itself a public suffix."""
    if "." not in domain:
        return True                        # the list's implicit rule: every top-level domain
    plain, wildcards, exceptions = _rules()
    if _holds(plain, domain):
        return True
    return _holds(wildcards, domain.split(".", 1)[1]) and not _holds(exceptions, domain)


def registrable(domain: str) -> str:
    """The part of `domain` a person registered: one label under its longest public suffix
    (www.bbc.co.uk → bbc.co.uk, i.redd.it → redd.it); a public suffix itself is returned as is."""
    labels = domain.split(".")
    for start in range(len(labels)):        # longest suffix first
        if is_public_suffix(".".join(labels[start:])):
            return ".".join(labels[max(start - 1, 0):])
    return domain


def problem(domain: str, what: str = "allow") -> str | None:
    """One line for a parent when `domain` is a public suffix, else None."""
    if not is_public_suffix(domain):
        return None
    effect = "every site under it would be let through" if what == "allow" else "every site under it would be blocked"
    return (f'"{domain}" is a public suffix that many unrelated sites share (like com or co.uk): {effect}. '
            f"Name the site itself, e.g. example.{domain}")
