"""The one-time setup code: only whoever installed filterd can claim a fresh install.

Until the parents' password exists, `/setup` asks for this code as well as the new password.
It lives in `<data_dir>/setup-code` (mode 0600, owned by the web UI's user) and is shown where
only the installer looks: `packaging/install.sh` prints it, `filterd-webui` logs it at start
(`journalctl -u filterd-webui`), `make run` prints it, and `filterd-webui --setup-code` prints
it again. Setting the password removes the file. No network I/O, no clock: a file and a compare.
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

FILE_NAME = "setup-code"
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"   # no 0/O, 1/I: read off a terminal, typed on a phone
GROUPS, GROUP_LENGTH = 3, 4                       # 12 characters: 60 bits, behind a throttle


def path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def new_code() -> str:
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS))


def _normalised(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum())


def read(data_dir: Path) -> str | None:
    try:
        text = path(data_dir).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(_normalised(text)) == GROUPS * GROUP_LENGTH else None


def ensure(data_dir: Path) -> str:
    """The code, made (0600, created exclusively: never a code another process wrote over) when missing."""
    code = read(data_dir)
    if code is not None:
        return code
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    target = path(data_dir)
    target.unlink(missing_ok=True)           # an unreadable or truncated file: start again
    code = new_code()
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:                  # another process made it first: theirs is the code
        return read(data_dir) or code
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(code + "\n")
    return code


def matches(data_dir: Path, typed: str) -> bool:
    """Whether `typed` is the code (case, spaces and dashes do not matter); False when there is none."""
    code = read(data_dir)
    if code is None or not typed or len(typed) > 100:
        return False
    return hmac.compare_digest(_normalised(typed).encode(), _normalised(code).encode())


def remove(data_dir: Path) -> None:
    path(data_dir).unlink(missing_ok=True)
