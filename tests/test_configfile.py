"""filterd/store/configfile.py: validated, atomic, comment-preserving config edits with a version check."""
from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
import yaml
from webui_fixtures import CONFIG_TEXT

from filterd.store import configfile
from filterd.rules.config import ConfigError, load_config

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "filterd.yaml"


@pytest.fixture
def config_path(tmp_path) -> Path:
    path = tmp_path / "filterd.yaml"
    path.write_text(CONFIG_TEXT.format(data_dir=tmp_path / "var"))
    return path


def set_allow(*domains):
    def change(document):
        document["profiles"]["kids"]["allow"] = list(domains)
    return change


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".new")))


def test_an_edit_that_changes_nothing_leaves_the_file_byte_for_byte(tmp_path, config_path):
    shipped = tmp_path / "shipped.yaml"
    shutil.copy(SHIPPED_CONFIG, shipped)
    for path in (config_path, shipped):
        before = path.read_text()
        configfile.edit(path, None, lambda document: None)
        assert path.read_text() == before, path


def test_edit_keeps_comments_order_and_untouched_sections_verbatim(config_path):
    before = config_path.read_text()
    text, version = configfile.read(config_path)
    config, new_version = configfile.edit(config_path, version, set_allow("khanacademy.org", "wikipedia.org"))
    after = config_path.read_text()
    assert config.rules.profiles["kids"].allow == ("khanacademy.org", "wikipedia.org")
    assert new_version == configfile.version_of(after) != version
    for comment in ("# The house's rules (a parent's comments", "timezone: UTC   # where we live",
                    'upstreams: ["udp://127.0.0.1:1"]   # never asked in these tests', "# The web UI",
                    "  # Emma and Noah", "# Devices, by address"):
        assert comment in after, comment
    keys = [line.split(":")[0] for line in after.splitlines() if line and line[0] not in " #-"]
    assert keys == ["timezone", "data_dir", "dns", "web", "log", "profiles", "devices", "default_profile"]
    # Everything outside the kids profile is as the parent wrote it.
    untouched_before = before.split("  kids:")[0], before.split("  adults:")[1]
    untouched_after = after.split("  kids:")[0], after.split("  adults:")[1]
    assert untouched_after == untouched_before


def test_untouched_flow_lists_keep_their_line_breaks(tmp_path):
    shipped = tmp_path / "filterd.yaml"
    shutil.copy(SHIPPED_CONFIG, shipped)
    before = shipped.read_text()
    assert '"192.168.0.0/16",\n                   "169.254.0.0/16"' in before
    configfile.edit(shipped, None, lambda document: document["profiles"]["kids"].__setitem__("allow", ["a.org"]))
    after = shipped.read_text()
    assert '"192.168.0.0/16",\n                   "169.254.0.0/16"' in after
    assert after.split("profiles:")[0] == before.split("profiles:")[0]
    assert after.split("\ndevices:")[1] == before.split("\ndevices:")[1]


def test_new_keys_after_the_last_one_keep_the_next_sections_comment_in_place(config_path):
    configfile.edit(config_path, None, lambda document: document["profiles"].__setitem__("teens", {"preset": "teen"}))
    text = config_path.read_text()
    assert "  adults:\n    preset: adult\n  teens:\n    preset: teen\n\n# Devices, by address\ndevices:" in text


def test_strings_are_written_so_that_they_read_back_as_strings(config_path):
    def change(document):
        document["profiles"]["kids"]["youtube"] = "off"
        document["profiles"]["kids"]["schedules"].append(
            {"name": "homework", "days": ["mon"], "start": "16:00", "end": "18:00", "block": ["games"]})
        document["devices"].append({"name": "on", "ip": "192.168.1.40", "profile": "kids"})
    configfile.edit(config_path, None, change)
    data = yaml.safe_load(config_path.read_text())       # as filterd reads it: YAML 1.1
    assert data["profiles"]["kids"]["schedules"][1]["start"] == "16:00"
    assert data["devices"][-1]["name"] == "on"
    assert data["profiles"]["kids"]["youtube"] in ("off", False)


def test_a_string_yes_is_not_taken_for_true(config_path):
    before = config_path.read_text()
    with pytest.raises(ConfigError) as error:
        configfile.edit(config_path, None, lambda document: document["profiles"]["kids"].__setitem__("safesearch", "yes"))
    assert "profiles.kids.safesearch" in error.value.problems[0]
    assert config_path.read_text() == before


def test_the_previous_version_is_kept_as_bak(config_path):
    before = config_path.read_text()
    configfile.edit(config_path, None, set_allow("a.org"))
    backup = config_path.with_name("filterd.yaml.bak")
    assert backup.read_text() == before
    middle = config_path.read_text()
    configfile.edit(config_path, None, set_allow("b.org"))
    assert backup.read_text() == middle
    assert leftovers(config_path.parent) == []


def test_an_invalid_edit_writes_nothing(config_path):
    before = config_path.read_text()
    stat_before = os.stat(config_path)
    for change in (set_allow("not a domain"),
                   lambda d: d["profiles"]["kids"]["schedules"][0].__setitem__("start", "25:00"),
                   lambda d: d["devices"].append({"name": "x", "ip": "999.1.1.1", "profile": "kids"}),
                   lambda d: d.__setitem__("default_profile", "nobody")):
        with pytest.raises(ConfigError) as error:
            configfile.edit(config_path, None, change)
        assert error.value.problems
    assert config_path.read_text() == before
    assert os.stat(config_path).st_ino == stat_before.st_ino
    assert not config_path.with_name("filterd.yaml.bak").exists()
    assert leftovers(config_path.parent) == []


def test_validation_is_the_same_as_filterd_check(config_path):
    config, _ = configfile.edit(config_path, None, set_allow("wikipedia.org"))
    assert load_config(config_path).rules == config.rules


def test_an_outdated_version_is_refused_and_never_overwrites(config_path):
    _, version = configfile.read(config_path)
    hand_edited = config_path.read_text().replace("timezone: UTC", "timezone: Europe/London")
    config_path.write_text(hand_edited)
    with pytest.raises(configfile.VersionConflict, match="changed meanwhile"):
        configfile.edit(config_path, version, set_allow("a.org"))
    assert config_path.read_text() == hand_edited


def test_a_hand_edit_during_the_edit_is_not_overwritten(config_path):
    _, version = configfile.read(config_path)

    def change(document):
        document["profiles"]["kids"]["allow"] = ["a.org"]
        config_path.write_text(config_path.read_text() + "# saved from an editor meanwhile\n")
    with pytest.raises(configfile.VersionConflict):
        configfile.edit(config_path, version, change)
    assert config_path.read_text().endswith("# saved from an editor meanwhile\n")


def test_two_edits_from_the_same_version_cannot_both_win(config_path):
    _, version = configfile.read(config_path)
    inside = threading.Event()
    release = threading.Event()
    results: dict[str, object] = {}

    def slow_change(document):
        inside.set()
        release.wait(5)
        document["profiles"]["kids"]["allow"] = ["first.org"]

    def first():
        try:
            results["first"] = configfile.edit(config_path, version, slow_change)[1]
        except Exception as exc:  # pragma: no cover - reported below
            results["first"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(5)
    second: dict[str, object] = {}

    def other():
        try:
            second["result"] = configfile.edit(config_path, version, set_allow("second.org"))
        except configfile.VersionConflict as exc:
            second["result"] = exc

    other_thread = threading.Thread(target=other)
    other_thread.start()
    release.set()
    thread.join(5)
    other_thread.join(5)
    assert isinstance(results["first"], str)
    assert isinstance(second["result"], configfile.VersionConflict)
    assert "first.org" in config_path.read_text() and "second.org" not in config_path.read_text()


def test_a_change_that_raises_writes_nothing(config_path):
    before = config_path.read_text()

    def change(document):
        document["timezone"] = "Europe/Paris"
        raise ValueError("refused by the caller")
    with pytest.raises(ValueError):
        configfile.edit(config_path, None, change)
    assert config_path.read_text() == before


def test_a_broken_file_is_reported_not_crashed_on(config_path):
    config_path.write_text("profiles: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        configfile.edit(config_path, None, lambda document: None)
    assert "not valid YAML" in error.value.problems[0]
    config_path.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError):
        configfile.edit(config_path, None, lambda document: None)


def test_write_is_atomic_temp_fsync_rename(config_path, monkeypatch):
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        return real_fsync(fd)

    def replace(source, target):
        calls.append(f"replace {Path(source).name} -> {Path(target).name}")
        return real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    configfile.write_atomically(config_path, "timezone: UTC\n")
    assert calls[0] == "fsync-file"
    assert calls[1] == "replace filterd.yaml.bak.new -> filterd.yaml.bak"
    assert calls[2].startswith("replace .filterd.yaml.") and calls[2].endswith(".tmp -> filterd.yaml")
    assert calls[3] == "fsync-dir"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(config_path, monkeypatch):
    before = config_path.read_text()
    real_replace = os.replace

    def replace(source, target):
        if Path(target) == config_path:
            raise OSError("disk full")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        configfile.edit(config_path, None, set_allow("a.org"))
    assert config_path.read_text() == before
    assert leftovers(config_path.parent) == []


def test_file_permissions_are_kept(config_path):
    os.chmod(config_path, 0o640)
    configfile.edit(config_path, None, set_allow("a.org"))
    assert stat.S_IMODE(os.stat(config_path).st_mode) == 0o640


def test_a_file_without_a_final_newline(config_path):
    config_path.write_text(config_path.read_text().rstrip("\n"))
    configfile.edit(config_path, None, lambda document: document.__setitem__("timezone", "Europe/Paris"))
    data = yaml.safe_load(config_path.read_text())
    assert data["timezone"] == "Europe/Paris" and data["default_profile"] == "adults"
