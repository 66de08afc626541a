#!/bin/bash
# filterd installer for Raspberry Pi OS and Debian 12 (bookworm):
#   sudo ./install.sh [--yes] [--deb PATH]
# Checks the system, finds what already answers DNS on port 53 and explains what to do,
# installs the filterd package with apt, writes this machine's LAN address into the config,
# and prints what to put into the router. It changes nothing without asking (--yes answers
# "yes" for installing filterd and for its own config, never for stopping other software).
# Running it again is safe: what is already done is left as it is.
set -euo pipefail

CONFIG=/etc/filterd/filterd.yaml
ASSUME_YES=no
DEB=""

say() { printf '%s\n' "$*"; }
warn() { printf 'install.sh: %s\n' "$*" >&2; }
die() { warn "$*"; exit 1; }

usage() {
    say "usage: sudo $0 [--yes] [--deb PATH/filterd_VERSION_all.deb]"
    say "  --yes   answer yes to installing filterd and setting its config (not to stopping other software)"
    say "  --deb   the package to install (default: the newest filterd_*_all.deb next to this script)"
}

while [ $# -gt 0 ]; do
    case $1 in
        -y|--yes) ASSUME_YES=yes ;;
        --deb) [ $# -ge 2 ] || die "--deb needs a file"; DEB=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

# ask QUESTION DEFAULT(y|n) [safe]: "safe" questions are answered by --yes.
ask() {
    local question=$1 default=$2 safe=${3:-} answer
    if [ "$ASSUME_YES" = yes ] && [ "$safe" = safe ]; then
        say "$question yes (--yes)"
        return 0
    fi
    if [ ! -t 0 ]; then
        say "$question no (no terminal to ask on)"
        return 1
    fi
    read -r -p "$question [$([ "$default" = y ] && echo Y/n || echo y/N)] " answer || answer=""
    answer=${answer:-$default}
    [ "${answer,,}" = y ] || [ "${answer,,}" = yes ]
}

check_system() {
    [ "$(id -u)" -eq 0 ] || die "run me as root: sudo $0"
    [ -r /etc/os-release ] || die "cannot tell which system this is (no /etc/os-release)"
    # shellcheck disable=SC1091
    . /etc/os-release
    case "${ID:-}:${VERSION_CODENAME:-}" in
        debian:bookworm|raspbian:bookworm) ;;
        *) warn "this is ${PRETTY_NAME:-an unknown system}; filterd's package is made for Debian 12 (bookworm) and Raspberry Pi OS based on it"
           ask "Try anyway?" n || exit 1 ;;
    esac
    command -v apt-get >/dev/null || die "apt-get is missing: this installer needs Debian or Raspberry Pi OS"
    local memory_kb
    memory_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    if [ "${memory_kb:-0}" -lt 400000 ]; then
        warn "only $((memory_kb / 1024)) MB of memory: filterd needs about 100 MB; a Pi Zero 2 W (512 MB) is the smallest tested"
    fi
}

# The LAN address: the source of the default route, else the first private IPv4 address.
lan_address() {
    local address=""
    if command -v ip >/dev/null; then
        address=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1)
    fi
    if [ -z "$address" ] && command -v hostname >/dev/null; then
        for candidate in $(hostname -I 2>/dev/null); do
            case $candidate in
                10.*|192.168.*|172.1[6-9].*|172.2[0-9].*|172.3[01].*|100.*) address=$candidate; break ;;
            esac
        done
    fi
    printf '%s' "$address"
}

# Who listens on port 53: one "ADDRESS PROGRAM" line per socket (PROGRAM "?" when unknown).
port53_holders() {
    if command -v ss >/dev/null; then
        ss -H -ltnup 'sport = :53' 2>/dev/null | awk '{
            program = "?"; if (match($0, /users:\(\("[^"]+"/)) program = substr($0, RSTART + 9, RLENGTH - 10)
            address = $5; sub(/:53$/, "", address); print address, program }' | sort -u
        return
    fi
    # No ss (a minimal system): the kernel's socket tables, and /proc to name the owner.
    local file inodes=""
    for file in /proc/net/tcp /proc/net/udp /proc/net/tcp6 /proc/net/udp6; do
        [ -r "$file" ] || continue
        inodes="$inodes $(awk 'NR > 1 && $2 ~ /:0035$/ && ($4 == "0A" || $4 == "07") {print $10}' "$file")"
    done
    local inode pid fd
    for inode in $inodes; do
        local program="?"
        for fd in /proc/[0-9]*/fd/*; do
            if [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ]; then
                pid=${fd#/proc/}; pid=${pid%%/*}
                program=$(cat "/proc/$pid/comm" 2>/dev/null || echo "?")
                break
            fi
        done
        printf '%s %s\n' "port-53" "$program"
    done | sort -u
}

LISTEN_LAN_ONLY=no
check_port53() {
    local holders program address blocked=no
    holders=$(port53_holders)
    if [ -z "$holders" ]; then
        say "Port 53 is free."
        return
    fi
    while read -r address program; do
        case $program in
            systemd-resolve*)
                say "systemd-resolved's stub listener holds $address:53 (this machine's own lookups)."
                say "  filterd can leave it alone and listen on this machine's LAN address instead."
                if ask "Make filterd listen on the LAN address (and 127.0.0.1) only?" y safe; then
                    LISTEN_LAN_ONLY=yes
                else
                    say "  Otherwise turn the stub off: DNSStubListener=no in /etc/systemd/resolved.conf, then systemctl restart systemd-resolved"
                    blocked=yes
                fi ;;
            dnsmasq)
                say "dnsmasq answers DNS on $address:53."
                say "  To keep it for DHCP only, add 'port=0' to /etc/dnsmasq.conf and restart it; or stop it."
                if ask "Stop and disable dnsmasq now (systemctl disable --now dnsmasq)?" n; then
                    systemctl disable --now dnsmasq
                else
                    blocked=yes
                fi ;;
            pihole-FTL)
                say "Pi-hole answers DNS on $address:53. filterd replaces it: uninstall it with 'pihole uninstall',"
                say "  or stop it with 'systemctl disable --now pihole-FTL' (its DHCP server stops too)."
                blocked=yes ;;
            AdGuardHome)
                say "AdGuard Home answers DNS on $address:53. filterd replaces it: stop it with"
                say "  'systemctl disable --now AdGuardHome' (or: /opt/AdGuardHome/AdGuardHome -s uninstall)."
                blocked=yes ;;
            python3*|filterd*)
                say "filterd already answers on $address:53 (an earlier install)." ;;
            *)
                say "Another program ($program) answers DNS on $address:53: stop it before filterd can start."
                blocked=yes ;;
        esac
    done <<< "$holders"
    if [ "$blocked" = yes ]; then
        say "filterd is installed anyway, but it starts only once port 53 is free (systemctl restart filterd)."
    fi
}

find_deb() {
    if [ -n "$DEB" ]; then
        [ -f "$DEB" ] || die "no package at $DEB"
        return
    fi
    local here
    here=$(cd "$(dirname "$0")" && pwd)
    DEB=$(find "$here" "$here/.." -maxdepth 2 -name 'filterd_*_all.deb' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$DEB" ] || die "no filterd_*_all.deb next to this script: build it with 'make deb' or pass --deb PATH"
}

install_package() {
    local wanted installed
    wanted=$(dpkg-deb -f "$DEB" Version)
    installed=$(dpkg-query -W -f '${Status} ${Version}' filterd 2>/dev/null || true)
    if [ "$installed" = "install ok installed $wanted" ]; then
        say "filterd $wanted is installed already."
        return
    fi
    ask "Install filterd $wanted (and Debian's Python libraries it needs) with apt?" y safe || exit 1
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")"
}

# Set dns.listen / web.address in the config, keeping the parent's comments (ruamel.yaml).
configure() {
    local address=$1 listen_lan_only=$2
    [ -f "$CONFIG" ] || die "$CONFIG is missing: is the package installed?"
    local changes
    changes=$(FILTERD_ADDRESS="$address" FILTERD_LAN_ONLY="$listen_lan_only" python3 - "$CONFIG" <<'PYTHON'
import os
import sys

from ruamel.yaml import YAML

path = sys.argv[1]
yaml = YAML()
yaml.version = (1, 1)
yaml.preserve_quotes = True
yaml.width = 4096
yaml.indent(mapping=2, sequence=4, offset=2)
with open(path, encoding="utf-8") as handle:
    document = yaml.load(handle)
address = os.environ["FILTERD_ADDRESS"]
changes = []
web = document.setdefault("web", {})
if address and web.get("address") != address:
    web["address"] = address
    changes.append(f"web.address: {address}")
if address and os.environ["FILTERD_LAN_ONLY"] == "yes":
    listen = [f"{address}:53", "127.0.0.1:53"]
    if list(document["dns"].get("listen", [])) != listen:
        document["dns"]["listen"] = listen
        changes.append(f"dns.listen: {', '.join(listen)}")
if changes:
    temporary = path + ".install-tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        yaml.dump(document, handle)
    os.chmod(temporary, 0o640)
    os.replace(temporary, path)
print("; ".join(changes))
PYTHON
)
    chown filterd:filterd "$CONFIG"
    if [ -n "$changes" ]; then
        say "Set in $CONFIG: $changes"
    else
        say "$CONFIG already says so: nothing to change."
    fi
    filterd check --config "$CONFIG" >/dev/null
}

restart_services() {
    if [ -d /run/systemd/system ]; then
        systemctl restart filterd.service filterd-webui.service || \
            warn "a service did not start: journalctl -u filterd -u filterd-webui says why"
    fi
}

# The first download of the blocked categories' lists, with a progress bar per list (the daily
# timer keeps them fresh afterwards). Asked, never assumed: it is a big download.
first_update() {
    if ! ask "Download the block lists of the blocked categories now (about 135 MB with the child preset, a few minutes on a Pi; otherwise the daily timer does it)?" y; then
        say "The starter lists filter meanwhile; the lists are downloaded by the daily timer (or: sudo systemctl start filterd-lists)."
        return
    fi
    if runuser -u filterd -- filterd lists update --config "$CONFIG"; then
        say "Block lists downloaded and compiled: the filter picked them up."
    else
        warn "some lists did not download (see above); what did is in use, and the daily timer tries again"
    fi
}

main() {
    check_system
    check_port53
    find_deb
    install_package
    local address
    address=$(lan_address)
    if [ -z "$address" ]; then
        warn "could not find this machine's LAN address: set web.address in $CONFIG yourself"
    elif ask "Use $address as this filter's address (blocked pages and filter.home lead there)?" y safe; then
        configure "$address" "$LISTEN_LAN_ONLY"
    fi
    restart_services
    first_update
    local shown="${address:-THIS-MACHINES-ADDRESS}"
    say ""
    say "filterd is installed."
    say "  1. Give this machine a fixed address: in the router's DHCP settings, reserve $shown for it."
    say "  2. In the router's DHCP settings, set the DNS server to $shown and remove any second one."
    say "     (Router cannot change it? Switch its DHCP off and use filterd's: see docs/install.md, 'DHCP'.)"
    say "  3. Open the web UI and set the parents' password: http://$shown/ (later also http://filter.home/)"
    print_setup_code
}

# The one-time code the setup page asks for with the first password, so that nobody else on the
# network can claim the new install (the web UI keeps it in its data_dir, 0600, until then).
print_setup_code() {
    local code
    code=$(runuser -u filterd -- filterd-webui --config "$CONFIG" --setup-code 2>/dev/null) || code=""
    if [ -n "$code" ]; then
        say "     The setup page asks for this setup code: $code"
        say "     (again later: journalctl -u filterd-webui, or the file setup-code in the data_dir, as root)"
    fi
}

main
