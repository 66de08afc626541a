"""filterd/rules/suffixes.py: the Public Suffix List from a package, never from the network."""
from __future__ import annotations

import socket

import pytest

from filterd.rules import suffixes


@pytest.fixture
def fresh_rules():
    suffixes._rules.cache_clear()
    yield
    suffixes._rules.cache_clear()


@pytest.mark.parametrize("domain", ["com", "uk", "co.uk", "github.io", "blogspot.com", "foo.ck", "lan"])
def test_public_suffixes_are_recognised(domain):
    assert suffixes.is_public_suffix(domain)
    assert domain in suffixes.problem(domain)


@pytest.mark.parametrize("domain", ["example.com", "bbc.co.uk", "someone.github.io", "www.ck", "khanacademy.org"])
def test_registrable_names_are_not(domain):
    assert not suffixes.is_public_suffix(domain)
    assert suffixes.problem(domain) is None


def test_the_bundled_snapshot_serves_where_debians_list_is_missing(fresh_rules, monkeypatch, tmp_path):
    pytest.importorskip("publicsuffix2", reason="the Debian package uses Debian's list, not the PyPI snapshot")
    monkeypatch.setattr(suffixes, "SYSTEM_LIST", tmp_path / "absent.dat")
    assert suffixes.list_path().name == "public_suffix_list.dat" and "publicsuffix2" in str(suffixes.list_path())
    assert suffixes.is_public_suffix("co.uk") and not suffixes.is_public_suffix("example.co.uk")


def test_loading_the_list_opens_no_socket(fresh_rules, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the suffix list must never be fetched")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert suffixes.is_public_suffix("github.io")


@pytest.mark.parametrize("domain, expected", [
    ("www.reddit.com", "reddit.com"), ("i.redd.it", "redd.it"), ("news.bbc.co.uk", "bbc.co.uk"),
    ("reddit.com", "reddit.com"), ("com", "com"), ("someone.github.io", "someone.github.io"),
])
def test_registrable_is_one_label_under_the_longest_public_suffix(domain, expected):
    assert suffixes.registrable(domain) == expected
