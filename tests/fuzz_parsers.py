#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris) of the two parsers that read bytes from the network.

`wire.parse_query` reads every client's query by hand; `cache.entry_from_response` reads every
upstream answer (dnslib, then the scrubber, then the TTL walk). Each may refuse its input only
with `wire.WireError`: any other exception is a bug a packet could trigger, and atheris stops
with the input that did it. `make fuzz` runs both for a fixed number of runs.

    python tests/fuzz_parsers.py query -runs=200000
    python tests/fuzz_parsers.py answer -runs=200000
"""
from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from filterd.dns import wire
    from filterd.dns.cache import entry_from_response


def fuzz_query(data: bytes) -> None:
    try:
        query = wire.parse_query(data)
    except wire.WireError:
        return
    query.name
    wire.error_reply(query, wire.SERVFAIL)
    wire.truncated_reply(query)


def fuzz_answer(data: bytes) -> None:
    try:
        entry, _ = entry_from_response(data, 1000.0, False, 0, 86400, 3600, 86400)
    except wire.WireError:
        return
    entry.reply(_QUERY, 1001.0, 512)     # TTLs rendered, ID and question spliced
    entry.stale_reply(_QUERY, 65535)


_QUERY = wire.parse_query(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04test\x00\x00\x01\x00\x01")


def seed(folder: Path, kind: str) -> None:
    """Start an empty corpus folder with real messages, so the fuzzer begins past the header."""
    from dnslib import EDNS0, RR, DNSRecord

    samples = []
    for name, qtype, lines in [
            ("example.test", "A", ["example.test. 300 IN A 192.0.2.1"]),
            ("www.shop.test", "A", ["www.shop.test. 300 IN CNAME cdn.shop.test.", "cdn.shop.test. 60 IN A 192.0.2.9"]),
            ("mail.test", "MX", ["mail.test. 300 IN MX 10 mx.mail.test."]),
            ("txt.test", "TXT", ['txt.test. 300 IN TXT "v=spf1 -all"']),
            ("v6.test", "AAAA", ["v6.test. 300 IN AAAA 2001:db8::1"])]:
        query = DNSRecord.question(name, qtype)
        query.add_ar(EDNS0(udp_len=1232))
        reply = query.reply()
        for line in lines:
            reply.add_answer(*RR.fromZone(line))
        reply.add_auth(*RR.fromZone("test. 300 IN SOA ns.test. admin.test. 1 3600 600 86400 60"))
        samples.append(query.pack() if kind == "query" else reply.pack())
    for number, sample in enumerate(samples):
        (folder / f"seed{number}").write_bytes(bytes(sample))


def main() -> None:
    kind = sys.argv[1]
    target = {"query": fuzz_query, "answer": fuzz_answer}[kind]
    for arg in sys.argv[2:]:
        if not arg.startswith("-") and Path(arg).is_dir() and not any(Path(arg).iterdir()):
            seed(Path(arg), kind)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
