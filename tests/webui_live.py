"""The real web UI over real HTTP: the app served by waitress (with `filterd-webui`'s options) on
127.0.0.1 in a thread, and a small client that speaks HTTP/1.1 over a socket of its own.

The client can send from any loopback address (127.0.0.2, 127.0.0.3, …: Linux routes the whole
127/8 to lo), so "another device on the Wi-Fi" is a different peer address the server sees on
its socket, as a child's tablet would be. It keeps cookies like a browser (no redirects followed).
"""
from __future__ import annotations

import http.client
import json as jsonlib
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import urlencode

import waitress


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []

    def json(self):
        return jsonlib.loads(self.text)

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")


class LiveUI:
    """`app` served by waitress on 127.0.0.1:<free port> until `close()`."""

    def __init__(self, app, host: str = "127.0.0.1"):
        self.server = waitress.create_server(app, host=host, port=0, threads=2, ident="",
                                             clear_untrusted_proxy_headers=True,
                                             max_request_body_size=2 * 2**20, channel_timeout=30)
        self.host = host
        self.port = self.server.effective_port
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        """waitress's loop in short turns, so that the sockets are closed by this thread, never
        under a select() running in it."""
        while not self._stop.is_set():
            self.server.asyncore.loop(timeout=0.05, map=self.server._map, count=1)
        self.server.close()
        self.server.task_dispatcher.shutdown()

    def client(self, peer: str = "127.0.0.1", host: str | None = None) -> "Client":
        return Client(self, peer, host or f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=20)


@dataclass
class Client:
    live: LiveUI
    peer: str
    host: str
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict | None = None, json=None, headers: dict | None = None,
                host: str | None = None) -> Reply:
        body = None
        sent = {"Host": host or self.host, **(headers or {})}
        if form is not None:
            body = urlencode(form)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json is not None:
            body = jsonlib.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        if self.cookies:
            sent.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        connection = http.client.HTTPConnection(self.live.host, self.live.port, timeout=20,
                                                source_address=(self.peer, 0))
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            connection.close()
        for header in reply.cookies():
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header or "01 Jan 1970" in header or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def get(self, path: str, **options) -> Reply:
        return self.request("GET", path, **options)

    def post(self, path: str, form: dict | None = None, **options) -> Reply:
        return self.request("POST", path, form=form if form is not None or "json" in options else {}, **options)

    def csrf(self, path: str = "/settings") -> str:
        page = self.get(path)
        assert page.status == 200, (path, page.status)
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert match, f"no csrf-token meta tag on {path}"
        return match.group(1)

    def login(self, password: str) -> Reply:
        return self.post("/login", {"csrf_token": self.csrf("/login"), "password": password})
