"""The package's shape: no import cycle among filterd's and webui's modules (imports inside
functions count), and the pure policy module pulls in no SQLite, socket or TLS."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import filterd

# Where the code under test lives: the checkout, or /usr/lib/filterd when the .deb's copy is tested.
ROOT = Path(filterd.__file__).resolve().parent.parent
PACKAGES = ("filterd", "webui")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    assert any(name.startswith("filterd.rules") for name in modules), f"no filterd modules under {ROOT}"
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports anywhere in its file, resolved to module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import module` imports the module; `from module import name` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: imports_of(name, path, known) for name, path in modules.items()}
    # A package's __init__ is imported on the way to any of its modules, but it is not a cycle
    # for a module to sit in a package: only the edges the code writes count.
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state:
                found = visit(child)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle_written_inside_a_function(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back_through_others():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_nothing_in_filterd_imports_the_web_ui():
    graph = import_graph()
    wrong = sorted(f"{name} → {target}" for name, targets in graph.items() if name.startswith("filterd")
                   for target in targets if target.startswith("webui"))
    assert wrong == []


def test_importing_the_policy_loads_no_sqlite_socket_or_tls():
    code = ("import sys, filterd.rules.policy, filterd.rules.explain; "
            "print(' '.join(m for m in ('sqlite3', '_sqlite3', 'socket', '_socket', 'ssl', '_ssl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_filterd_keeps_only_the_cli_and_package_glue_at_its_top():
    top = sorted(path.name for path in (ROOT / "filterd").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py", "files.py"]
