"""Normalising domain names and reading block-list formats.

Everything here is pure: the caller hands over the bytes of a list, we hand back names.
Lists are untrusted and sometimes huge, so a bad line is counted and skipped, never
fatal, and no line can make the parser slow or hungry (lines over 4096 bytes are skipped
without being decoded; input is processed in bounded chunks).

Names come out in one canonical form, the one the index is keyed on and DNS queries
arrive in: lowercase ASCII, IDN labels as punycode A-labels, no trailing dot.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

try:  # IDNA 2008 + UTS 46, what browsers send; the stdlib codec (IDNA 2003) is the fallback.
    import idna as _idna
except ImportError:  # pragma: no cover - depends on the environment
    _idna = None
import encodings.idna as _idna2003

__all__ = [
    "FORMATS",
    "LINE_KINDS",
    "LIST_ID",
    "LineParser",
    "describe_kinds",
    "MAX_LINE_BYTES",
    "ParsedList",
    "detect_format",
    "normalise_domain",
    "parse_list",
]

# The list formats a `format:` may name (the one definition: config, catalog and parser use it).
FORMATS = ("hosts", "domains", "adblock", "sha256")
# A list's id, in the config and the catalog: also its file name in data_dir/lists.
LIST_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_LINE_BYTES = 4096
_MAX_NAME = 253
_SAMPLES = 5
_SAMPLE_CHARS = 60
_CHUNK_BYTES = 1 << 20

# Labels of 1-63 of [a-z0-9_-]; the last label must not be all digits (that is an IPv4
# address, or a bare number, never a registrable name).
_valid_ascii_name = re.compile(
    r"(?:[a-z0-9_-]{1,63}\.)*(?=[0-9]*[a-z_-])[a-z0-9_-]{1,63}"
).fullmatch
_hex_digest = re.compile(r"[0-9a-fA-F]{64}").fullmatch
_inline_comment = re.compile(r"\s#")
_idn_dots = re.compile("[.\u3002\uff0e\uff61]")

# Names every stock hosts file maps to loopback: present in block lists, never blocked.
HOSTS_IGNORED = frozenset({
    "localhost", "localhost.localdomain", "local", "broadcasthost", "0.0.0.0",  # nosec B104
    "ip6-localhost", "ip6-loopback", "ip6-localnet", "ip6-mcastprefix",
    "ip6-allnodes", "ip6-allrouters", "ip6-allhosts",
})
_COMMON_SINKS = frozenset({"0.0.0.0", "127.0.0.1", "::", "::1", "::0", "0"})  # nosec B104
# Adblock options that do not narrow a rule, so it still means "block this domain".
_HARMLESS_OPTIONS = frozenset({"important", "all", "document"})
_COSMETIC = ("##", "#@#", "#?#", "#$#", "#%#")


def normalise_domain(text: str) -> str | None:
    """The canonical form of a domain name, or None if it is not one.

    Plain ASCII names (nearly every line of every list) take a single regex; only
    names with non-ASCII characters pay for IDNA processing.
    """
    name = text.strip()
    if not name.isascii():
        name = _to_ascii(name)
        if name is None:
            return None
    else:
        name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if len(name) > _MAX_NAME or not _valid_ascii_name(name):
        return None
    return name


def _to_ascii(name: str) -> str | None:
    """IDN → A-labels, label by label, so underscores and hyphens in ASCII labels survive."""
    try:
        if _idna is not None:
            mapped = _idna.uts46_remap(name, std3_rules=False, transitional=False)
            labels = mapped.split(".")
            return ".".join(
                label if label.isascii() else _idna.alabel(label).decode("ascii")
                for label in labels
            )
        labels = _idn_dots.split(name)
        return ".".join(
            label.lower() if label.isascii() else _idna2003.ToASCII(label).decode("ascii")
            for label in labels
        )
    except (UnicodeError, ValueError):
        return None


# The kinds of line a list can hold, as `ParsedList.kinds` counts them; every line is read on
# its own, whatever the list's `format:` says, so a file mixing plain domains and hosts lines
# loses nothing (the format is a hint: "sha256" accepts digests only, so a protected list
# never takes a name in clear).
LINE_KINDS = ("domain", "hosts", "adblock", "exception", "sha256", "comment", "invalid")
_KIND_WORDS = {"domain": ("plain-domain line", "plain-domain lines"),
               "hosts": ("hosts line", "hosts lines"),
               "adblock": ("adblock rule", "adblock rules"),
               "exception": ("adblock exception", "adblock exceptions"),
               "sha256": ("hashed line", "hashed lines"),
               "comment": ("comment or blank line", "comment or blank lines"),
               "invalid": ("invalid line", "invalid lines")}


@dataclass
class ParsedList:
    """What one list file held, with enough about its bad lines to show a parent."""

    format: str
    domains: set[str] = field(default_factory=set)
    exceptions: set[str] = field(default_factory=set)
    digests: set[bytes] = field(default_factory=set)
    invalid: int = 0
    invalid_samples: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LINE_KINDS, 0))

    def skip(self, lineno: int, text: str) -> None:
        """Count one invalid line, keeping the first few for the summary."""
        self.invalid += 1
        self.kinds["invalid"] += 1
        if len(self.invalid_samples) < _SAMPLES:
            self.invalid_samples.append((lineno, _shorten(text)))

    def summary(self) -> str:
        """One line, e.g. "41,233 domains, 12 invalid lines skipped (e.g. line 7: 'a b')"."""
        if self.format == "sha256":
            parts = [_count(len(self.digests), "hashed domain")]
        else:
            parts = [_count(len(self.domains), "domain")]
        if self.exceptions:
            parts.append(_count(len(self.exceptions), "exception"))
        if self.invalid:
            skipped = f"{_count(self.invalid, 'invalid line')} skipped"
            if self.invalid_samples:
                lineno, text = self.invalid_samples[0]
                skipped += f" (e.g. line {lineno}: {text!r})"
            parts.append(skipped)
        else:
            parts.append("no invalid lines")
        return ", ".join(parts)


def describe_kinds(kinds: dict[str, int]) -> str:
    """Lines read by kind, e.g. "41,200 plain-domain lines, 33 hosts lines, 2 invalid lines".

    Counts only: a downloaded file's content is never shown back (it may not be a list at all).
    """
    parts = []
    for kind in LINE_KINDS:
        number = kinds.get(kind, 0)
        if number:
            singular, plural = _KIND_WORDS[kind]
            parts.append(f"{number:,} {singular if number == 1 else plural}")
    return ", ".join(parts) or "no lines"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _shorten(text: str) -> str:
    text = text.strip()
    if len(text) > _SAMPLE_CHARS:
        return text[: _SAMPLE_CHARS - 1] + "…"
    return text


def parse_list(data: bytes | str, fmt: str | None = None) -> ParsedList:
    """Parse a whole list held in memory (small lists, tests); see `LineParser` for streaming.

    `fmt` is a hint (detected from the first lines if not given); every line is read on its own.
    """
    raw = _as_bytes(data)
    if fmt is None:
        fmt = detect_format(raw)
    parser = LineParser(fmt)
    parsed = parser.parsed
    for domains, exceptions, digests in parser.batches(iter((raw,))):
        parsed.domains.update(domains)
        parsed.exceptions.update(exceptions)
        parsed.digests.update(digests)
    return parsed


def _as_bytes(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data


Batch = tuple[list[str], list[str], list[bytes]]


class LineParser:
    """Reads a list as a stream of byte chunks, about a megabyte of lines at a time, and hands
    back (domains, exceptions, digests) per batch: memory stays bounded whatever the list's size.

    Each line is classified on its own: a domain, a hosts line (`ADDRESS name…`), an adblock
    rule (`||name^`, `@@||name^`), a SHA-256 digest, a comment or blank, or invalid. Counts by
    kind, the line count and the first few invalid lines are kept in `parsed` (its sets stay
    empty: the caller consumes the batches).
    """

    def __init__(self, fmt: str | None = None):
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"unknown list format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.parsed = ParsedList(format=fmt or "domains")
        self._hashed_only = fmt == "sha256"

    def batches(self, chunks: Iterator[bytes]) -> Iterator[Batch]:
        """Parse the bytes `chunks` yield (any sizes; lines may cross them), batch by batch."""
        for first_lineno, lines in _line_chunks(chunks, self.parsed):
            yield self.parse_lines(lines, first_lineno)

    def parse_lines(self, lines: list[str], lineno: int) -> Batch:
        parsed = self.parsed
        kinds = parsed.kinds
        domains: list[str] = []
        exceptions: list[str] = []
        digests: list[bytes] = []
        add = domains.append
        valid = _valid_ascii_name
        plain = hosts = comments = 0
        hashed_only = self._hashed_only
        for line in lines:
            text = line.strip()
            if not text:
                comments += 1
                lineno += 1
                continue
            first = text[0]
            if first == "#":
                if text.startswith(_COSMETIC):
                    parsed.skip(lineno, _printable(line))
                else:
                    comments += 1
                lineno += 1
                continue
            if first == "!" or (first == "[" and text[-1] == "]"):
                comments += 1
                lineno += 1
                continue
            if hashed_only:
                self._digest(text, line, lineno, digests)
                lineno += 1
                continue
            # The common case, inlined: one plain ASCII name.
            if text.isascii() and len(text) <= _MAX_NAME:
                name = text.lower()
                if valid(name):
                    add(name)
                    plain += 1
                    lineno += 1
                    continue
            if _too_long(line):
                parsed.skip(lineno, _printable(line))
            elif first == "|" or first == "@":
                rule = _adblock_rule(text)
                if rule is None:
                    parsed.skip(lineno, _printable(line))
                elif rule[1]:
                    exceptions.append(rule[0])
                    kinds["exception"] += 1
                else:
                    add(rule[0])
                    kinds["adblock"] += 1
            elif len(text) == 64 and _hex_digest(text):
                digests.append(bytes.fromhex(text))
                kinds["sha256"] += 1
            else:
                body = text.split("#", 1)[0]
                fields = body.split()
                if len(fields) >= 2 and _is_ip(fields[0]):
                    if _hosts_line(fields, add):
                        hosts += 1
                    else:
                        parsed.skip(lineno, _printable(line))
                else:
                    found = _inline_comment.search(text)
                    name = normalise_domain(text[: found.start()] if found else text)
                    if name is None and text.endswith("^"):
                        rule = _adblock_rule(text)
                        name = rule[0] if rule and not rule[1] else None
                    if name is None:
                        parsed.skip(lineno, _printable(line))
                    else:
                        add(name)
                        plain += 1
            lineno += 1
        kinds["domain"] += plain
        kinds["hosts"] += hosts
        kinds["comment"] += comments
        return domains, exceptions, digests

    def _digest(self, text: str, line: str, lineno: int, digests: list[bytes]) -> None:
        hash_at = text.find("#")
        if hash_at >= 0:
            text = text[:hash_at].rstrip()
        if len(text) == 64 and _hex_digest(text):
            digests.append(bytes.fromhex(text))
            self.parsed.kinds["sha256"] += 1
        else:
            self.parsed.skip(lineno, _printable(line))


def _hosts_line(fields: list[str], add) -> bool:
    """Add a hosts line's names; False if one of them is no name (the line counts invalid,
    its good names are still taken)."""
    ok = True
    for word in fields[1:]:
        if word in HOSTS_IGNORED:
            continue
        name = word.lower()
        if not (len(name) <= _MAX_NAME and _valid_ascii_name(name)):
            name = normalise_domain(word)
        if name is None:
            ok = False
        elif name not in HOSTS_IGNORED:
            add(name)
    return ok


def _line_chunks(chunks: Iterator[bytes], parsed: ParsedList) -> Iterator[tuple[int, list[str]]]:
    """Yield (number of the first line, decoded lines) about a megabyte at a time.

    Lines longer than MAX_LINE_BYTES that would not fit a chunk are counted invalid here
    without being kept whole; undecodable bytes become lone surrogates, which no parser
    accepts, so such a line is invalid rather than a crash. A BOM at the start is dropped.
    """
    lineno = 1
    pending = b""
    started = False
    skipping: tuple[int, bytes, int] | None = None   # (line number, head, bytes so far) of a huge line
    for chunk in chunks:
        if not chunk:
            continue
        if not started:
            started = True
            chunk = chunk[3:] if chunk.startswith(b"\xef\xbb\xbf") else chunk
        if skipping is not None:
            cut = chunk.find(b"\n")
            if cut < 0:
                skipping = (skipping[0], skipping[1], skipping[2] + len(chunk))
                continue
            _skip_huge(parsed, skipping[0], skipping[1], skipping[2] + cut)
            skipping = None
            lineno += 1
            chunk = chunk[cut + 1:]
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > _CHUNK_BYTES:
                skipping = (lineno, data[:30], len(data))
                pending = b""
            else:
                pending = data
            continue
        pending = data[cut + 1:]
        body = data[: cut + 1]
        start = 0
        while start < len(body):               # one read may bring many megabytes
            end = len(body)
            if end - start > _CHUNK_BYTES:
                end = body.rfind(b"\n", start, start + _CHUNK_BYTES) + 1
                if end <= start:               # a line longer than a whole chunk
                    end = body.find(b"\n", start) + 1
                    _skip_huge(parsed, lineno, body[start:start + 30], end - 1 - start)
                    lineno += 1
                    start = end
                    continue
            lines = body[start:end].decode("utf-8", "surrogateescape").split("\n")
            lines.pop()                        # after the last newline
            yield lineno, lines
            lineno += len(lines)
            parsed.lines += len(lines)
            start = end
        if len(pending) > _CHUNK_BYTES:
            skipping = (lineno, pending[:30], len(pending))
            pending = b""
    if skipping is not None:
        _skip_huge(parsed, skipping[0], skipping[1], skipping[2])
    elif pending:
        lines = [pending.decode("utf-8", "surrogateescape")]
        yield lineno, lines
        parsed.lines += 1


def _skip_huge(parsed: ParsedList, lineno: int, head: bytes, size: int) -> None:
    parsed.skip(lineno, f"{head.decode('utf-8', 'replace')}… ({size:,} bytes)")
    parsed.lines += 1


def _too_long(line: str) -> bool:
    return len(line) > MAX_LINE_BYTES // 4 and len(
        line.encode("utf-8", "surrogateescape")
    ) > MAX_LINE_BYTES


def _printable(line: str) -> str:
    """A line for display: undecodable bytes shown as U+FFFD."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _is_ip(text: str) -> bool:
    if text in _COMMON_SINKS:
        return True
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _adblock_rule(text: str) -> tuple[str, bool] | None:
    """(domain, is_exception) for a rule meaning exactly "this domain and below"."""
    exception = text.startswith("@@")
    if exception:
        text = text[2:]
    if text.startswith("||"):
        body, _, options = text[2:].partition("$")
        if options and not set(options.split(",")) <= _HARMLESS_OPTIONS:
            return None
        if body.endswith("^|"):
            body = body[:-1]
        if not body.endswith("^"):
            return None
        name = normalise_domain(body[:-1])
    else:  # a bare domain line, as many DNS-oriented adblock lists mix in
        name = normalise_domain(text)
    return None if name is None else (name, exception)


_DETECT_BYTES = 64 * 1024
_DETECT_LINES = 100


def detect_format(data: bytes | str) -> str:
    """Guess a list's format from its first rule lines (majority vote; "domains" if unsure)."""
    head = _as_bytes(data[:_DETECT_BYTES])
    votes: Counter[str] = Counter()
    bang_comments = 0
    for line in head.decode("utf-8", "replace").splitlines()[:1000]:
        text = line.strip()
        if not text:
            continue
        if text.startswith(("[Adblock", "[AdGuard", "[uBlock")):
            return "adblock"
        if text[0] == "!":
            bang_comments += 1
            continue
        if text[0] == "#" and not text.startswith(_COSMETIC):
            continue
        vote = _vote(text)
        if vote:
            votes[vote] += 1
        if sum(votes.values()) >= _DETECT_LINES:
            break
    if not votes:
        return "adblock" if bang_comments else "domains"
    best = max(votes.values())
    for fmt in ("adblock", "domains", "hosts", "sha256"):  # ties: the most forgiving
        if votes[fmt] == best:
            return fmt
    raise AssertionError("unreachable")


def _vote(text: str) -> str | None:
    if not text.startswith(_COSMETIC):
        text = text.split("#", 1)[0].strip()
    if not text:
        return None
    if _hex_digest(text):
        return "sha256"
    if text.startswith(("||", "@@", "|")) or "^" in text or "##" in text:
        return "adblock"
    fields = text.split()
    if len(fields) >= 2 and _is_ip(fields[0]):
        return "hosts"
    return "domains"
