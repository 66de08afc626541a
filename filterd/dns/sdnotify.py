"""Telling systemd how the daemon is doing: the sd_notify datagram protocol, without libsystemd.

With `Type=notify`, systemd starts the next unit (and `systemctl start` returns) only when the
service says `READY=1`; with `WatchdogSec=`, it restarts a service that stops saying
`WATCHDOG=1`. The protocol is one datagram per message on the AF_UNIX socket named by
`$NOTIFY_SOCKET` (a path, or an abstract name written with a leading '@'), documented in
sd_notify(3). Ready means "answers DNS": the event loop sends itself a query and waits for the
reply before saying so, and the watchdog pings run on that same loop, so a wedged loop stops
them and systemd restarts the daemon.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("filterd.sdnotify")

# A CHAOS-class question: it goes through the same parsing as any query but is REFUSED before
# the policy, so it is never logged and never reaches an upstream.
PROBE = (b"\x5a\x5a\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
         b"\x05ready\x07filterd\x00\x00\x10\x00\x03")
PROBE_RETRY_S = 0.2


def socket_address(environ: Mapping[str, str] = os.environ) -> str | bytes | None:
    """The notification socket's address: a path, or bytes starting with NUL for an abstract name."""
    name = environ.get("NOTIFY_SOCKET", "")
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None   # unset, or a form we do not speak (e.g. vsock): nothing to tell


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send one message ("READY=1", "WATCHDOG=1", "STATUS=…"); False when nobody listens."""
    address = socket_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
        return True
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", environ.get("NOTIFY_SOCKET"), exc)
        return False


def watchdog_interval_s(environ: Mapping[str, str] = os.environ, pids: tuple[int, ...] = ()) -> float | None:
    """How often to ping: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; None when off.

    $WATCHDOG_PID names the process systemd watches; `pids` are the processes that may ping for
    it (this one and, for a forked worker, the supervisor systemd started).
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watched = environ.get("WATCHDOG_PID")
    if watched:
        try:
            if int(watched) not in (pids or (os.getpid(), os.getppid())):
                return None
        except ValueError:
            return None
    return usec / 2_000_000


class _ProbeReply(asyncio.DatagramProtocol):
    def __init__(self, answered: asyncio.Event):
        self.answered = answered

    def datagram_received(self, data: bytes, addr) -> None:
        if data[:2] == PROBE[:2]:
            self.answered.set()


def probe_address(host: str) -> str:
    """Where to ask ourselves: a wildcard listener is reached over loopback."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


async def wait_until_answering(host: str, port: int) -> None:
    """Ask our own DNS socket until it replies (any reply: even REFUSED proves the loop answers)."""
    loop = asyncio.get_running_loop()
    answered = asyncio.Event()
    target = (probe_address(host), port)
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(lambda: _ProbeReply(answered), family=family,
                                                       remote_addr=target)
    try:
        while not answered.is_set():
            transport.sendto(PROBE)
            try:
                await asyncio.wait_for(answered.wait(), PROBE_RETRY_S)
            except asyncio.TimeoutError:
                continue
    finally:
        transport.close()


async def serve_systemd(host: str, port: int, environ: Mapping[str, str] = os.environ) -> None:
    """Under systemd: READY=1 once DNS answers on (host, port), then the watchdog pings forever.

    Runs as a task on the serving event loop; does nothing when not started by systemd.
    """
    if socket_address(environ) is None:
        return
    await wait_until_answering(host, port)
    notify(f"READY=1\nSTATUS=answering DNS on {host}:{port}", environ)
    interval = watchdog_interval_s(environ)
    while interval:
        notify("WATCHDOG=1", environ)
        await asyncio.sleep(interval)
