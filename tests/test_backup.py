"""filterd.store.backup: the one-file format, its strict validation, and the atomic restore —
on real config files and a real SQLite state DB."""
from __future__ import annotations

import gzip
import json
import time

import pytest

from filterd.store import backup, state
from filterd.store.backup import BackupError, apply_backup, make_backup, read_backup

CONFIG = """\
# our house (a comment a restore must bring back)
timezone: UTC
data_dir: {data_dir}
dns:
  upstreams: ["udp://127.0.0.1:1"]
profiles:
  kids: {{preset: child}}
default_profile: kids
"""


@pytest.fixture
def house(tmp_path):
    """A config file and a state DB with a row in every backed-up table (and some that are not)."""
    config_path = tmp_path / "filterd.yaml"
    config_path.write_text(CONFIG.format(data_dir=tmp_path / "var"))
    db = state.connect(state.db_path(tmp_path / "var"))
    now = time.time()
    db.execute("INSERT INTO overrides (kind, subject_kind, subject, created, until, source)"
               " VALUES ('pause', 'device', 'kids-tablet', ?, ?, 'web UI')", (now, now + 3600))
    db.execute("INSERT INTO clients_seen (client, mac, hostname, first_seen, last_seen, queries)"
               " VALUES ('192.168.1.23', 'aa:bb:cc:dd:ee:ff', 'tablet', ?, ?, 5)", (now, now))
    db.execute("INSERT INTO access_requests (device, domain, reason, unblocks, created, updated) VALUES"
               " ('kids-tablet', 'roblox.com', 'games', 'category games', ?, ?)", (now, now))
    state.audit(db, "web UI", "config", "profile kids created", now - 100)
    db.execute("INSERT INTO admin (id, password_hash, created, changed) VALUES (1, 'scrypt$old', ?, ?)", (now, now))
    db.execute("INSERT INTO api_tokens (name, token_hash, created) VALUES ('ha', 'hash-of-token', ?)", (now,))
    db.execute("INSERT INTO queries (ts, client, qtype, action) VALUES (?, '192.168.1.23', 1, 'allow')", (now,))
    yield config_path, db
    db.close()


def document_of(data: bytes) -> dict:
    return json.loads(gzip.decompress(data))


def as_file(document: dict) -> bytes:
    return gzip.compress(json.dumps(document).encode())


def test_backup_holds_config_and_chosen_tables_but_no_secrets_or_query_log(house):
    config_path, db = house
    document = document_of(make_backup(config_path.read_text(), db))
    assert document["format"] == "filterd-backup" and document["version"] == 1
    assert document["config"] == config_path.read_text()
    assert set(document["tables"]) == {"overrides", "clients_seen", "access_requests", "audit"}
    text = json.dumps(document)
    assert "scrypt$old" not in text and "hash-of-token" not in text and "sessions" not in text
    assert len(document["tables"]["overrides"]["rows"]) == 1


def test_restore_brings_back_config_and_rows_and_keeps_later_audit(house, tmp_path):
    config_path, db = house
    data = make_backup(config_path.read_text(), db)
    # Things change after the backup: the config, a pause ends, a device appears, an audit entry.
    config_path.write_text(config_path.read_text().replace("preset: child", "preset: teen"))
    db.execute("DELETE FROM overrides")
    db.execute("INSERT INTO clients_seen (client, first_seen, last_seen) VALUES ('192.168.1.99', 1, 1)")
    state.audit(db, "web UI", "config", "later change")
    restored = read_backup(data, config_path, tmp_path / "var")
    apply_backup(restored, config_path, db, "web UI")
    assert "preset: child" in config_path.read_text() and "# our house" in config_path.read_text()
    assert (config_path.parent / "filterd.yaml.bak").read_text().count("preset: teen") == 1
    assert db.execute("SELECT subject FROM overrides").fetchall() == [("kids-tablet",)]
    assert db.execute("SELECT client FROM clients_seen").fetchall() == [("192.168.1.23",)]
    trail = [row[0] for row in db.execute("SELECT detail FROM audit ORDER BY id")]
    assert trail[0] == "profile kids created" and "later change" in trail and trail[-1].startswith("backup of")
    assert trail.count("profile kids created") == 1      # not doubled: the trail had it already
    assert db.execute("SELECT password_hash FROM admin").fetchone() == ("scrypt$old",)
    assert db.execute("SELECT count(*) FROM queries").fetchone() == (1,)


@pytest.mark.parametrize("mangle, message", [
    (lambda d: d.update(format="tar"), "not a filterd backup"),
    (lambda d: d.update(version=2), "format version"),
    (lambda d: d.update(schema_version=99), "newer filterd"),
    (lambda d: d.update(extra="x"), "unexpected backup contents"),
    (lambda d: d.update(config="dns: {upstreams: []}\n"), "filterd check"),
    (lambda d: d.update(config="timezone: Mars/Olympus\n"), "filterd check"),
    (lambda d: d["tables"].pop("audit"), "exactly the tables"),
    (lambda d: d["tables"].update(sessions={"columns": [], "rows": []}), "exactly the tables"),
    (lambda d: d["tables"]["overrides"]["columns"].reverse(), "columns"),
    (lambda d: d["tables"]["overrides"]["rows"][0].__setitem__(1, "explode"), "CHECK constraint"),
    (lambda d: d["tables"]["overrides"]["rows"][0].__setitem__(3, None), "must not be empty"),
    (lambda d: d["tables"]["overrides"]["rows"][0].__setitem__(5, "yesterday"), "must be real"),
    (lambda d: d["tables"]["clients_seen"]["rows"].append(list(d["tables"]["clients_seen"]["rows"][0])), "UNIQUE"),
    (lambda d: d["tables"]["audit"]["rows"][0].append("more"), "expected 5 values"),
])
def test_a_bad_backup_is_refused_and_nothing_changes(house, tmp_path, mangle, message):
    config_path, db = house
    document = document_of(make_backup(config_path.read_text(), db))
    mangle(document)
    before = (config_path.read_text(), db.execute("SELECT count(*) FROM overrides").fetchone())
    with pytest.raises(BackupError, match=message):
        read_backup(as_file(document), config_path, tmp_path / "var")
    assert (config_path.read_text(), db.execute("SELECT count(*) FROM overrides").fetchone()) == before


@pytest.mark.parametrize("data, message", [
    (b"PK\x03\x04 a zip archive with paths", "not JSON"),
    (gzip.compress(b"\x00" * 1000), "not JSON"),
    (gzip.compress(b"{}")[:-6], "cut short"),
    (b'{"format": "filterd-backup", "format": "x"}', "appears twice"),
])
def test_archives_and_damaged_files_are_refused(house, data, message):
    config_path, _ = house
    with pytest.raises(BackupError, match=message):
        read_backup(data, config_path)


def test_a_gzip_bomb_stops_at_the_cap(house, monkeypatch):
    config_path, _ = house
    monkeypatch.setattr(backup, "MAX_BACKUP_BYTES", 2**20)
    with pytest.raises(BackupError, match="unpacks to more than"):
        read_backup(gzip.compress(b" " * (4 * 2**20)), config_path)


def test_a_config_moving_the_data_elsewhere_is_refused(house, tmp_path):
    config_path, db = house
    document = document_of(make_backup(config_path.read_text(), db))
    document["config"] = CONFIG.format(data_dir=tmp_path / "elsewhere")
    with pytest.raises(BackupError, match="keeps its data in"):
        read_backup(as_file(document), config_path, tmp_path / "var")


def test_a_failed_config_write_rolls_the_rows_back(house, tmp_path):
    config_path, db = house
    restored = read_backup(make_backup(config_path.read_text(), db), config_path)
    db.execute("DELETE FROM overrides")
    audit_rows = db.execute("SELECT count(*) FROM audit").fetchone()
    with pytest.raises(OSError):      # its folder is gone: the atomic write cannot make its temp file
        apply_backup(restored, tmp_path / "gone" / "filterd.yaml", db, "web UI")
    assert db.execute("SELECT count(*) FROM overrides").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM audit").fetchone() == audit_rows


def test_cli_backup_then_restore_brings_back_the_config_and_refuses_a_bad_file(tmp_path, capsys):
    """`filterd backup FILE` and `filterd restore FILE`, on real files."""
    from filterd import cli
    from filterd.store import state as state_module

    data_dir = tmp_path / "var"
    config_path = tmp_path / "filterd.yaml"
    original = f"# ours\ndata_dir: {data_dir}\ndns: {{upstreams: ['udp://127.0.0.1:1']}}\n"
    config_path.write_text(original)
    state_module.connect(state_module.db_path(data_dir)).close()
    target = tmp_path / "house.backup"
    assert cli.main(["backup", str(target), "--config", str(config_path)]) == 0
    assert cli.main(["backup", str(target), "--config", str(config_path)]) == 2   # never overwritten
    config_path.write_text(original.replace("# ours", "# changed since"))
    assert cli.main(["restore", str(target), "--config", str(config_path)]) == 0
    assert config_path.read_text() == original
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not a backup")
    capsys.readouterr()
    assert cli.main(["restore", str(tmp_path / "junk"), "--config", str(config_path)]) == 2
    assert "not restored, nothing changed" in capsys.readouterr().err
    assert config_path.read_text() == original
