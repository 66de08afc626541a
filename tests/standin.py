"""A stand-in upstream DNS server for the tests: real UDP, TCP, TLS (DoT) and HTTPS (DoH) sockets.

It answers from a small zone of records given as zone-file lines, and any other name with an A
record derived from the name, so tests can tell answers apart. Its behaviour can be switched at
run time (answer, SERVFAIL, drop, NXDOMAIN) and it counts the questions it received.
"""
from __future__ import annotations

import datetime
import http.server
import socket
import socketserver
import ssl
import struct
import threading
import zlib
from collections import Counter
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, A, DNSRecord


def name_address(name: str) -> str:
    """A stable test address for a name, so answers for different names differ."""
    h = zlib.crc32(name.lower().rstrip(".").encode())
    return f"198.18.{(h >> 8) & 0xFF}.{h & 0xFF}"


class StandIn:
    """Answers queries; behaviour is shared by every protocol front end."""

    def __init__(self, ttl: int = 300):
        self.ttl = ttl
        self.mode = "answer"       # answer | servfail | refused | drop
        self.records: dict[tuple[str, str], list[RR]] = {}
        self.nxdomain: set[str] = set()
        self.questions: Counter[tuple[str, str]] = Counter()
        self.delay_s = 0.0
        self.authoritative = False  # set AA in every answer, as an authoritative server would
        # (name, qtype) → records appended to that question's answer that do not belong to it
        self.junk: dict[tuple[str, str], list[RR]] = {}
        self.lock = threading.Lock()
        self._servers: list = []
        self._threads: list[threading.Thread] = []

    def add(self, *zone_lines: str) -> None:
        for line in zone_lines:
            for rr in RR.fromZone(line):
                key = (str(rr.rname).rstrip(".").lower(), QTYPE[rr.rtype])
                self.records.setdefault(key, []).append(rr)

    def count(self, name: str, qtype: str = "A") -> int:
        with self.lock:
            return self.questions[(name.lower(), qtype)]

    def respond(self, data: bytes) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        with self.lock:
            self.questions[(name, qtype)] += 1
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        if self.mode == "drop":
            return None
        reply = request.reply()
        reply.header.aa = int(self.authoritative)
        for rr in self.junk.get((name, qtype), []):
            reply.add_answer(rr)
        if self.mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        if self.mode == "refused":
            reply.header.rcode = RCODE.REFUSED
            return reply.pack()
        if name in self.nxdomain or name.startswith("nx.") or name.endswith(".nx.test"):
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(*RR.fromZone(f"test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 {min(self.ttl, 120)}"))
            return reply.pack()
        answers = self.records.get((name, qtype))
        if answers is None and qtype != "CNAME":
            cname = self.records.get((name, "CNAME"))
            if cname:
                target = str(cname[0].rdata.label).rstrip(".").lower()
                reply.add_answer(*cname)
                for rr in self.records.get((target, qtype), []) or (
                        RR.fromZone(f"{target}. {self.ttl} IN A {name_address(target)}") if qtype == "A" else []):
                    reply.add_answer(rr)
                return reply.pack()
        if answers is None:
            if qtype == "A" and not name.startswith("nodata."):   # any name, even one no zone file can spell
                answers = [RR(q.qname, QTYPE.A, ttl=self.ttl, rdata=A(name_address(name)))]
            else:
                reply.add_auth(*RR.fromZone(f"test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 {min(self.ttl, 120)}"))
                answers = []
        for rr in answers:
            reply.add_answer(rr)
        packed = reply.pack()
        return packed

    # ------------------------------------------------ front ends

    def start(self, host: str = "127.0.0.1", port: int = 0, tls_cert: tuple[Path, Path] | None = None,
              doh: bool = False) -> int:
        """Serve UDP and TCP (or TLS, or DoH when `doh`) on host:port; return the port."""
        standin = self

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                answer = standin.respond(data)
                if answer is None:
                    return
                limit = 512
                try:
                    edns = [rr for rr in DNSRecord.parse(data).ar if rr.rtype == 41]
                    if edns:
                        limit = max(512, edns[0].rclass)
                except Exception:
                    pass
                if len(answer) > limit:
                    qend = data.index(b"\0", 12) + 5   # the question name is uncompressed
                    answer = bytearray(answer[:12]) + data[12:qend]
                    answer[2] |= 0x02
                    answer[6:12] = b"\0\0\0\0\0\0"
                    answer = bytes(answer)
                sock.sendto(answer, self.client_address)

        class TcpHandler(socketserver.BaseRequestHandler):
            def handle(self):
                conn = self.request
                if tls_cert:
                    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    context.load_cert_chain(*tls_cert)
                    try:
                        conn = context.wrap_socket(conn, server_side=True)
                    except (ssl.SSLError, OSError):
                        return
                write_lock = threading.Lock()

                def answer(data: bytes) -> None:
                    reply = standin.respond(data)
                    if reply is not None:
                        with write_lock:
                            try:
                                conn.sendall(struct.pack(">H", len(reply)) + reply)
                            except OSError:
                                pass
                try:
                    while True:
                        head = _recv_exact(conn, 2)
                        if not head:
                            return
                        data = _recv_exact(conn, struct.unpack(">H", head)[0])
                        if standin.delay_s:   # a slow upstream still answers pipelined queries side by side
                            threading.Thread(target=answer, args=(data,), daemon=True).start()
                        else:
                            answer(data)
                except OSError:
                    return

        class DohHandler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = standin.respond(body)
                if answer is None:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/dns-message")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        class ThreadingUdp(socketserver.ThreadingMixIn, socketserver.UDPServer):
            daemon_threads = True
            allow_reuse_address = True

        class ThreadingTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        if doh:
            server = http.server.ThreadingHTTPServer((host, port), DohHandler)
            server.daemon_threads = True
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls_cert)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            servers = [server]
        elif tls_cert:
            servers = [ThreadingTcp((host, port), TcpHandler)]
        else:
            tcp = ThreadingTcp((host, port), TcpHandler)
            port = tcp.server_address[1]
            servers = [tcp, ThreadingUdp((host, port), UdpHandler)]
        for server in servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return servers[0].server_address[1]

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()


def _recv_exact(conn, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def make_certificate(folder: Path, host: str = "localhost") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for host (and 127.0.0.1); returns (ca, cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "filterd test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def make_wildcard_certificate(folder: Path, base: str, days: int = 30) -> tuple[Path, Path, Path]:
    """(ca, fullchain, key) for `base` and `*.base`, as an ACME client would write them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ACME CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, base)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(base), x509.DNSName(f"*.{base}")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "ca.pem", folder / "fullchain.pem", folder / "privkey.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
