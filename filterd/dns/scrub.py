"""What an upstream answer may say: only records about the question (unbound's scrubber, in short).

An upstream (or whoever spoofs it) can put anything in an answer: `evil.example A 6.6.6.6`
beside the answer to `x.example.net A?`, a TXT record for an A question. A stub forwarder
that serves and caches those hands a device an address it never asked for. So before an
answer is cached, it keeps:

- in the answer section, the records owned by the question's name or by a name its
  CNAME/DNAME chain leads to, of the question's type, CNAME, DNAME (at an ancestor on the
  chain) or RRSIG;
- in the authority section, SOA and NS records of a zone above a name of the chain (what a
  negative answer needs, RFC 2308), and the DNSSEC proofs (NSEC, NSEC3, RRSIG, DS) inside
  such a zone;
- in the additional section, the OPT record only (a device's stub resolver has no use for
  glue, and nothing there is ever cached apart from this answer).

Names are compared as lowercased label bytes, so no decoding can make two names look alike.
"""
from __future__ import annotations

from dnslib import QTYPE, DNSRecord

_CNAME, _DNAME, _SOA, _NS, _RRSIG, _OPT = QTYPE.CNAME, QTYPE.DNAME, QTYPE.SOA, QTYPE.NS, QTYPE.RRSIG, QTYPE.OPT
_PROOFS = {QTYPE.NSEC, QTYPE.NSEC3, QTYPE.RRSIG, QTYPE.DS}


def _labels(label) -> tuple[bytes, ...]:
    return tuple(part.lower() for part in label.label)


def _under(name: tuple[bytes, ...], zone: tuple[bytes, ...]) -> bool:
    """`name` is `zone` or below it."""
    return not zone or (len(name) >= len(zone) and name[len(name) - len(zone):] == zone)


def _dname_target(rr) -> tuple[bytes, ...] | None:
    """A DNAME's target (dnslib keeps DNAME rdata as raw bytes: an uncompressed name, RFC 6672)."""
    data = getattr(rr.rdata, "data", b"")
    labels = []
    i = 0
    while i < len(data) and data[i]:
        if data[i] > 63:
            return None
        labels.append(bytes(data[i + 1:i + 1 + data[i]]).lower())
        i += data[i] + 1
    return tuple(labels) if i < len(data) else None


def chain(record: DNSRecord) -> tuple[set[tuple[bytes, ...]], set[tuple[bytes, ...]]]:
    """The names the question's CNAME/DNAME chain reaches (the question's own first), and the
    owners of the DNAME records used on the way."""
    qname, qtype = _labels(record.q.qname), record.q.qtype
    names = {qname}
    dname_owners: set[tuple[bytes, ...]] = set()
    if qtype in (_CNAME, _DNAME):
        return names, dname_owners
    current = qname
    for _ in range(len(record.rr) + 1):   # each step follows one record; loops stop by themselves
        step = None
        for rr in record.rr:
            owner = _labels(rr.rname)
            if rr.rtype == _CNAME and owner == current:
                step = _labels(rr.rdata.label)
            elif rr.rtype == _DNAME and len(current) > len(owner) and _under(current, owner):
                target = _dname_target(rr)
                if target is not None:
                    step = current[:len(current) - len(owner)] + target
                    dname_owners.add(owner)
            if step is not None:
                break
        if step is None or step in names:
            break
        names.add(step)
        current = step
    return names, dname_owners


def scrub(record: DNSRecord) -> list[str]:
    """Remove from `record` what is not about its question; return what was removed from the
    answer and authority sections ("name TYPE", for the log). Non-OPT additional records are
    removed without being reported: they are ordinary glue, not a sign of anything wrong."""
    qtype = record.q.qtype
    names, dname_owners = chain(record)
    dropped: list[str] = []
    kept_answers = []
    for rr in record.rr:
        owner = _labels(rr.rname)
        if owner in names and (rr.rtype in (qtype, _CNAME, _RRSIG)) \
                or owner in dname_owners and rr.rtype in (_DNAME, _RRSIG):
            kept_answers.append(rr)
        else:
            dropped.append(f"{rr.rname} {QTYPE.get(rr.rtype, rr.rtype)}")
    zones = [_labels(rr.rname) for rr in record.auth if rr.rtype in (_SOA, _NS)
             and any(_under(name, _labels(rr.rname)) for name in names)]
    kept_authority = []
    for rr in record.auth:
        owner = _labels(rr.rname)
        if rr.rtype in (_SOA, _NS) and owner in zones or \
                rr.rtype in _PROOFS and any(_under(owner, zone) for zone in zones):
            kept_authority.append(rr)
        else:
            dropped.append(f"{rr.rname} {QTYPE.get(rr.rtype, rr.rtype)}")
    record.rr = kept_answers
    record.auth = kept_authority
    record.ar = [rr for rr in record.ar if rr.rtype == _OPT]
    return dropped
