"""Settings → Backup and Restore through the web UI: the download, the upload with CSRF, a bad
file refused beside the field with nothing changed, and the session kept after a restore."""
from __future__ import annotations

import gzip
import io
import json
import re

from webui_fixtures import admin, env, page_csrf  # noqa: F401


def download(admin) -> bytes:
    response = admin.get("/settings/backup")
    assert response.status_code == 200
    assert response.mimetype == "application/gzip"
    assert re.fullmatch(r'attachment; filename="filterd-backup-\d{8}-\d{4}\.json\.gz"',
                        response.headers["Content-Disposition"])
    return response.get_data()


def upload(admin, data: bytes, name: str = "filterd-backup.json.gz", token: str | None = None):
    token = page_csrf(admin, "/settings") if token is None else token
    return admin.post("/settings/restore", data={"csrf_token": token, "backup": (io.BytesIO(data), name)},
                      content_type="multipart/form-data")


def restore_error(html: str) -> str:
    match = re.search(r'<p class="error" id="restore-error" role="alert">([^<]*)</p>', html)
    assert match, "no error beside the restore field"
    return match.group(1)


def test_backup_download_is_the_config_and_state(env, admin):
    env.execute("INSERT INTO overrides (kind, subject_kind, subject, created, source) VALUES"
                " ('pause', 'device', 'kids-tablet', 1, 'web UI')")
    document = json.loads(gzip.decompress(download(admin)))
    assert document["config"] == env.config_text()
    assert document["tables"]["overrides"]["rows"][0][3] == "kids-tablet"


def test_anonymous_cannot_download_or_restore(env):
    client = env.client()
    assert client.get("/settings/backup").status_code == 302
    assert client.post("/settings/restore").status_code in (303, 400)


def test_restore_replaces_config_and_state_and_keeps_the_session(env, admin):
    env.execute("INSERT INTO overrides (kind, subject_kind, subject, created, source) VALUES"
                " ('pause', 'device', 'kids-tablet', 1, 'web UI')")
    data = download(admin)
    original = env.config_text()
    env.config_path.write_text(original.replace("preset: child", "preset: teen"))
    env.execute("DELETE FROM overrides")
    response = upload(admin, data)
    assert response.status_code == 302
    assert env.config_text() == original
    assert env.query("SELECT subject FROM overrides") == [("kids-tablet",)]
    assert env.audit()[-1][1] == "restore"
    page = admin.get("/settings")           # still logged in: credentials did not change
    assert page.status_code == 200 and "Restored the backup" in page.get_data(as_text=True)


def test_restore_without_csrf_token_changes_nothing(env, admin):
    data = download(admin)
    env.config_path.write_text(env.config_text().replace("preset: child", "preset: teen"))
    before = env.config_text()
    assert upload(admin, data, token="").status_code == 400
    assert env.config_text() == before


def test_a_bad_file_is_refused_beside_the_field_and_nothing_changes(env, admin):
    before = env.config_text()
    document = json.loads(gzip.decompress(download(admin)))
    document["config"] = "dns: {upstreams: []}\n"
    for data, message in ((b"PK\x03\x04../../etc/passwd", "not a filterd backup"),
                          (gzip.compress(json.dumps(document).encode()), "filterd check"),
                          (b"", "not a filterd backup")):
        response = upload(admin, data)
        assert response.status_code == 200
        assert message in restore_error(response.get_data(as_text=True))
        assert env.config_text() == before


def test_restore_error_shows_escaped(env, admin):
    document = json.loads(gzip.decompress(download(admin)))
    document["tables"]["overrides"]["columns"] = ["<script>alert(1)</script>"]
    html = upload(admin, gzip.compress(json.dumps(document).encode())).get_data(as_text=True)
    assert "<script>alert(1)" not in html and "columns" in restore_error(html)
