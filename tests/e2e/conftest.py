"""Shared fixtures for the end-to-end filtering tests.

When tests/e2e is not a package, pytest imports this file under the plain module name
`conftest`, which would hide tests/conftest.py from the `from conftest import …` lines of the
modules in this folder; in that case the helpers of tests/conftest.py (everything but its
fixtures, which pytest provides here anyway) are re-exported below under the same names.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# The safe hosts SafeSearch answers with, and the addresses Google documents for them.
SAFE_HOSTS = {"forcesafesearch.google.com": "216.239.38.120", "restrict.youtube.com": "216.239.38.120",
              "restrictmoderate.youtube.com": "216.239.38.119"}


def _root_conftest():
    """tests/conftest.py as a module of its own (its fixtures are not registered twice)."""
    name = "_filterd_tests_root_conftest"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def _is_fixture(value) -> bool:
    return getattr(value, "_fixture_function_marker", None) is not None or \
        type(value).__name__ == "FixtureFunctionDefinition"


if __name__ == "conftest":   # shadowing tests/conftest.py: stand in for it
    for _name, _value in vars(_root_conftest()).items():
        if not _name.startswith("_") and _name not in globals() and not _is_fixture(_value):
            globals()[_name] = _value


@pytest.fixture(scope="module")
def filtering_upstream(module_standins):
    """A stand-in upstream of the module's own (`.port`) that answers the SafeSearch and YouTube
    safe hosts with their real addresses (`.safe_hosts`: host → address)."""
    server, port = module_standins()
    server.port = port
    server.safe_hosts = dict(SAFE_HOSTS)
    server.add(*(f"{host}. 300 IN A {address}" for host, address in SAFE_HOSTS.items()))
    return server
