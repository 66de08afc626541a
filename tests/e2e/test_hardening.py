"""The services as the systemd units run them: with MemoryDenyWriteExecute=yes.

The units forbid memory that is both writable and executable (a JIT, libffi closures). Whether
uvloop, cryptography (the house CA and TLS), ssl and smtplib live with that is only known by
running them under it, and systemd is not PID 1 here: the kernel's own form, PR_SET_MDWE
(Linux ≥ 6.3), is set on a pytest run of the real daemon, web UI and notification tests, which
it passes on to every process they start. A library that needed W+X memory would crash them
here rather than on a parent's Pi.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
WRAPPER = TESTS / "mdwe_exec.py"
UNDER_MDWE = [
    "tests/e2e/test_blockpage_https.py",                 # filterd-webui: the house CA, TLS, the block page
    "tests/e2e/test_daemon.py::test_forwards_a_aaaa_mx_and_txt",     # the daemon on uvloop, UDP and TCP
    "tests/e2e/test_daemon.py::test_fails_over_past_a_closed_upstream_port",
    "tests/test_channels.py::test_email_arrives_over_starttls_with_login",   # smtplib over TLS
    "tests/test_channels.py::test_webhook_receives_json_with_a_valid_hmac_and_the_request_link",
    "tests/test_localca.py",
]


def run_under_mdwe(*command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(WRAPPER), *command], capture_output=True, text=True,
                            timeout=timeout, cwd=TESTS.parent)
    if result.returncode == 75:
        pytest.skip(f"this kernel has no memory-deny-write-execute: {result.stderr.strip()}")
    return result


def test_writable_executable_memory_is_refused_under_the_wrapper():
    """The wrapper really enforces it (else the test below would prove nothing)."""
    result = run_under_mdwe(sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, "
                            "prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)")
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_daemon_web_ui_ca_and_notifications_work_without_writable_executable_memory():
    result = run_under_mdwe(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *UNDER_MDWE)
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    assert result.returncode == 0, f"{summary}\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    assert " passed" in summary and "skipped" not in summary, summary
