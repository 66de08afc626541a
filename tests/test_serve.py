"""Starting up: the daemon and the web UI say what stops them in one line (the journal is all a
parent sees), never a traceback — a port already in use, a data directory they cannot use, a
config that is refused."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from standin import free_port

ROOT = Path(__file__).resolve().parent.parent
WEBUI = [sys.executable, "-c", "import sys; from webui.serve import main; sys.exit(main())"]
DAEMON = [sys.executable, "-m", "filterd", "run"]


def write_config(folder: Path, data_dir: Path, dns_port: int, web_port: int) -> Path:
    path = folder / "filterd.yaml"
    path.write_text(f"data_dir: {data_dir}\n"
                    f'dns: {{listen: ["127.0.0.1:{dns_port}"], upstreams: ["udp://127.0.0.1:1"], workers: 1}}\n'
                    f'web: {{listen: "127.0.0.1:{web_port}"}}\n')
    return path


def start(command: list[str], config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command + ["--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    return lines[-1]


@pytest.mark.parametrize("command, prefix", [(WEBUI, "filterd-webui: "), (DAEMON, "")])
def test_a_port_in_use_is_one_line(tmp_path, command, prefix):
    dns_port, web_port = free_port(), free_port()
    with socket.socket() as busy_tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy_udp:
        busy_tcp.bind(("127.0.0.1", web_port))
        busy_tcp.listen()
        busy_udp.bind(("127.0.0.1", dns_port))
        done = start(command, write_config(tmp_path, tmp_path / "var", dns_port, web_port))
    assert done.returncode == 1
    port = web_port if command is WEBUI else dns_port
    assert one_line(done.stderr).endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize("command, prefix", [(WEBUI, "filterd-webui: "), (DAEMON, "filterd: ")])
def test_a_data_directory_that_cannot_be_used_is_one_line(tmp_path, command, prefix):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = start(command, write_config(tmp_path, blocker / "var", free_port(), free_port()))
    assert done.returncode == 1
    assert one_line(done.stderr) == f"{prefix}cannot use the data directory {blocker / 'var'}: File exists" \
        or one_line(done.stderr) == f"{prefix}cannot use the data directory {blocker / 'var'}: Not a directory"


@pytest.mark.parametrize("command, prefix", [(WEBUI, "filterd-webui: "), (DAEMON, "filterd: ")])
def test_a_refused_config_names_its_problems(tmp_path, command, prefix):
    path = tmp_path / "filterd.yaml"
    path.write_text("dns: {upstreams: [nowhere]}\n")
    done = start(command, path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{prefix}config refused:\n  dns.upstreams[0]: ")
