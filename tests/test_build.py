"""`filterd/lists/build.py`: the one policy the daemon, `filterd explain` and the web UI decide with
— the config's rules and catalog over the compiled block lists. Real fixture configs
(tests/fixtures/policy/family.yaml), real list files compiled into a real index."""
from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest
from conftest import write_fixture_config
from dnslib import QTYPE

from filterd.lists import sources
from filterd.lists.build import build_policy
from filterd.rules import policy as policy_module
from filterd.rules.config import load_config

NOON = datetime.datetime(2026, 3, 3, 12, 0, tzinfo=ZoneInfo("Europe/London"))   # Tuesday: no schedule runs


@pytest.fixture
def config(tmp_path):
    return load_config(write_fixture_config("family.yaml", tmp_path))


def compiled_indexes(config) -> list:
    folder = sources.lists_dir(config)
    return sorted(folder.glob("*.idx")) if folder.exists() else []


def decide(policy, name: str, profile: str = "kids", device: str | None = "alice-tablet"):
    return policy_module.decide(policy, profile, name, QTYPE.A, NOON, device)


def test_the_web_ui_gets_an_empty_index_while_the_lists_are_not_compiled(config):
    policy = build_policy(config, compile_if_missing=False, missing_ok=True)
    assert len(policy.index.lists) == 0
    assert compiled_indexes(config) == []          # the web UI never compiles: that is the daemon's job
    # The profile's own rules still hold; only the lists are missing.
    assert decide(policy, "example.com").action == policy_module.BLOCK
    assert decide(policy, "pokerstars.test").action == policy_module.ALLOW


def test_without_missing_ok_lists_not_compiled_are_an_error(config):
    with pytest.raises(FileNotFoundError):
        build_policy(config, compile_if_missing=False)
    assert compiled_indexes(config) == []


def test_with_the_lists_compiled_a_listed_name_is_blocked_for_its_category(config):
    sources.ensure_compiled(config)
    policy = build_policy(config, compile_if_missing=False)
    decision = decide(policy, "pokerstars.test")
    assert decision.action == policy_module.BLOCK and decision.rule == "category"
    assert "fx-gambling" in decision.reason
    assert decide(policy, "sub.adult-site.test").action == policy_module.BLOCK       # hosts format, subdomain
    # teens do not block gambling: the same index, another profile's rules
    assert decide(policy, "pokerstars.test", "teens", "carol-laptop").rule != "category"
    policy.index.close()


def test_the_daemon_compiles_missing_lists_in_a_child_process_once(config):
    policy = build_policy(config)
    [index] = compiled_indexes(config)
    assert decide(policy, "bet.example").action == policy_module.BLOCK
    policy.index.close()
    again = build_policy(config, compile_if_missing=False)           # found now: not compiled again
    assert compiled_indexes(config) == [index]
    assert decide(again, "bet.example").action == policy_module.BLOCK
    again.index.close()


def test_a_list_added_after_compiling_is_not_served_from_the_old_index(config, tmp_path):
    """The index is named after its sources' signature: a changed set of lists needs a new one."""
    sources.ensure_compiled(config)
    own = tmp_path / "own.txt"
    own.write_text("brand-new-bets.test\n")
    edited = write_fixture_config("family.yaml", tmp_path)
    edited.write_text(edited.read_text().replace(
        "lists:\n", f"lists:\n  - {{id: fx-own, path: \"{own}\", category: gambling, format: domains}}\n", 1))
    config = load_config(edited)
    with pytest.raises(FileNotFoundError):
        build_policy(config, compile_if_missing=False)
    policy = build_policy(config, compile_if_missing=False, missing_ok=True)
    assert decide(policy, "brand-new-bets.test").action == policy_module.ALLOW
    sources.ensure_compiled(config)
    policy = build_policy(config, compile_if_missing=False)
    assert decide(policy, "brand-new-bets.test").rule == "category"
    policy.index.close()
