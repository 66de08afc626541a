"""A device's encrypted-DNS settings: what a parent types or scans on the child's device.

The device page includes `_encrypted_dns.html`, which asks `encrypted_dns_panel(device)` for
everything it shows: the Android Private DNS host name (`<client-id>.filter.home`), the DoH URL
for browsers, and an Apple configuration profile (a DNSSettings payload for that client ID, and
the house CA when the filter's certificate comes from it). The profile can be downloaded by a
logged-in parent, or fetched by the child's iPhone from a QR code: that link is signed and
holds for an hour, because a client ID picks a profile's rules and is not to be handed out.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import plistlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from flask import Blueprint, Response, abort, current_app, redirect, request, url_for

from filterd.dns.tls import device_names
from filterd.rules.model import CLIENT_ID

from . import actions
from .certificate import house_ca
from .security import flash

bp = Blueprint("encrypted_dns", __name__)

PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"
LINK_LIFETIME_S = 3600
_LINK_KEY = secrets.token_bytes(32)   # per web UI process: a restart ends every link, as it should


@dataclass(frozen=True)
class Panel:
    """What the device page's encrypted-DNS card shows for one device."""

    on: bool                    # dns.tls_listen or dns.https_listen is set
    client_id: str | None
    suggested_id: str           # a client ID made from the device's name, for the form
    hostname: str | None        # Android Private DNS / DoT: emma-phone.filter.home
    dot_port: int | None        # None: DoT is off
    doh_url: str | None         # None: DoH is off
    house_ca: bool              # the certificate comes from the house CA: devices must trust it
    profile_url: str | None     # signed link to the Apple profile (for the QR code)


def suggested_client_id(name: str) -> str:
    """"Emma's Phone" → "emmas-phone": a label a parent can keep or change."""
    label = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("'", "")).strip("-")[:63].strip("-")
    return label or "device"


def panel_for(config, device, base_url: str | None = None) -> Panel:
    """The settings a device needs, from the config alone (pure but for reading a parent's
    certificate's names)."""
    encrypted = config.dns.encrypted
    names = device_names(config)
    client_id = device.client_id
    hostname = f"{client_id}.{names[0]}" if client_id and names else None
    dot_port = encrypted.tls_listen[0].port if encrypted.tls_listen else None
    doh_url = None
    if encrypted.https_listen and client_id and names:
        port = encrypted.https_listen[0].port
        doh_url = f"https://{names[0]}{'' if port == 443 else f':{port}'}/dns-query/{client_id}"
    profile_url = None
    if client_id and base_url and (doh_url or dot_port):
        profile_url = base_url.rstrip("/") + url_for("encrypted_dns.shared_profile", token=link_token(client_id))
    return Panel(encrypted.on, client_id, suggested_client_id(device.name), hostname, dot_port, doh_url,
                 not encrypted.cert_file, profile_url)


# ---------------------------------------------------------------- the Apple profile


def dns_profile(panel: Panel, addresses: tuple[str, ...], ca=None) -> bytes:
    """An unsigned .mobileconfig: encrypted DNS for this client ID (DoH when on, else DoT) and,
    with `ca`, the house CA as a trusted root. UUIDs are stable per client ID and server, so a
    second install replaces the first."""
    server = panel.doh_url or panel.hostname

    def stable_uuid(part: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:filterd:dns:{server}:{part}")).upper()

    identifier = f"home.filterd.dns.{panel.client_id}"
    settings: dict = {"DNSProtocol": "HTTPS", "ServerURL": panel.doh_url} if panel.doh_url else \
        {"DNSProtocol": "TLS", "ServerName": panel.hostname}
    if addresses:
        settings["ServerAddresses"] = list(addresses)
    content = [{
        "PayloadType": "com.apple.dnsSettings.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier + ".dns",
        "PayloadUUID": stable_uuid("dns"),
        "PayloadDisplayName": f"Home filter DNS ({panel.client_id})",
        "DNSSettings": settings,
    }]
    if ca is not None:
        content.append({
            "PayloadType": "com.apple.security.root",
            "PayloadVersion": 1,
            "PayloadIdentifier": identifier + ".root",
            "PayloadUUID": stable_uuid("root"),
            "PayloadDisplayName": ca.name,
            "PayloadCertificateFileName": "filterd-home-ca.crt",
            "PayloadContent": ca.certificate_der(),
        })
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": stable_uuid("profile"),
        "PayloadDisplayName": f"Home filter for {panel.client_id}",
        "PayloadDescription": "Sends this device's DNS, encrypted, to the home filter, which applies "
                              "the rules its parents chose for it.",
        "PayloadOrganization": "filterd",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": content,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def link_token(client_id: str, now: float | None = None) -> str:
    """`<client-id>.<expiry>.<mac>`: names the device, holds LINK_LIFETIME_S, made by this process."""
    expires = int((now or time.time()) + LINK_LIFETIME_S)
    mac = hmac.new(_LINK_KEY, f"{client_id}|{expires}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{client_id}.{expires}.{mac}"


def client_id_of_token(token: str, now: float | None = None) -> str | None:
    parts = token.split(".")
    if len(parts) != 3 or not CLIENT_ID(parts[0]) or not parts[1].isdigit():
        return None
    client_id, expires, mac = parts
    expected = hmac.new(_LINK_KEY, f"{client_id}|{expires}".encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(mac, expected) or int(expires) < (now or time.time()):
        return None
    return client_id


def _profile_response(config, device) -> Response:
    panel = panel_for(config, device)
    if not panel.on or not panel.client_id:
        abort(404, description="This device has no client ID, or encrypted DNS is off.")
    ca = house_ca(current_app, config) if panel.house_ca else None
    addresses = tuple(a for a in (config.rules.web.address, config.rules.web.address6) if a)
    response = Response(dns_profile(panel, addresses, ca), mimetype=PROFILE_CONTENT_TYPE)
    response.headers["Content-Disposition"] = f'attachment; filename="filterd-{panel.client_id}.mobileconfig"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/devices/<name>/encrypted-dns.mobileconfig")
def profile(name: str):
    config = current_app.extensions["filterd"].config()
    device = config.rules.device(name)
    if device is None:
        abort(404, description="There is no device with that name.")
    return _profile_response(config, device)


@bp.route("/dns-profile/<token>.mobileconfig")
def shared_profile(token: str):
    """Open without login (the child's iPhone scanned the QR code), for an hour."""
    client_id = client_id_of_token(token)
    if client_id is None:
        abort(404, description="This link has run out. Open the device's page again for a new QR code.")
    config = current_app.extensions["filterd"].config()
    device = next((d for d in config.rules.devices if d.client_id == client_id), None)
    if device is None:
        abort(404, description="No device has this client ID any more.")
    return _profile_response(config, device)


@bp.route("/devices/<name>/client-id", methods=["POST"])
def set_client_id(name: str):
    db = current_app.extensions["filterd"].db()
    client_id = request.form.get("client_id", "")
    try:
        actions.set_client_id(db, request.form.get("version"), name, client_id)
        flash(f"{name} is {client_id.strip().lower()} over encrypted DNS from now on.", "ok")
    except actions.ActionError as exc:
        flash(str(exc), "error")
    return redirect(url_for("devices.detail", name=name) + "#encrypted-dns")


# ---------------------------------------------------------------- QR codes


def qr_data_uri(text: str) -> str | None:
    """An SVG QR code as a data: URI (the page's CSP allows images from data:), None without segno."""
    try:
        import segno
    except ImportError:
        return None
    out = io.BytesIO()
    segno.make(text, error="m", micro=False).save(out, kind="svg", scale=4, border=2, xmldecl=False,
                                                   svgns=True, title=None, nl=False)
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode("ascii")


@bp.app_template_global("encrypted_dns_panel")
def encrypted_dns_panel(device) -> dict:
    """Everything `_encrypted_dns.html` shows for `device` (the device page's one include)."""
    config = current_app.extensions["filterd"].config()
    panel = panel_for(config, device, request.host_url)
    return {
        "panel": panel,
        "version": actions.config_version(),
        "qr_hostname": qr_data_uri(panel.hostname) if panel.hostname and panel.dot_port else None,
        "qr_doh": qr_data_uri(panel.doh_url) if panel.doh_url else None,
        "qr_profile": qr_data_uri(panel.profile_url) if panel.profile_url else None,
    }
