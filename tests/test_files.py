"""`filterd/files.py`: atomic writes (a crash leaves the old file or the new one, never half of
either; a private key is never readable by others) and the signature that tells the daemon and
the web UI the config changed. Real files in a temporary folder."""
from __future__ import annotations

import os
import stat

import pytest

from filterd import files


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_write_replaces_the_whole_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "filterd.yaml"
    path.write_bytes(b"a long old content that is longer than the new one\n" * 10)
    files.write_atomically(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert leftovers(tmp_path) == []


def test_a_write_creates_a_missing_file(tmp_path):
    path = tmp_path / "new.txt"
    files.write_atomically(path, b"hello")
    assert path.read_bytes() == b"hello"


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_the_file_has_its_mode_whatever_the_umask(tmp_path, mode):
    path = tmp_path / "key.pem"
    old = os.umask(0o077)
    try:
        files.write_atomically(path, b"secret", mode=mode)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_private_key_is_never_readable_by_others_not_even_while_it_is_written(tmp_path, monkeypatch):
    """The mode is set on the temporary file before a byte is written into it."""
    path = tmp_path / "key.pem"
    seen = []
    real_fdopen = os.fdopen

    def spying_fdopen(fd, *args, **kwargs):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(files.os, "fdopen", spying_fdopen)
    files.write_atomically(path, b"-----BEGIN PRIVATE KEY-----", mode=0o600)
    assert seen == [0o600]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "filterd.yaml"
    path.write_bytes(b"old config\n")

    def power_cut(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", power_cut)
    with pytest.raises(OSError):
        files.write_atomically(path, b"new config that never lands\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"old config\n"
    assert leftovers(tmp_path) == []


def test_a_failed_rename_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "filterd.yaml"
    path.write_bytes(b"old\n")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(PermissionError):
        files.write_atomically(path, b"new\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"old\n"
    assert leftovers(tmp_path) == []


def test_a_write_into_a_missing_folder_raises_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.write_atomically(tmp_path / "no-such-dir" / "f.txt", b"x")
    assert not (tmp_path / "no-such-dir").exists()


def test_the_signature_changes_when_the_file_is_edited_in_place(tmp_path):
    path = tmp_path / "filterd.yaml"
    path.write_text("timezone: UTC\n")
    before = files.file_signature(path)
    with open(path, "a") as handle:        # same inode, one line more
        handle.write("log: {mode: full}\n")
    after = files.file_signature(path)
    assert before is not None and after is not None and after != before
    assert after[1] == before[1]            # the same inode: the size (and mtime) tell


def test_the_signature_changes_when_the_file_is_replaced_by_a_rename_of_the_same_size(tmp_path):
    path = tmp_path / "filterd.yaml"
    path.write_text("mode: full\n")
    before = files.file_signature(path)
    replacement = tmp_path / "edit.tmp"
    replacement.write_text("mode: anon\n")               # the same size
    os.utime(replacement, ns=(before[0], before[0]))      # and even the same mtime
    os.replace(replacement, path)
    after = files.file_signature(path)
    assert after != before and after[1] != before[1]


def test_the_signature_is_stable_while_nothing_changes(tmp_path):
    path = tmp_path / "filterd.yaml"
    path.write_text("x\n")
    assert files.file_signature(path) == files.file_signature(str(path))


def test_the_signature_of_a_missing_file_is_none(tmp_path):
    assert files.file_signature(tmp_path / "gone.yaml") is None


def test_fsync_of_a_missing_folder_does_not_raise(tmp_path):
    files.fsync_directory(tmp_path / "never-made")
    files.fsync_directory(tmp_path)
