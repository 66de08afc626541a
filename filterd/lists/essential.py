"""Names a family's normal internet needs: never blocked by a downloaded list.

Public block lists are big and made by others; some of them carry names whose blocking would
break a device rather than protect a child (UT1's games list names the app stores, its doh
list apple-dns.net, behind which iCloud sits). Two sets guard against that:

- `ESSENTIAL_DOMAINS`: shared infrastructure (clouds, CDNs, operating-system and sign-in
  domains). Nothing may block one of them whole, nor a parent of one (a bare "com" covers
  google.com): not the catalog (checked when it loads), not a list (such entries are left out
  when compiling). A host *under* one of them may be blocked (youtubei.googleapis.com).
- `NEVER_BLOCKED_BY_LISTS`: hosts a child's device needs whatever their profile — operating
  system updates and the clock, the app stores, school tools, maps, notification push and
  connectivity checks — each with its reason. A downloaded list never blocks one of them nor a
  parent of one; a parent still can, by name, in a profile's `block:` or a service.

`filterd lists compile` logs every entry it leaves out, naming the list.
"""
from __future__ import annotations

__all__ = [
    "ESSENTIAL_DOMAINS", "ESSENTIAL_PARENTS", "NEVER_BLOCKED_BY_LISTS", "essential_conflict",
    "list_conflict",
]

# Domains a family's normal internet depends on: shared clouds and CDNs, operating-system
# and app-store services, sign-in. The catalog may name hosts *under* them
# (youtubei.googleapis.com, gemini.google.com) but never one of them, nor a parent of one.
ESSENTIAL_DOMAINS = frozenset({
    "google.com", "googleapis.com", "gstatic.com", "googleusercontent.com", "ggpht.com",
    "gvt1.com", "gvt2.com", "android.com", "appspot.com", "firebaseio.com",
    "apple.com", "icloud.com", "mzstatic.com", "cdn-apple.com", "aaplimg.com", "apple-dns.net",
    "microsoft.com", "live.com", "microsoftonline.com", "windows.com", "windows.net",
    "windowsupdate.com", "office.com", "office.net", "msftconnecttest.com", "msedge.net",
    "azureedge.net", "azurefd.net", "trafficmanager.net",
    "amazon.com", "amazonaws.com", "cloudfront.net", "a2z.com", "media-amazon.com",
    "akamai.net", "akamaihd.net", "akamaized.net", "akamaiedge.net", "akadns.net",
    "edgekey.net", "edgesuite.net", "fastly.net", "fastlylb.net", "fastly.com",
    "cloudflare.com", "cloudflare.net",
    "github.com", "githubusercontent.com", "jsdelivr.net", "wikipedia.org", "wikimedia.org",
})

# Every parent of an essential domain ("co.uk", "net"…) → one essential domain below it.
ESSENTIAL_PARENTS = {".".join(e.split(".")[i:]): e for e in sorted(ESSENTIAL_DOMAINS)
                     for i in range(1, e.count(".") + 1)}

# Hosts no downloaded list may block (nor a parent of one), and why. Documented in the README.
NEVER_BLOCKED_BY_LISTS: dict[str, str] = {
    # the clock: a wrong clock breaks every HTTPS site and the filter's own schedules
    "time.apple.com": "Apple devices' clock (HTTPS and schedules need the right time)",
    "time.windows.com": "Windows' clock",
    "time.google.com": "Android's and Chromebooks' clock",
    "pool.ntp.org": "the clock of Linux devices, consoles and routers",
    "ntp.ubuntu.com": "Ubuntu's clock",
    # operating-system updates: security fixes
    "swscan.apple.com": "macOS and iOS update catalogue",
    "updates.cdn-apple.com": "macOS and iOS updates",
    "mesu.apple.com": "iOS update check",
    "update.microsoft.com": "Windows Update",
    "delivery.mp.microsoft.com": "Windows and Microsoft Store downloads",
    "android.clients.google.com": "Android system and Play services updates",
    "dl.google.com": "Chrome and Android updates",
    "security.debian.org": "Debian and Raspberry Pi OS security updates",
    "archive.raspberrypi.com": "Raspberry Pi OS updates",
    # app stores: installing and updating apps (UT1's games list names both stores)
    "apps.apple.com": "Apple's App Store (installs and updates of every app)",
    "itunes.apple.com": "Apple's App Store and its purchases",
    "play.google.com": "Google Play (installs and updates of every app)",
    "play.googleapis.com": "Google Play's downloads",
    "apps.microsoft.com": "Microsoft Store",
    # school tools
    "classroom.google.com": "Google Classroom (homework)",
    "docs.google.com": "Google Docs, Sheets and Slides (homework)",
    "drive.google.com": "Google Drive (homework files)",
    "teams.microsoft.com": "Microsoft Teams (school lessons and homework)",
    "login.microsoftonline.com": "Microsoft 365 sign-in for school accounts",
    "zoom.us": "Zoom (lessons, tutoring, family calls)",
    "instructure.com": "Canvas (school learning platform)",
    "schoology.com": "Schoology (school learning platform)",
    "seesaw.me": "Seesaw (primary-school learning journal)",
    "clever.com": "Clever (school sign-in portal)",
    "khanacademy.org": "Khan Academy (learning)",
    # maps: finding the way home
    "maps.google.com": "Google Maps",
    "maps.googleapis.com": "maps inside other apps (bus times, taxis)",
    "maps.apple.com": "Apple Maps",
    "openstreetmap.org": "OpenStreetMap (maps in many apps)",
    # notification push: messages from parents, school and banks reach the phone through these
    "push.apple.com": "Apple push notifications (iMessage, school and banking apps)",
    "mtalk.google.com": "Android push notifications (Firebase Cloud Messaging)",
    "fcm.googleapis.com": "Android push notifications",
    "notify.windows.com": "Windows push notifications",
    # connectivity checks: without them a device thinks the Wi-Fi is broken
    "captive.apple.com": "Apple's check that the Wi-Fi reaches the internet",
    "connectivitycheck.gstatic.com": "Android's check that the Wi-Fi reaches the internet",
    "www.msftconnecttest.com": "Windows' check that the network reaches the internet",
    "detectportal.firefox.com": "Firefox's check for Wi-Fi log-in pages",
    # certificate checks: a blocked responder slows or breaks HTTPS
    "ocsp.apple.com": "certificate checks on Apple devices",
    "ocsp.digicert.com": "certificate checks for many banks and shops",
    "ocsp.pki.goog": "certificate checks for Google's certificates",
}

_NEVER_PARENTS = {".".join(n.split(".")[i:]): n for n in sorted(NEVER_BLOCKED_BY_LISTS)
                  for i in range(1, n.count(".") + 1)}
# Every name a list entry must not be (the set the compiler tests each entry against).
LIST_GUARDED = frozenset(ESSENTIAL_DOMAINS | ESSENTIAL_PARENTS.keys() | NEVER_BLOCKED_BY_LISTS.keys()
                         | _NEVER_PARENTS.keys())


def essential_conflict(name: str) -> str | None:
    """Why blocking the normalised `name` would break a family's normal internet, or None.

    For catalog data, and for the list compiler to drop such entries from downloaded lists.
    """
    if "." not in name:
        return f'"{name}" is a top-level domain: it would block a whole part of the internet'
    if name in ESSENTIAL_DOMAINS:
        return (f'"{name}" is shared infrastructure a family\'s normal internet needs: '
                "list the service's own host names under it instead")
    essential = ESSENTIAL_PARENTS.get(name)
    if essential:
        return f'"{name}" would also block {essential}, which a family\'s normal internet needs'
    return None


def list_conflict(name: str) -> str | None:
    """Why a downloaded list may not block the normalised `name` (None: it may)."""
    problem = essential_conflict(name)
    if problem:
        return problem
    reason = NEVER_BLOCKED_BY_LISTS.get(name)
    if reason:
        return f'"{name}" is never blocked by a list: {reason}'
    covered = _NEVER_PARENTS.get(name)
    if covered:
        return f'"{name}" would also block {covered}: {NEVER_BLOCKED_BY_LISTS[covered]}'
    return None
