"""The block page over HTTPS: the house's local CA, its download and per-platform instructions,
a page that tells whether a device trusts it, and the HTTPS server that uses it.

With `web.blockpage_https: reset` (the default) nothing listens on the HTTPS port, so a browser
sent to the filter for https://blocked.example/ is refused at once. With `ca`, the web UI makes
the house's CA at first use (filterd/house/localca.py) and serves this same Flask app over TLS
(webui/https_server.py) with a certificate minted for the name in SNI.

The CA certificate is public (it goes onto the children's devices), so its downloads and the
trust check are open without login; the CA key is never served.
"""
from __future__ import annotations

import collections
import datetime
import logging
import plistlib
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, make_response, render_template, request, url_for

from filterd.house.localca import LEAF_LIFETIME, DefaultIdentity, LeafCertificates, LocalCA, not_after, not_before

from . import security

log = logging.getLogger("filterd.webui.certificate")

bp = Blueprint("certificate", __name__)

CA_CONTENT_TYPE = "application/x-x509-ca-cert"
PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"
TRUST_CHECK_PATH = "/__trust_check__.png"
_ca_lock = threading.Lock()


# ---------------------------------------------------------------- the CA of this install


MINTS_PER_MINUTE = 20     # new leaf certificates per client address and minute


def house_ca(app, config) -> LocalCA:
    """The CA under data_dir/ca/, made at first use; one object per app, shared by the pages
    and the HTTPS server (re-read when it comes near its end, so a new one is made)."""
    folder = Path(config.data_dir) / "ca"
    with _ca_lock:
        cache = app.extensions.setdefault("filterd.localca", {})
        ca = cache.get(folder)
        if ca is None or not_after(ca.certificate) <= _utcnow() + LEAF_LIFETIME:
            ca = LocalCA.load_or_create(folder)
            cache[folder] = ca
        return ca


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _https_on(config) -> bool:
    return config.rules.web.blockpage_https == "ca"


def _config():
    return current_app.extensions["filterd"].config()


# ---------------------------------------------------------------- the HTTPS server


def default_identity(app) -> DefaultIdentity:
    """The names a connection without SNI (or with an IP address) gets a certificate for."""
    web = app.extensions["filterd"].config().rules.web
    return DefaultIdentity(tuple(web.hostnames), tuple(a for a in (web.address, web.address6) if a))


class BlockedNameCertificates(LeafCertificates):
    """Leaf certificates for the HTTPS block page, minted only for a name the asking device is
    blocked from (the decision the block page shows), and at most MINTS_PER_MINUTE new ones per
    client address. Anything else keeps the filter's own certificate, so the house CA, which the
    children's devices trust, never vouches for a site that is open to them, and a device
    sending made-up names cannot keep the Pi signing."""

    def __init__(self, ca: LocalCA, default, app, **options):
        super().__init__(ca, default, **options)
        self.app = app
        self._recent: dict[str, collections.deque] = {}
        self._recent_lock = threading.Lock()
        self.refused = 0

    def sni_callback(self, ssl_object, server_name, initial):
        try:
            peer = ssl_object.getpeername()[0]
            allowed = self.may_mint(peer, server_name)
        except Exception:   # keep the default certificate; the log says why
            log.exception("could not decide whether to mint a certificate for %r", server_name)
            allowed = False
        if not allowed:
            with self._recent_lock:
                self.refused += 1
            return None
        return super().sni_callback(ssl_object, server_name, initial)

    def may_mint(self, peer: str, server_name: str | None) -> bool:
        from filterd.lists.domains import normalise_domain

        from .blockpage import decide_for
        name = normalise_domain(server_name or "")
        if name is None or name in self.default().names:
            return True          # nothing is minted: the filter's own certificate serves
        now = time.time()
        with self.app.app_context():
            _, decision = decide_for(self.app.extensions["filterd"], peer, name, now)
        if decision is None or not decision.blocked or decision.rule == "csam":
            return False
        with self._lock:
            cached = ((name,), (), False) in self._leaves
        if cached:
            return True
        with self._recent_lock:
            recent = self._recent.setdefault(peer, collections.deque())
            while recent and recent[0] <= now - 60:
                recent.popleft()
            if len(recent) >= MINTS_PER_MINUTE:
                log.warning("HTTPS block page: %s asked for more than %d new names a minute; %s gets the "
                            "filter's own certificate", peer, MINTS_PER_MINUTE, name)
                return False
            recent.append(now)
            if len(self._recent) > 4096:      # forget quiet clients
                for client in [c for c, q in self._recent.items() if not q or q[-1] <= now - 60]:
                    del self._recent[client]
        return True


def start_https(app, config):
    """Serve the web UI (the block page, for blocked names) over HTTPS on web.address and
    web.address6 at web.https_port, in background threads, when web.blockpage_https is `ca`.

    Returns the running server, or None. Never raises: a port that cannot be bound or a CA that
    cannot be made is logged, and the web UI goes on over HTTP."""
    from .https_server import HttpsServer

    web = config.rules.web
    if not _https_on(config):
        log.info("HTTPS block page off (web.blockpage_https: reset): nothing listens on port %d",
                 web.https_port)
        return None
    addresses = [address for address in (web.address, web.address6) if address]
    if not addresses:
        log.error("HTTPS block page: web.address is not set, so there is no address to serve it on")
        return None
    try:
        ca = house_ca(app, config)
        leaves = BlockedNameCertificates(ca, lambda: default_identity(app), app)
        leaves.default_context()      # fail here, not in the first handshake
    except Exception as exc:
        log.error("HTTPS block page: the house CA in %s cannot be used (%s)", Path(config.data_dir) / "ca", exc)
        return None
    server = HttpsServer(app, [(address, web.https_port) for address in addresses], leaves.default_context)
    if not server.start():
        return None
    app.extensions["filterd.https_server"] = server    # the certificate page says whether it runs
    return server


# ---------------------------------------------------------------- pages and downloads


@bp.route("/settings/certificate")
def page():
    """For parents: what the HTTPS block page needs, the downloads and how to install them."""
    config = _config()
    web = config.rules.web
    ca = house_ca(current_app, config) if _https_on(config) else None
    return render_template(
        "certificate.html", on=ca is not None, ca=ca, web=web,
        serving=current_app.extensions.get("filterd.https_server") is not None,
        fingerprint=ca.fingerprint() if ca else None,
        valid_from=not_before(ca.certificate) if ca else None, valid_until=not_after(ca.certificate) if ca else None,
        crt_url=url_for("certificate.ca_certificate", _external=True),
        profile_url=url_for("certificate.mobileconfig", _external=True),
        check_url=url_for("certificate.trust_check", _external=True))


@bp.route("/ca.crt")
def ca_certificate():
    """The CA certificate (PEM), for every platform. Public: it holds no key."""
    config = _config()
    if not _https_on(config):
        abort(404, description="The HTTPS block page is off, so there is no certificate to install.")
    ca = house_ca(current_app, config)
    response = Response(ca.certificate_pem(), mimetype=CA_CONTENT_TYPE)
    response.headers["Content-Disposition"] = 'attachment; filename="filterd-home-ca.crt"'
    return response


@bp.route("/ca.mobileconfig")
def mobileconfig():
    """An (unsigned) configuration profile for iPhone, iPad and Mac that carries the CA
    certificate; its UUIDs come from the CA's fingerprint, so a re-download replaces, not adds."""
    config = _config()
    if not _https_on(config):
        abort(404, description="The HTTPS block page is off, so there is no certificate to install.")
    ca = house_ca(current_app, config)
    response = Response(configuration_profile(ca), mimetype=PROFILE_CONTENT_TYPE)
    response.headers["Content-Disposition"] = 'attachment; filename="filterd-home-ca.mobileconfig"'
    return response


def configuration_profile(ca: LocalCA) -> bytes:
    fingerprint = ca.fingerprint().replace(":", "").lower()

    def stable_uuid(part: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:filterd:ca:{fingerprint}:{part}")).upper()

    identifier = f"home.filterd.ca.{fingerprint[:16]}"
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": stable_uuid("profile"),
        "PayloadDisplayName": ca.name,
        "PayloadDescription": "Lets this device show the home filter's page for blocked sites over HTTPS. "
                              "It also lets the filter vouch for any web site name: install it only on "
                              "devices that use this home filter.",
        "PayloadOrganization": "filterd",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [{
            "PayloadType": "com.apple.security.root",
            "PayloadVersion": 1,
            "PayloadIdentifier": identifier + ".root",
            "PayloadUUID": stable_uuid("root"),
            "PayloadDisplayName": ca.name,
            "PayloadDescription": "The home filter's certificate authority",
            "PayloadCertificateFileName": "filterd-home-ca.crt",
            "PayloadContent": ca.certificate_der(),
        }],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


@bp.route("/certificate/check")
def trust_check():
    """Open without login, to be opened on a child's device: it shows a picture fetched from the
    filter's HTTPS port; the picture only loads when the device trusts the house CA."""
    config = _config()
    probe = probe_url(config) if _https_on(config) else None
    response = make_response(render_template("certificate_check.html", probe=probe, on=_https_on(config),
                                             page_url=url_for("certificate.page")))
    if probe:
        origin = probe[:-len(TRUST_CHECK_PATH)]
        csp = security.HEADERS["Content-Security-Policy"]
        response.headers["Content-Security-Policy"] = csp.replace("img-src 'self' data:",
                                                                  f"img-src 'self' data: {origin}", 1)
    return response


def probe_url(config) -> str | None:
    """https://<name>:<https_port>/__trust_check__.png on the name this page was opened with,
    when it is one the HTTPS server answers for (else the first host name, or web.address)."""
    web = config.rules.web
    known = [*web.hostnames, *(a for a in (web.address, web.address6) if a)]
    if not known:
        return None
    host = security.host_of(request.headers.get("Host", ""))
    if host not in known:
        host = known[0]
    shown = f"[{host}]" if ":" in host else host
    port = "" if web.https_port == 443 else f":{web.https_port}"
    return f"https://{shown}{port}{TRUST_CHECK_PATH}"


@bp.route(TRUST_CHECK_PATH)
def trust_image():
    """The trust check's picture: only over HTTPS, so it loading proves the TLS handshake passed."""
    if not request.is_secure:
        abort(404)
    return Response(TRUST_PICTURE, mimetype="image/png")


def _png(width: int, height: int, pixel) -> bytes:
    """A small RGBA PNG drawn by `pixel(x, y) -> (r, g, b, a)` (no imaging library needed)."""
    rows = b"".join(b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def _tick(x: int, y: int) -> tuple[int, int, int, int]:
    """A white tick on a green disc, 64×64."""
    cx = cy = 31.5
    if (x - cx) ** 2 + (y - cy) ** 2 > 31 ** 2:
        return (0, 0, 0, 0)

    def near(ax, ay, bx, by) -> bool:
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)))
        return (x - ax - t * dx) ** 2 + (y - ay - t * dy) ** 2 <= 4.5 ** 2

    if near(17, 33, 27, 43) or near(27, 43, 47, 21):
        return (255, 255, 255, 255)
    return (21, 128, 61, 255)


TRUST_PICTURE = _png(64, 64, _tick)
