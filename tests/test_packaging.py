"""packaging/: the systemd units (systemd-analyze verify and security), the shell scripts
(shellcheck), the packaged config and the .deb's contents. `make deb-test` installs the
package in a clean Debian 12 root; these are the quick checks that run with `make test`."""
from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from filterd.rules.config import load_config

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
UNITS = sorted((PACKAGING / "systemd").glob("filterd*.*"))
SERVICES = {path.stem: path for path in UNITS if path.suffix == ".service"}
SHELL_SCRIPTS = ["install.sh", "deb-test.sh", "debian/build.sh", "debian/postinst", "debian/prerm",
                 "debian/postrm", "openwrt/filterd.init"]
# pyproject's dependencies → the Debian 12 packages that provide them.
DEBIAN_PACKAGES = {"dnslib": "python3-dnslib", "pyyaml": "python3-yaml", "idna": "python3-idna",
                   "flask": "python3-flask", "waitress": "python3-waitress", "ruamel.yaml": "python3-ruamel.yaml",
                   "cryptography": "python3-cryptography", "uvloop": "python3-uvloop", "segno": "python3-segno",
                   "publicsuffix2": "publicsuffix"}   # the list itself: suffixes.py reads Debian's copy
MAX_EXPOSURE = 2.0


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make test installs it)")
    return path


def need_source_tree() -> None:
    if not (ROOT / "filterd" / "dns" / "server.py").is_file():
        pytest.skip("packaging/debian/build.sh needs the source tree (not there when testing an installed copy)")


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """The package's file tree, as packaging/debian/build.sh lays it out."""
    need_source_tree()
    stage = tmp_path_factory.mktemp("stage") / "root"
    subprocess.run([str(PACKAGING / "debian" / "build.sh"), "--stage", str(stage)], check=True, timeout=60)
    return stage


def unit_fields(path: Path) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            fields.setdefault(key.strip(), []).append(value.strip())
    return fields


def test_every_unit_passes_systemd_analyze_verify(staged, tmp_path):
    need("systemd-analyze")
    # The units name /usr/bin/filterd; point them at the staged launchers (the package's own files).
    for unit in UNITS:
        text = unit.read_text().replace("/usr/bin/filterd", f"{staged}/usr/bin/filterd")
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_exposure_is_at_most_2(service, capsys):
    need("systemd-analyze")
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(SERVICES[service])],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    with capsys.disabled():
        print(f"\n  systemd-analyze security {service}.service: exposure {score}")
    assert score <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("service", ["filterd", "filterd-webui"])
def test_services_run_unprivileged_in_the_sandbox_the_issue_asks_for(service):
    fields = unit_fields(SERVICES[service])
    one = {key: values[-1] for key, values in fields.items()}
    assert one["User"] == "filterd"
    assert one["AmbientCapabilities"] == one["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "NoNewPrivileges": "yes", "Restart": "on-failure",
                       "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK"}.items():
        assert one[key] == value, key
    assert "@system-service" in fields["SystemCallFilter"]
    assert set(one["ReadWritePaths"].split()) == {"/var/lib/filterd", "/etc/filterd"}
    assert int(one["MemoryMax"].rstrip("M")) <= 256          # a Pi Zero 2 W has 512 MB in all
    if service == "filterd":
        assert one["Type"] == "notify" and one["WatchdogSec"] and one["NotifyAccess"] == "all"


def test_shell_scripts_are_shellcheck_clean():
    shellcheck = need("shellcheck")
    paths = [str(PACKAGING / name) for name in SHELL_SCRIPTS]
    result = subprocess.run([shellcheck, *paths], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installer_refuses_an_unknown_option_without_changing_anything():
    result = subprocess.run(["bash", str(PACKAGING / "install.sh"), "--frobnicate"], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_packaged_config_answers_the_lan_on_port_53_with_encrypted_upstreams_first():
    config = load_config(PACKAGING / "filterd.yaml")
    assert {(listen.host, listen.port) for listen in config.dns.listen} == {("0.0.0.0", 53), ("::", 53)}  # nosec B104
    assert all(listen.host != "127.0.0.53" for listen in config.dns.listen)
    assert config.rules.web.port == 80
    assert config.dns.upstreams[0].scheme in ("tls", "https") and config.dns.upstreams[1].scheme in ("tls", "https")
    networks = {str(n) for n in config.dns.allow_networks}
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= networks
    cgnat = ipaddress.ip_network("100.64.0.0/10")
    assert all(n.is_private or (n.version == 4 and n.subnet_of(cgnat)) for n in config.dns.allow_networks)
    assert str(config.data_dir) == "/var/lib/filterd"
    assert config.dhcp.enabled is False


def test_deb_depends_on_debian_packages_for_every_python_dependency(tmp_path):
    need("dpkg-deb")
    need_source_tree()
    built = subprocess.run([str(PACKAGING / "debian" / "build.sh"), str(tmp_path)], capture_output=True, text=True,
                           timeout=120, check=True).stdout.strip()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert Path(built) == tmp_path / f"filterd_{version}_all.deb"
    depends = subprocess.run(["dpkg-deb", "-f", built, "Depends"], capture_output=True, text=True,
                             check=True).stdout
    wanted = {re.split(r"[<>=!;\[ ]", dep, maxsplit=1)[0].lower()
              for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for dependency in wanted:
        assert DEBIAN_PACKAGES[dependency] in depends, dependency
    assert subprocess.run(["dpkg-deb", "-f", built, "Architecture"], capture_output=True, text=True).stdout.strip() == "all"
    files = subprocess.run(["dpkg-deb", "-c", built], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/bin/filterd", "./usr/bin/filterd-webui", "./etc/filterd/filterd.yaml",
                 "./usr/lib/filterd/filterd/dns/server.py", "./usr/lib/filterd/webui/templates/devices.html",
                 "./usr/lib/filterd/config/categories.yaml", "./lib/systemd/system/filterd.service",
                 "./lib/systemd/system/filterd-webui.service", "./lib/systemd/system/filterd-dhcp.service",
                 "./lib/systemd/system/filterd-restart.path", "./lib/systemd/system/filterd-restart.service"):
        assert f" {path}\n" in files, path
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", built, str(control)], check=True)
    assert (control / "conffiles").read_text().split() == ["/etc/filterd/filterd.yaml"]


def test_staged_launchers_run_the_staged_code(staged):
    """The launcher finds the code in /usr/lib/filterd; run here with that path swapped for the stage."""
    launcher = (staged / "usr/bin/filterd").read_text().replace('"/usr/lib/filterd"', f'"{staged}/usr/lib/filterd"')
    result = subprocess.run(["python3", "-c", launcher.split("\n", 1)[1], "check", "--config",
                             str(staged / "etc/filterd/filterd.yaml")], capture_output=True, text=True, timeout=60,
                            cwd=staged)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"the system python3 lacks filterd's libraries: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    assert "OK (4 upstreams, listening on 0.0.0.0:53, [::]:53)" in result.stdout
