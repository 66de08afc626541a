"""Reading YAML a person wrote, and checking it, with every problem pointing at its line.

The config (`config.py` and the sections it hands out) and the shipped catalogs
(`catalog.py`) are both files someone edits by hand: each mistake is reported with its YAML
path and line, and a wrong value is quoted the same way everywhere. One reader and one
`Checker` keep those messages alike, whichever file they come from.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import yaml


class ConfigError(Exception):
    """One or more problems in a config file; `problems` lists them as lines."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class YamlSyntaxError(ValueError):
    """The text is not YAML; the message is one line: `not valid YAML (line 3, column 5): …`."""


def parse_yaml(text: str, loader: type = yaml.SafeLoader) -> tuple[Any, dict[str, int]] | None:
    """YAML text → (plain data, YAML path → line number); None when the text holds no document.

    `loader` only composes the node tree: libyaml's `CSafeLoader` is faster where installed.
    Raises YamlSyntaxError for text that does not parse.
    """
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise YamlSyntaxError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if node is None:
        return None
    lines: dict[str, int] = {}
    return _to_python(node, "", lines), lines


def _to_python(node: yaml.Node, path: str, lines: dict[str, int]) -> Any:
    """Plain data from a node tree, noting the line of every node by its YAML path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        key_lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            if key in out:
                # YAML loaders keep the last one silently: a second `profiles:` would drop the first.
                where = f"{path}.{key}" if path else str(key)
                mark = key_node.start_mark
                raise YamlSyntaxError(f"not valid YAML (line {mark.line + 1}, column {mark.column + 1}): "
                                      f"{where} is written twice (first on line {key_lines[key]})")
            key_lines[key] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, f"{path}.{key}" if path else str(key), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, f"{path}[{i}]", lines) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def show(value: Any) -> str:
    """A value as an error message quotes it: a string in double quotes, a mapping or a list by
    its kind (its contents could be long), anything else as Python writes it."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def did_you_mean(text: str, known) -> str:
    """' (did you mean "gambling"?)' for a near miss of a known name, else ''."""
    import difflib

    close = difflib.get_close_matches(str(text).lower(), [str(k) for k in known], n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


def by_line(problems: list[str]) -> list[str]:
    """Problems in the order of the file's lines (those without a line first, as they came)."""
    import re

    def line_of(problem: str) -> int:
        match = re.search(r"\(line (\d+)\)$", problem)
        return int(match.group(1)) if match else 0
    return sorted(problems, key=line_of)


class Checker:
    """Collects problems while reading a section; each problem carries its YAML path and line."""

    prefix = ""        # put before every problem (a subclass names its file there)

    def __init__(self, lines: dict[str, int]):
        self.lines = lines
        self.problems: list[str] = []

    def error(self, path: str, message: str) -> None:
        line = self.lines.get(path)
        self.problems.append(f"{self.prefix}{path}: {message}" + (f" (line {line})" if line else ""))

    def unknown_keys(self, data: dict, path: str, known: set[str]) -> None:
        """One problem per key of `data` not in `known`, listing the known ones."""
        for key in data:
            if key not in known:
                hint = ", ".join(sorted(known))
                self.error(f"{path}.{key}" if path else str(key), f"unknown key (known here: {hint})")

    def mapping(self, data: Any, path: str, known: set[str]) -> dict:
        """`data` if it is a mapping (a missing one counts as empty), else {} after a problem."""
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.error(path, f"must be a mapping, got {show(data)}")
            return {}
        self.unknown_keys(data, path, known)
        return data

    def integer(self, data: dict, key: str, path: str, default: int, low: int, high: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.error(f"{path}.{key}", f"{show(value)} must be a whole number from {low} to {high}")
            return default
        return value

    def number(self, data: dict, key: str, path: str, default: float, low: float, high: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            self.error(f"{path}.{key}", f"{show(value)} must be a number from {low} to {high}")
            return default
        return float(value)

    def string_list(self, data: dict, key: str, path: str, default: list[str]) -> list[tuple[str, str]]:
        """The list under key as (item path, string) pairs; a lone string counts as a list of one."""
        value = data.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.error(f"{path}.{key}", f"must be a list, got {show(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                self.error(f"{path}.{key}[{i}]", f"{show(item)} must be a string")
            else:
                out.append((f"{path}.{key}[{i}]", str(item)))
        return out


# ---------------------------------------------------------------- checks shared by several sections


@dataclass(frozen=True)
class Listen:
    """An address to listen on (dns.listen, web.listen)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str, default_port: int = 53) -> Listen:
    """'127.0.0.1:5353', '[::]:53', ':53' (every IPv4 address) or a bare address (`default_port`)."""
    host, port_text = text, str(default_port)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("is not an address: write [IPv6]:port")
        port_text = rest[1:] or str(default_port)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or "0.0.0.0"  # nosec B104
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("is not a valid port")
    return Listen(host, int(port_text))
