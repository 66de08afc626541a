"""Inside the clean Debian 12 root: the installed daemon, run as the unit runs it, answers DNS.

Runs in a network namespace of its own (only loopback), so the packaged config's port 53 on
every address is free. A stand-in upstream (tests/standin.py) takes the packaged upstreams'
place; everything else is the packaged /etc/filterd/filterd.yaml. The daemon runs as the
filterd user with only CAP_NET_BIND_SERVICE (setpriv), says READY=1 on a notify socket as
under systemd, answers one query over loopback, and the web UI answers on port 80.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from dnslib import DNSRecord

sys.path.insert(0, sys.argv[1])   # the copied tests folder
from standin import StandIn, name_address  # noqa: E402

DEADLINE_S = 60
AS_FILTERD = ["setpriv", "--reuid=filterd", "--regid=filterd", "--init-groups",
              "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]


def wait_for(what: str, predicate, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            sys.exit(f"FAIL: exited ({process.returncode}) before {what}:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    sys.exit(f"FAIL: no {what} within {DEADLINE_S} s:\n{log.read_text(errors='replace')}")


def main() -> None:
    upstream = StandIn()
    port = upstream.start(port=0)
    config = yaml.safe_load(Path("/etc/filterd/filterd.yaml").read_text())
    config["dns"]["upstreams"] = [f"udp://127.0.0.1:{port}"]
    config["dns"]["bootstrap"] = []
    config["lists"] = []   # no downloads here: the packaged seed lists still filter
    test_config = Path("/etc/filterd/deb-test.yaml")
    test_config.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chown(test_config, *_filterd_ids())

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(b"\0filterd-deb-test")
    notify.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET="@filterd-deb-test", WATCHDOG_USEC="2000000")
    log = Path("/tmp/filterd-run.log")
    webui_log = Path("/tmp/filterd-webui.log")
    with open(log, "wb") as out, open(webui_log, "wb") as webui_out:
        daemon = subprocess.Popen(AS_FILTERD + ["filterd", "run", "--config", str(test_config)],
                                  stdout=out, stderr=out, env=env, cwd="/var/lib/filterd")
        webui = subprocess.Popen(AS_FILTERD + ["filterd-webui", "--config", str(test_config)],
                                 stdout=webui_out, stderr=webui_out, cwd="/var/lib/filterd")
    try:
        def ready():
            try:
                return b"READY=1" in notify.recv(4096)
            except BlockingIOError:
                return False
        wait_for("READY=1", ready, daemon, log)
        reply = DNSRecord.parse(DNSRecord.question("deb-test.example").send("127.0.0.1", 53, timeout=5))
        answers = [str(rr.rdata) for rr in reply.rr]
        assert answers == [name_address("deb-test.example")], (answers, log.read_text())
        print(f"OK: the packaged daemon answered deb-test.example A {answers[0]} on 127.0.0.1:53")

        def page():
            try:
                with urllib.request.urlopen("http://127.0.0.1/", timeout=2) as response:  # nosec B310
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return None
        status = wait_for("the web UI on port 80", page, webui, webui_log)
        assert status in (200, 302), status
        print(f"OK: the web UI answered on port 80 (HTTP {status})")
        _report_memory(daemon.pid, "filterd")
        _report_memory(webui.pid, "filterd-webui")
    finally:
        for process in (daemon, webui):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        upstream.stop()
        test_config.unlink()
    print("OK: both stopped on SIGTERM" if daemon.returncode == 0 else f"daemon exit status {daemon.returncode}")


def _filterd_ids() -> tuple[int, int]:
    import pwd
    entry = pwd.getpwnam("filterd")
    return entry.pw_uid, entry.pw_gid


def _report_memory(pid: int, name: str) -> None:
    """RSS and PSS of the process tree's main process (setpriv execs, so pid is the program)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return
    fields = {line.split(":")[0]: line.split()[1] for line in rollup.splitlines()[1:]}
    print(f"MEMORY {name}: RSS {int(fields['Rss']) // 1024} MB, PSS {int(fields['Pss']) // 1024} MB")


if __name__ == "__main__":
    main()
