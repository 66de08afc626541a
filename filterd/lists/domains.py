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
    "MAX_LINE_BYTES",
    "ParsedList",
    "detect_format",
    "normalise_domain",
    "parse_list",
]

FORMATS = ("hosts", "domains", "adblock", "sha256")
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

    def skip(self, lineno: int, text: str) -> None:
        """Count one invalid line, keeping the first few for the summary."""
        self.invalid += 1
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


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _shorten(text: str) -> str:
    text = text.strip()
    if len(text) > _SAMPLE_CHARS:
        return text[: _SAMPLE_CHARS - 1] + "…"
    return text


def parse_list(data: bytes | str, fmt: str | None = None) -> ParsedList:
    """Parse a list in any supported format (detected from its first lines if not given)."""
    raw = _as_bytes(data)
    if fmt is None:
        fmt = detect_format(raw)
    elif fmt not in FORMATS:
        raise ValueError(f"unknown list format {fmt!r}: expected one of {', '.join(FORMATS)}")
    parsed = ParsedList(format=fmt)
    parse_lines = _PARSERS[fmt]
    for first_lineno, lines in _line_chunks(raw, parsed):
        parse_lines(lines, first_lineno, parsed)
    return parsed


def _as_bytes(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data


def _line_chunks(data: bytes, parsed: ParsedList) -> Iterator[tuple[int, list[str]]]:
    """Yield (number of the first line, decoded lines) about a megabyte at a time.

    Lines longer than MAX_LINE_BYTES that would not fit a chunk are counted invalid here
    without being decoded; undecodable bytes become lone surrogates, which no parser
    accepts, so such a line is invalid rather than a crash.
    """
    size = len(data)
    lineno = 1
    pos = 0
    while pos < size:
        end = min(pos + _CHUNK_BYTES, size)
        if end < size:
            cut = data.rfind(b"\n", pos, end)
            if cut < 0:  # one line longer than a whole chunk
                stop = data.find(b"\n", pos)
                stop = size if stop < 0 else stop
                head = data[pos : pos + 30].decode("utf-8", "replace")
                parsed.skip(lineno, f"{head}… ({stop - pos:,} bytes)")
                lineno += 1
                parsed.lines += 1
                pos = stop + 1
                continue
            end = cut + 1
        chunk = data[pos:end].decode("utf-8", "surrogateescape").split("\n")
        if chunk[-1] == "":
            chunk.pop()
        yield lineno, chunk
        lineno += len(chunk)
        parsed.lines += len(chunk)
        pos = end


def _too_long(line: str) -> bool:
    return len(line) > MAX_LINE_BYTES // 4 and len(
        line.encode("utf-8", "surrogateescape")
    ) > MAX_LINE_BYTES


def _printable(line: str) -> str:
    """A line for display: undecodable bytes shown as U+FFFD."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _parse_domains(lines: list[str], lineno: int, parsed: ParsedList) -> None:
    """One domain per line; '#' comments, whole-line or after whitespace."""
    add = parsed.domains.add
    valid = _valid_ascii_name
    for line in lines:
        text = line.strip()
        if not text or text[0] == "#":
            lineno += 1
            continue
        # Fast path, inlined: plain lowercase-able ASCII name without trailing dot.
        if text.isascii() and len(text) <= _MAX_NAME:
            name = text.lower()
            if valid(name):
                add(name)
                lineno += 1
                continue
        if not _too_long(line):
            found = _inline_comment.search(text)
            if found:
                text = text[: found.start()]
            name = normalise_domain(text)
            if name is not None:
                add(name)
                lineno += 1
                continue
        parsed.skip(lineno, _printable(line))
        lineno += 1


def _is_ip(text: str) -> bool:
    if text in _COMMON_SINKS:
        return True
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _parse_hosts(lines: list[str], lineno: int, parsed: ParsedList) -> None:
    """`ADDRESS name [name…]`; loopback names are ignored, a bad name spoils its line."""
    add = parsed.domains.add
    for line in lines:
        text = line.strip()
        if not text or text[0] == "#":
            lineno += 1
            continue
        if _too_long(line):
            parsed.skip(lineno, _printable(line))
            lineno += 1
            continue
        hash_at = text.find("#")
        if hash_at >= 0:
            text = text[:hash_at]
        fields = text.split()
        ok = len(fields) >= 2 and _is_ip(fields[0])
        if ok:
            for word in fields[1:]:
                if word in HOSTS_IGNORED:
                    continue
                name = normalise_domain(word)
                if name is None:
                    ok = False
                elif name not in HOSTS_IGNORED:
                    add(name)
        if not ok:
            parsed.skip(lineno, _printable(line))
        lineno += 1


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


def _parse_adblock(lines: list[str], lineno: int, parsed: ParsedList) -> None:
    """`||domain^` rules and `@@||domain^` exceptions; anything narrower is invalid."""
    for line in lines:
        text = line.strip()
        if (
            not text
            or text[0] == "!"
            or (text[0] == "[" and text[-1] == "]")
            or (text[0] == "#" and not text.startswith(_COSMETIC))
        ):
            lineno += 1
            continue
        rule = None if _too_long(line) else _adblock_rule(text)
        if rule is None:
            parsed.skip(lineno, _printable(line))
        elif rule[1]:
            parsed.exceptions.add(rule[0])
        else:
            parsed.domains.add(rule[0])
        lineno += 1


def _parse_sha256(lines: list[str], lineno: int, parsed: ParsedList) -> None:
    """One hex SHA-256 digest of a normalised domain per line; '#' comments."""
    add = parsed.digests.add
    for line in lines:
        text = line.strip()
        if not text or text[0] == "#":
            lineno += 1
            continue
        hash_at = text.find("#")
        if hash_at >= 0:
            text = text[:hash_at].rstrip()
        if len(text) == 64 and _hex_digest(text):
            add(bytes.fromhex(text))
        else:
            parsed.skip(lineno, _printable(line))
        lineno += 1


_PARSERS = {
    "domains": _parse_domains,
    "hosts": _parse_hosts,
    "adblock": _parse_adblock,
    "sha256": _parse_sha256,
}

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
