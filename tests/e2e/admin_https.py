"""The web UI as a Pi with `web.blockpage_https: ca` runs it: the real `filterd-webui` process,
its admin pages over HTTPS on the house's address (web.address, 127.0.0.3 here) under a
certificate the house CA issued for `filter.home` and that address, and the parents' account
already made. Shared by the scanner run and the Chromium HTTPS test.
"""
from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import yaml

from conftest import wait_until
from standin import free_port
from webui_fixtures import PASSWORD, password_hash

from filterd.store import state

from .browser import WebUI

ADDRESS = "127.0.0.3"          # web.address: where the HTTPS server listens
HOSTNAME = "filter.home"       # web.hostnames: the name parents type
PARENT = "127.0.0.1"


@dataclass
class HttpsWebUI:
    server: WebUI
    https_port: int
    data_dir: Path

    @property
    def origin(self) -> str:
        """The admin pages by address, as a scanner with no DNS for filter.home reaches them."""
        return f"https://{ADDRESS}:{self.https_port}"

    def ca_pem(self) -> str:
        """GET http://filter.home/ca.crt, as a parent's phone does before it trusts the CA."""
        request = urllib.request.Request(self.server.url + "/ca.crt", headers={"Host": HOSTNAME})
        with urllib.request.urlopen(request, timeout=5) as response:   # nosec B310 - a loopback http:// URL
            return response.read().decode()

    def login(self, password: str = PASSWORD) -> tuple[str, str]:
        """Log in over HTTPS (verifying the certificate against the house CA alone) and return
        the session cookie (name, value): `__Host-filterd_session`."""
        context = ssl.create_default_context(cadata=self.ca_pem())
        cookies: dict[str, str] = {}

        def send(method: str, path: str, body: str | None = None) -> http.client.HTTPResponse:
            connection = http.client.HTTPSConnection(ADDRESS, self.https_port, context=context, timeout=10,
                                                     source_address=(PARENT, 0))
            headers = {"Host": f"{ADDRESS}:{self.https_port}"}
            if cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.body = response.read()
            connection.close()
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                value = rest.split(";", 1)[0]
                if value:
                    cookies[name] = value
            return response

        page = send("GET", "/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', page.body).group(1).decode()
        answer = send("POST", "/login", urlencode({"csrf_token": token, "password": password}))
        assert answer.status in (302, 303), (answer.status, answer.body[:300])
        assert "__Host-filterd_session" in cookies, cookies
        return "__Host-filterd_session", cookies["__Host-filterd_session"]


def write_config(folder: Path) -> tuple[Path, int, int]:
    """A config for the web UI alone (no daemon needed), HTTPS on, the parents' account made."""
    folder.mkdir(parents=True, exist_ok=True)
    web_port, https_port = free_port(), free_port()
    config = {
        "timezone": "UTC", "data_dir": str(folder / "var"),
        "dns": {"listen": [f"127.0.0.1:{free_port()}"], "upstreams": ["udp://127.0.0.1:1"]},
        "web": {"listen": f"127.0.0.1:{web_port}", "address": ADDRESS, "hostnames": [HOSTNAME],
                "blockpage_https": "ca", "https_port": https_port},
        "profiles": {"kids": {"block": ["blocked.example"]}, "adults": {}},
        "devices": [{"name": "tablet", "ip": "127.0.0.2", "profile": "kids"}],
        "default_profile": "adults",
    }
    path = folder / "filterd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    data_dir = folder / "var"
    data_dir.mkdir(parents=True, exist_ok=True)
    db = state.connect(state.db_path(data_dir))
    try:
        now = time.time()
        db.execute("INSERT INTO admin (id, password_hash, created, changed) VALUES (1, ?, ?, ?)",
                   (password_hash(), now, now))
    finally:
        db.close()
    return path, web_port, https_port


def start(folder: Path) -> HttpsWebUI:
    """filterd-webui with its HTTPS server listening; stop it with `.server.stop()`."""
    config_path, web_port, https_port = write_config(folder)
    server = WebUI(config_path, web_port, folder).start()
    try:
        wait_until(lambda: _accepts(ADDRESS, https_port) or server.process.poll() is not None, timeout=20,
                   message="the HTTPS server to listen")
        assert server.process.poll() is None, server.log()
    except BaseException:
        server.stop()
        raise
    return HttpsWebUI(server, https_port, folder / "var")


def _accepts(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False
