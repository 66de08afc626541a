"""The config's history (`filterd/store/config_versions.py`) and Settings → earlier versions:
what changed in YAML paths, the last 50 versions kept, compare, and going back to one."""
from __future__ import annotations

import pytest
from webui_fixtures import Env, csrf_from

from filterd.store import config_versions, state

OLD = """\
timezone: UTC
profiles:
  kids:
    preset: child
    allow: [khanacademy.org]
    schedules:
      - {name: bedtime, days: [mon], start: "21:00", end: "07:00"}
notify:
  channels:
    hook: {type: webhook, url: "http://127.0.0.1:9/", secret: old-secret-value}
"""
NEW = """\
timezone: Europe/Paris
profiles:
  kids:
    preset: child
    allow: [khanacademy.org, wikipedia.org]
    schedules:
      - {name: bedtime, days: [mon], start: "20:30", end: "07:00"}
  teen: {preset: teen}
notify:
  channels:
    hook: {type: webhook, url: "http://127.0.0.1:9/", secret: new-secret-value}
"""


def test_changes_are_named_by_yaml_path_and_never_show_a_secret():
    changes = config_versions.describe_changes(OLD, NEW)
    assert changes == [
        "timezone: UTC → Europe/Paris",
        "profiles.kids.allow: + wikipedia.org",
        "profiles.kids.schedules.bedtime.start: 21:00 → 20:30",
        "profiles.teen.preset: + teen",
        "notify.channels.hook.secret: changed (secret not shown)",
    ]
    assert not any("secret-value" in line for line in config_versions.describe_changes(OLD, NEW))


def test_the_history_keeps_the_file_before_the_first_change_and_only_the_last_50(tmp_path):
    db = state.connect(tmp_path / "state.db")
    config_versions.record(db, OLD, NEW, "web UI", "profile kids edited", now=1000)
    first = config_versions.versions(db)
    assert [(v.actor, v.text) for v in first] == [("web UI", NEW), ("file", OLD)]
    assert first[0].changes.splitlines()[0] == "timezone: UTC → Europe/Paris"
    for i in range(60):
        config_versions.record(db, NEW, NEW + f"# {i}\n", "web UI", f"edit {i}", now=2000 + i)
    kept = config_versions.versions(db)
    assert len(kept) == config_versions.KEEP and kept[0].what == "edit 59"


@pytest.fixture
def env(tmp_path) -> Env:
    environment = Env(tmp_path)
    environment.set_password()
    return environment


def test_a_parent_sees_each_version_compares_one_and_goes_back_to_it(env):
    parent = env.logged_in()
    original = env.config_text()
    page = parent.get("/profiles/kids").get_data(as_text=True)
    form = {"csrf_token": csrf_from(page), "version": __import__("re").search(r'name="version" value="([^"]+)"', page).group(1)}
    added = parent.post("/log/rule", data={"csrf_token": csrf_from(page), "name": "games.example", "action": "block",
                                           "profile": "kids"})
    assert added.status_code in (302, 303)
    assert "games.example" in env.config_text()
    history = parent.get("/settings/history").get_data(as_text=True)
    assert "profiles.kids.block: + games.example" in history
    assert "the rules now" in history
    oldest = config_versions.versions(env.db())[-1]
    assert oldest.text == original
    compare = parent.get(f"/settings/history/{oldest.id}").get_data(as_text=True)
    assert "profiles.kids.block: - games.example" in compare and "Going back would change" in compare
    version = __import__("re").search(r'name="version" value="([^"]+)"', compare).group(1)
    back = parent.post(f"/settings/history/{oldest.id}/restore", data={"csrf_token": csrf_from(compare),
                                                                       "version": version})
    assert back.status_code == 303
    assert env.config_text() == original
    assert any(action == "config" and detail.startswith("restored the rules of ") for _, action, detail in env.audit())
    del form


def test_going_back_refuses_a_stale_page(env):
    parent = env.logged_in()
    page = parent.get("/settings").get_data(as_text=True)
    parent.post("/log/rule", data={"csrf_token": csrf_from(page), "name": "games.example", "action": "block",
                                   "profile": "kids"})
    oldest = config_versions.versions(env.db())[-1]
    before = env.config_text()
    refused = parent.post(f"/settings/history/{oldest.id}/restore", data={"csrf_token": csrf_from(page),
                                                                          "version": "stale"})
    assert refused.status_code == 303 and env.config_text() == before
    assert "Not restored" in parent.get("/settings/history").get_data(as_text=True)


def test_a_version_no_longer_kept_is_404(env):
    assert env.logged_in().get("/settings/history/999").status_code == 404
