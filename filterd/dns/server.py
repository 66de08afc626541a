"""Sockets and processes: UDP, TCP, DoT and DoH listeners, worker processes, config reload, signals.

Each worker process binds every `dns.listen` address with SO_REUSEPORT (the kernel spreads
queries across workers) and runs its own event loop and `Resolver`. Every worker watches the
config file itself (mtime/inode/size, once a second): a valid new file swaps in a new Resolver
between two queries, the old one finishing the queries it had sent upstream; an invalid one is
logged and the old rules keep serving. A TCP client that half-closes gets every answer it is
owed before the connection closes. Each worker also follows the state DB (a deleted file is
made again) and writes its health into `daemon_status` every five seconds.

DNS over TLS is DNS over TCP inside TLS (RFC 7858): the same connection class, its client ID
read from the SNI once the handshake is done. DNS over HTTPS is `doh.DohConnection`. Both count
against the TCP limits (connections in total and per client, idle timeout); their certificate
(`tls.TlsCertificates`) is reloaded by the same once-a-second watch as the config.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from filterd.lists import sources
from filterd.family import limits
from filterd.store import state, status
from filterd.dns import sdnotify
from filterd.rules.clock import CLOCK_FLOOR
from filterd.store.log_writer import QueryLog, is_disk_full
from filterd.dns.clients import read_neighbours
from filterd.rules.config import Config, ConfigError, Listen, load_config
from filterd.rules.policy import Policy
from filterd.lists.build import build_policy
from filterd.files import file_signature
from filterd.dns.resolver import Resolver
from filterd.dns import tls
from filterd.dns.doh import DohConnection

log = logging.getLogger("filterd.server")

TCP_MAX_MESSAGE = 65535
TCP_MAX_BUFFERED = 256 * 1024
TLS_HANDSHAKE_TIMEOUT_S = 10.0   # a client that connects and never finishes its handshake
UPSTREAM_FAILING_AFTER = 3   # failures in a row before an upstream counts as down in the status


class UdpServer(asyncio.DatagramProtocol):
    """Answers datagrams; the hot path sends the reply without creating a task."""

    def __init__(self, daemon: "Worker"):
        self.daemon = daemon
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            reply = self.daemon.resolver.answer(data, addr[0], 0)
        except Exception:  # never let one packet take the worker down
            log.exception("error answering %s from %s", data[:32].hex(), addr[0])
            return
        if reply is None:
            return
        if reply.__class__ is bytes:
            self.transport.sendto(reply, addr)
        else:
            self.daemon.spawn(self._later(reply, addr))

    async def _later(self, pending, addr) -> None:
        try:
            reply = await pending
        except Exception:
            log.exception("error resolving a query from %s", addr[0])
            return
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP socket error: %s", exc)


class TcpConnection(asyncio.Protocol):
    """One client's TCP connection: length-prefixed queries, answered as they complete (RFC 7766)."""

    def __init__(self, daemon: "Worker"):
        self.daemon = daemon
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.idle_handle: asyncio.TimerHandle | None = None
        self.outstanding = 0
        self.admitted = False
        self.eof = False    # the client half-closed: answer what it asked, then close
        self.client_id: str | None = None   # DoT: the device's name for itself, from the SNI

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        if not self.daemon.tcp_admit(self):
            transport.abort()
            self.transport = None
            return
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        timeout = self.daemon.resolver.config.dns.tcp.idle_timeout_s
        self.idle_handle = asyncio.get_running_loop().call_later(timeout, self._idle)

    def _idle(self) -> None:
        if self.outstanding == 0 and self.transport is not None:
            self.transport.close()
        else:
            self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.buffer += data
        self._arm_idle()
        while len(self.buffer) >= 2:
            size = (self.buffer[0] << 8) | self.buffer[1]
            if len(self.buffer) < 2 + size:
                break
            message = bytes(self.buffer[2:2 + size])
            del self.buffer[:2 + size]
            self._handle(message)

    def _handle(self, message: bytes) -> None:
        try:
            reply = self.daemon.resolver.answer(message, self.ip, TCP_MAX_MESSAGE, self.client_id)
        except Exception:
            log.exception("error answering TCP query from %s", self.ip)
            return
        if reply is None:
            return
        if reply.__class__ is bytes:
            self._send(reply)
        else:
            self.outstanding += 1
            self.daemon.spawn(self._later(reply))

    async def _later(self, pending) -> None:
        reply = None
        try:
            reply = await pending
        except Exception:
            log.exception("error resolving a TCP query from %s", self.ip)
        finally:
            self.outstanding -= 1
            if reply is not None:
                self._send(reply)
            if self.eof and not self.outstanding and self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool:
        """The client shut its sending side: RFC 7766 §6.2.4 wants every answer still owed
        sent before the connection closes. True keeps the transport open meanwhile."""
        self.eof = True
        return self.outstanding > 0

    def _send(self, reply: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(struct.pack(">H", len(reply)) + reply)
            if transport.get_write_buffer_size() > TCP_MAX_BUFFERED:
                # A client that pipelines queries but never reads: drop it, don't buffer forever.
                transport.abort()

    def connection_lost(self, exc) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        self.daemon.tcp_release(self)
        self.transport = None


class DotConnection(TcpConnection):
    """DNS over TLS: DNS over TCP once the handshake is done, with pipelining and answers out
    of order; the first label of the name the client asked for (SNI) is its client ID."""

    def connection_made(self, transport) -> None:
        certificates = self.daemon.tls
        if certificates is not None:
            self.client_id = tls.client_id_from_server_name(tls.server_name_of(transport), certificates.names)
        super().connection_made(transport)


def _bind_udp(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
    sock.bind((listen.host, listen.port))
    sock.setblocking(False)
    return sock


def _bind_tcp(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((listen.host, listen.port))
    sock.listen(256)
    sock.setblocking(False)
    return sock


class ConfigWatcher:
    """Notices a changed config file by its stat signature (mtime, inode, size)."""

    def __init__(self, path: Path):
        self.path = path
        self.signature = file_signature(self.path)

    def changed(self) -> bool:
        signature = file_signature(self.path)
        if signature is None or signature == self.signature:
            return False
        self.signature = signature
        return True


class Worker:
    """One process's DNS service: its sockets, its Resolver, its background tasks."""

    def __init__(self, config: Config, index: int = 0, policy: Policy | None = None):
        self.config = config
        self.index = index
        self.workers = config.dns.workers   # as started: a changed count waits for a restart
        # A policy built before fork is shared: its index is one mmap, inherited by every worker.
        self.querylog = QueryLog(state.db_path(config.data_dir), config.log, retention=index == 0)
        self.usage = limits.UsageCounter(config.limits_gap_s)
        self.resolver = Resolver(config, policy or build_policy(config, compile_if_missing=index == 0),
                                 querylog=self.querylog, usage=self.usage)
        self.lists_signature = self.resolver.policy.index.path   # the last good one, if lists changed
        self.state_db = state.Reopening(state.db_path(config.data_dir))
        self.db_version = None
        self.status_failures = 0    # status rows that could not be written (counted in the next one)
        self.status_failing = False
        self.status_written: status.WorkerStatus | None = None   # the last row written: counters' growth since
        self.started = time.time()
        self.last_reload: float | None = None
        self.last_error: str | None = None
        self._load_overrides()
        self.tasks: set[asyncio.Task] = set()
        self.tcp_connections: dict[str, int] = {}
        self.tcp_total = 0
        self.stopping: asyncio.Event | None = None
        self.servers: list = []
        self.tls: tls.TlsCertificates | None = None   # DoT/DoH's certificate, when either is on

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def tcp_admit(self, conn) -> bool:
        limits = self.resolver.config.dns.tcp
        per_client = self.tcp_connections.get(conn.ip, 0)
        if self.tcp_total >= limits.max_connections or per_client >= limits.max_per_client:
            conn.admitted = False
            return False
        conn.admitted = True
        self.tcp_total += 1
        self.tcp_connections[conn.ip] = per_client + 1
        return True

    def tcp_release(self, conn) -> None:
        if not conn.admitted:
            return
        conn.admitted = False
        self.tcp_total -= 1
        left = self.tcp_connections.get(conn.ip, 1) - 1
        if left:
            self.tcp_connections[conn.ip] = left
        else:
            self.tcp_connections.pop(conn.ip, None)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._force_reload)
        for listen in self.config.dns.listen:
            transport, _ = await loop.create_datagram_endpoint(lambda: UdpServer(self), sock=_bind_udp(listen))
            self.servers.append(transport)
            server = await loop.create_server(lambda: TcpConnection(self), sock=_bind_tcp(listen))
            self.servers.append(server)
        await self._serve_encrypted(loop)
        if self.index == 0:
            log.info("answering DNS on %s (UDP and TCP), upstreams %s",
                     ", ".join(map(str, self.config.dns.listen)),
                     ", ".join(u.url for u in self.config.dns.upstreams))
        self.querylog.start()
        if self.index == 0:   # under systemd: READY=1 once DNS answers, then watchdog pings from this loop
            first = self.config.dns.listen[0]
            self.spawn(sdnotify.serve_systemd(first.host, first.port))
        watcher = asyncio.ensure_future(self._watch_config())
        await self.stopping.wait()
        watcher.cancel()
        for server in self.servers:
            server.close()
        for task in list(self.tasks):
            task.cancel()
        self.resolver.close()
        self.querylog.stop()
        try:
            self.usage.flush(self.db)       # the minutes of the last seconds count too
        except Exception:
            pass
        try:
            status.remove(self.db, os.getpid())
        except Exception:
            pass
        self.state_db.close()

    async def _serve_encrypted(self, loop) -> None:
        """DoT and DoH listeners, when configured (the certificate is made or loaded first)."""
        encrypted = self.config.dns.encrypted
        if not encrypted.on:
            return
        self.tls = tls.TlsCertificates(self.config)
        for kind, listens, protocol in ((tls.DOT, encrypted.tls_listen, DotConnection),
                                        (tls.DOH, encrypted.https_listen, DohConnection)):
            for listen in listens:
                server = await loop.create_server(lambda protocol=protocol: protocol(self), sock=_bind_tcp(listen),
                                                  ssl=self.tls.listener_context(kind),
                                                  ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)
                self.servers.append(server)
        if self.index == 0:
            log.info("answering DNS over TLS on %s and over HTTPS on %s, for %s",
                     ", ".join(map(str, encrypted.tls_listen)) or "-",
                     ", ".join(map(str, encrypted.https_listen)) or "-", ", ".join(self.tls.names))

    @property
    def db(self):
        return self.state_db.conn

    def _follow_the_state_db(self) -> None:
        """The state DB was deleted or replaced while we run: open the new one (created and
        migrated), say so once, and read the overrides afresh."""
        try:
            if not self.state_db.check():
                return
        except state.StateError as exc:
            log.warning("the state DB %s is gone and cannot be made again: %s", self.state_db.path, exc)
            return
        self.db_version = None
        (log.warning if self.index == 0 else log.debug)(
            "the state DB %s was deleted or replaced while running: opened a new one", self.state_db.path)

    async def _watch_config(self) -> None:
        """Once a second: a changed config or changed list files → a new policy, off the hot path."""
        watcher = ConfigWatcher(self.config.path) if self.config.path else None
        config_changed = False
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            self._follow_the_state_db()
            if ticks % 5 == 1:
                self._refresh_neighbours()
                self._write_status()
            if ticks % 5 == 3:
                self._count_limits()
            if self.index == 0 and ticks % 3600 == 7:
                try:
                    limits.prune(self.db)
                except Exception as exc:
                    log.debug("cannot prune old limit usage: %s", exc)
            self._load_overrides()
            if self.tls is not None and ticks % 5 == 2:
                self.tls.refresh()
            if watcher is not None and watcher.changed():
                config_changed = True
            try:
                if config_changed:
                    config_changed = not await self.reload()
                elif self._lists_to_swap():
                    await self.reload(self.config)
            except Exception:
                log.exception("reload failed; still serving the previous rules")

    def _lists_to_swap(self) -> bool:
        """The list files changed and their index is there to map, or this worker is the one
        to compile it (worker 0, when no `filterd lists update` is running: that compiles itself)."""
        current = sources.current_signature_path(self.config)
        if current == self.lists_signature:
            return False
        return current is None or current.exists() or (self.index == 0 and not sources.update_running(self.config))

    def _force_reload(self) -> None:
        """SIGHUP: reload the config now (it is reloaded on change anyway)."""
        self.spawn(self.reload())

    def _load_overrides(self, force: bool = False) -> None:
        """Pick up pauses, allows and spent limits within a second: the DB's data_version says
        when another process wrote (`force`: this worker just merged its own minutes)."""
        try:
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
            if version == self.db_version and not force:
                return
            self.db_version = version
            active = limits.overrides_in_force(self.db, self.config, time.time())
        except Exception as exc:  # a locked or damaged DB must not stop DNS
            log.warning("cannot read overrides from the state DB: %s", exc)
            return
        self.resolver.new_overrides(active)

    def _count_limits(self) -> None:
        """Merge this worker's counted minutes into the state DB (every worker's count, kept across
        restarts), and close what a used-up allowance closes."""
        if not self.usage.pending:
            return
        try:
            self.usage.flush(self.db)
        except Exception as exc:  # kept in memory for the next try
            log.warning("cannot save the daily limits' minutes: %s", exc)
            return
        self._load_overrides(force=True)

    def _write_status(self) -> None:
        """This worker's row in daemon_status, for the dashboard and the alerts.

        A row left by a worker that was killed (kill -9, OOM) is removed by the worker that
        took its place, so a dead worker never stands beside the live one."""
        querylog = self.querylog
        counters = self.resolver.counters
        try:
            mtime = os.stat(self.config.path).st_mtime if self.config.path else None
            upstreams = self.resolver.pool.upstreams
            # Failing = several failures in a row with no success since: an idle night does not
            # make an outage look over, and one lost packet does not make one.
            failing = sum(1 for u in upstreams if u.failures >= UPSTREAM_FAILING_AFTER)
            now = time.time()
            row = status.WorkerStatus(
                os.getpid(), self.index, self.started, now, mtime, self.last_reload, self.last_error,
                querylog.dropped, len(upstreams), failing, querylog.written, querylog.dropped_queue_full,
                querylog.write_failures + self.status_failures, querylog.disk_full, querylog.last_error,
                querylog.last_error_at, self.state_db.reopened + querylog.reopened, int(now < CLOCK_FLOOR),
                querylog.retention_skipped,
                counters["rate_refused"] + counters["rate_dropped"] + counters["rate_slipped"],
                counters["scrubbed_answers"])
            status.write(self.db, row, self.workers, self.status_written)
            self.status_written = row
        except Exception as exc:
            # A full disk stops this row too: count it, warn once, the log's counters keep it.
            self.status_failures += 1
            if is_disk_full(exc):
                querylog.disk_full += 1
            (log.debug if self.status_failing else log.warning)("cannot write the daemon status: %s", exc)
            self.status_failing = True
        else:
            if self.status_failing:
                log.warning("the daemon status is written again")
            self.status_failing = False

    def _refresh_neighbours(self) -> None:
        neighbours = read_neighbours()
        self.resolver.new_neighbours(neighbours)
        self.querylog.neighbours = neighbours

    async def reload(self, config: Config | None = None) -> bool:
        """Swap in a Resolver for the changed file or lists; keep the old one if the file is bad.

        Returns False when it should be tried again (another worker is still compiling).
        """
        if config is None:
            try:
                config = load_config(self.config.path)
            except ConfigError as exc:
                self.last_error = "; ".join(exc.problems)
                if self.index == 0:
                    log.error("config %s refused, still serving the previous one:\n  %s",
                              self.config.path, "\n  ".join(exc.problems))
                self._write_status()
                return True
        if config.dns.listen != self.config.dns.listen or config.dns.workers != self.config.dns.workers or \
                (config.dns.encrypted.tls_listen, config.dns.encrypted.https_listen) != \
                (self.config.dns.encrypted.tls_listen, self.config.dns.encrypted.https_listen):
            if self.index == 0:
                log.warning("dns.listen, tls_listen, https_listen and workers take effect at the next restart")
        loop = asyncio.get_running_loop()
        try:
            # Compiling a big list takes seconds: do it in a thread, serving on meanwhile.
            # Worker 0 compiles, unless `filterd lists update` is running: it compiles once its
            # downloads are done. Meanwhile changed rules apply at once, over the last good index
            # (the watch reloads again when the new index is there).
            compile_here = self.index == 0 and not sources.update_running(config)
            policy = await loop.run_in_executor(None, build_policy, config, compile_here, False,
                                                not compile_here)
        except FileNotFoundError:
            return False   # worker 0 compiles it; look again in a second
        old = self.resolver
        dns = config.dns
        same_upstreams = old.pool.serves(dns.upstreams, dns.upstream_timeout_s, dns.tls_ca_file, dns.bootstrap)
        keep_cache = config.dns.upstreams == old.config.dns.upstreams and \
            config.dns.cache == old.config.dns.cache
        self.resolver = Resolver(config, policy, old.cache if keep_cache else None, old.overrides,
                                 old.pool if same_upstreams else None, old.neighbours, self.querylog, self.usage)
        self.usage.gap_minutes = max(1, config.limits_gap_s // 60)
        self.resolver.counters = old.counters   # what the status row shows counts on across reloads
        self.querylog.configure(config.log)
        if self.tls is not None:
            self.tls.refresh(config)   # other names or files: a new certificate
        self.config = config
        self.lists_signature = policy.index.path
        old.retire(self.resolver)   # its queries still waiting upstream are answered, not dropped
        self.last_reload = time.time()
        self.last_error = None
        self._write_status()
        if self.index == 0:
            log.info("rules reloaded from %s", config.path)
        return True


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _run_worker(config: Config, index: int, policy: Policy | None = None) -> None:
    loop_name = _install_uvloop()
    if index == 0:
        log.debug("event loop: %s", loop_name)
    asyncio.run(Worker(config, index, policy).serve())


def run(config: Config) -> int:
    """Serve until SIGTERM/SIGINT: in this process for one worker, else in forked children."""
    workers = config.dns.workers
    # Bind once here, without SO_REUSEPORT, so a port already in use (another filterd, dnsmasq,
    # systemd-resolved) or a privileged one fails loudly before any worker starts.
    encrypted = config.dns.encrypted
    probes = [(listen, kind) for listen in config.dns.listen for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
    probes += [(listen, socket.SOCK_STREAM) for listen in encrypted.tls_listen + encrypted.https_listen]
    try:
        for listen, kind in probes:
            with socket.socket(socket.AF_INET6 if ":" in listen.host else socket.AF_INET, kind) as probe:
                probe.bind((listen.host, listen.port))
    except OSError as exc:
        log.error("cannot listen on %s: %s", listen, exc.strerror)
        return 1
    if encrypted.on:
        problems = tls.problems(config)
        if problems:
            log.error("DNS over TLS/HTTPS cannot start: %s", "; ".join(problems))
            return 1
    # Compile the lists once, before any worker starts, so every worker just maps the file; when
    # the lists changed since the last compile, serve the last good index at once and let worker 0
    # compile the new one in the background (its watch sees the index in use is not the current).
    policy = build_policy(config, last_good=True)
    if workers == 1:
        _run_worker(config, 0, policy)
        return 0
    return _supervise(config, workers, policy)


def _supervise(config: Config, workers: int, policy: Policy) -> int:
    """Fork the workers, restart any that dies, stop them all on SIGTERM within 2 s."""
    children: dict[int, int] = {}

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            try:
                _run_worker(config, index, policy)
                code = 0
            except BaseException:
                log.exception("worker %d crashed", index)
                code = 1
            sys.stderr.flush()
            os._exit(code)
        children[pid] = index

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: [os.kill(pid, signal.SIGHUP) for pid in children])
    for index in range(workers):
        start(index)
    last_restart = 0.0
    while not stopping:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
            continue
        index = children.pop(pid, None)
        if index is not None and not stopping:
            log.error("worker %d exited (status %d); restarting it", index, status)
            if time.monotonic() - last_restart < 1:
                time.sleep(1)
            last_restart = time.monotonic()
            start(index)
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 1.5
    while children and time.monotonic() < deadline:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.02)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    return 0
