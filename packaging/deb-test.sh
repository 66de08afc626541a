#!/bin/bash
# The clean-install test (make deb-test): the .deb in a fresh minimal Debian 12 root.
#   1. apt installs the package (and Debian's python3-* libraries) in a chroot; `filterd check`
#      passes on the packaged config; the unit tests run with Debian's python3-pytest against
#      the installed code; the daemon answers DNS there (check_daemon.py); remove keeps the
#      rules and data, purge removes them.
#   2. install.sh installs it the same way in a second fresh root, and a second run changes nothing.
# The minimal root is made once with debootstrap from the configured Debian mirror and cached
# (as a tarball, with apt's downloads) in $CACHE. Needs root. Mounts are undone on any exit.
#   packaging/deb-test.sh PATH/filterd_VERSION_all.deb
set -euo pipefail

DEB=$(realpath "$1")
TOP=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FILTERD_DEB_TEST_CACHE:-/var/cache/filterd-deb-test}
SUITE=bookworm
BASE=$CACHE/$SUITE-minbase.tar
WORK=$(mktemp -d /var/tmp/filterd-deb-test.XXXXXX)
MOUNTS=()
FAILURES=()

cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[$i]}" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP   # so that cleanup runs on a timeout too

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'deb-test: FAIL: %s\n' "$*" >&2; exit 1; }

# The Debian mirror apt already uses here (deb822 .sources or a one-line sources.list entry);
# none is named in this repository.
mirror() {
    local uri
    uri=$(awk -v suite="$SUITE" '
        /^URIs:/ {uris = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == suite) {print uris; exit}}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk -v suite="$SUITE" '$1 == "deb" && $3 == suite {print $2; exit}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    fi
    [ -n "$uri" ] || fail "no Debian $SUITE mirror in apt's configuration (/etc/apt/sources.list*): add one"
    printf '%s' "$uri"
}

make_base() {
    [ -s "$BASE" ] && return
    local source
    source=$(mirror) || exit 1
    step "debootstrap a minimal $SUITE root from $source (cached in $CACHE)"
    mkdir -p "$CACHE"
    local fresh=$WORK/base
    debootstrap --variant=minbase "$SUITE" "$fresh" "$source" >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 20 "$WORK/debootstrap.log"; fail "debootstrap"; }
    tar -C "$fresh" -cf "$BASE.tmp" .
    mv "$BASE.tmp" "$BASE"
    rm -rf "$fresh"
}

# new_root NAME: a fresh root ($ROOT) from the cached tarball, with /proc, /dev and apt's cache
# mounted (recorded in MOUNTS, so not called in a subshell).
new_root() {
    ROOT=$WORK/$1
    local root=$ROOT
    mkdir -p "$root" "$CACHE/archives/partial"
    tar -C "$root" -xf "$BASE"
    mount -t proc proc "$root/proc" && MOUNTS+=("$root/proc")
    mount --bind /dev "$root/dev" && MOUNTS+=("$root/dev")
    mount --bind /dev/pts "$root/dev/pts" && MOUNTS+=("$root/dev/pts")
    mount --bind "$CACHE/archives" "$root/var/cache/apt/archives" && MOUNTS+=("$root/var/cache/apt/archives")
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cp /etc/hosts "$root/etc/hosts"   # tests resolve localhost by name
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"   # no services start in a chroot
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    cp "$DEB" "$root/tmp/"
}

in_root() { local root=$1; shift; chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# A network namespace with only loopback, or with a LAN-side address for install.sh to find.
isolated() { unshare --net sh -c 'ip link set lo up && exec "$@"' sh "$@"; }
on_lan() {
    unshare --net sh -c 'ip link set lo up && ip link add lan0 type veth peer name lan1 &&
        ip addr add 192.168.77.2/24 dev lan0 && ip link set lan0 up && ip link set lan1 up && exec "$@"' sh "$@"
}

package_test() {
    new_root apt
    local root=$ROOT
    step "apt install ./$(basename "$DEB") in a clean $SUITE root"
    in_root "$root" apt-get update -q >/dev/null
    in_root "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/tmp/$(basename "$DEB")" \
        >"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log"; fail "apt install"; }
    grep -E '^(Setting up|Unpacking) (python3-(dnslib|flask|waitress|yaml|uvloop|cryptography|ruamel)|filterd)' \
        "$WORK/apt.log" | grep 'Setting up' | sed 's/^/  /'
    in_root "$root" filterd check --config /etc/filterd/filterd.yaml
    in_root "$root" sh -c 'command -v filterd && command -v filterd-webui' | sed 's/^/  on PATH: /'
    [ "$(in_root "$root" stat -c %U /var/lib/filterd)" = filterd ] || fail "/var/lib/filterd is not the filterd user's"
    [ "$(in_root "$root" stat -c %U:%a /etc/filterd/filterd.yaml)" = filterd:640 ] || fail "config ownership"
    # shellcheck disable=SC2016  # dpkg-query's own ${field} syntax
    in_root "$root" dpkg-query -W -f '${Conffiles}\n' filterd | grep -q /etc/filterd/filterd.yaml || fail "conffile"

    step "unit tests with Debian's python3-pytest against the installed code"
    in_root "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        python3-pytest python3-aiosmtpd >/dev/null
    # The tests and the files they read, but not the code: they must import the installed copy.
    mkdir -p "$root/tmp/src"
    cp -r "$TOP/tests" "$TOP/config" "$TOP/packaging" "$TOP/pyproject.toml" "$TOP/README.md" "$root/tmp/src/"
    [ -d "$TOP/docs" ] && cp -r "$TOP/docs" "$root/tmp/src/"
    rm -rf "$root/tmp/src/tests/e2e" "$root/tmp/src/tests/bench" "$root/tmp/src/tests/artifacts"
    in_root "$root" sh -c 'cd /tmp && PYTHONPATH=/usr/lib/filterd python3 -c "import filterd, webui; print(filterd.__file__, webui.__file__)"' \
        | grep -q '^/usr/lib/filterd/filterd/__init__.py /usr/lib/filterd/webui/__init__.py$' || fail "not the installed code"
    local log=$CACHE/last-unit-tests.log
    if ! in_root "$root" sh -c 'cd /tmp/src && PYTHONPATH=/usr/lib/filterd python3 -m pytest -q -p no:cacheprovider \
            -o addopts="-ra" -W ignore::pytest.PytestConfigWarning tests' >"$log" 2>&1; then
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/  /'
        tail -n 1 "$log" | sed 's/^/  /'
        # Go on with the other checks; the run fails at the end.
        FAILURES+=("unit tests under Debian 12's libraries (the whole output: $log)")
        return
    fi
    tail -n 1 "$log" | sed 's/^/  /'
}

daemon_and_removal_test() {
    local root=$WORK/apt
    step "the packaged daemon answers DNS (own network namespace, stand-in upstream)"
    cp "$TOP/packaging/debtest/check_daemon.py" "$root/tmp/"
    isolated chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        python3 /tmp/check_daemon.py /tmp/src/tests | sed 's/^/  /'
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail "the daemon in the clean root"

    step "remove keeps the rules and data; purge removes them"
    in_root "$root" sh -c 'echo "# a parent was here" >> /etc/filterd/filterd.yaml'
    in_root "$root" apt-get remove -y -q filterd >/dev/null
    grep -q "a parent was here" "$root/etc/filterd/filterd.yaml" || fail "remove lost the config"
    [ -f "$root/var/lib/filterd/state.db" ] || fail "remove lost the data"
    in_root "$root" apt-get purge -y -q filterd >/dev/null
    if [ -e "$root/etc/filterd" ] || [ -e "$root/var/lib/filterd" ]; then fail "purge left config or data"; fi
    ! in_root "$root" getent passwd filterd >/dev/null || fail "purge left the filterd user"
    echo "  remove kept /etc/filterd and /var/lib/filterd; purge removed them and the user"
}

installer_test() {
    new_root installer
    local root=$ROOT
    step "install.sh --yes in a second clean root"
    cp "$TOP/packaging/install.sh" "$root/tmp/"
    on_lan chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        bash /tmp/install.sh --yes --deb "/tmp/$(basename "$DEB")" </dev/null >"$WORK/install1.log" 2>&1 || {
        cat "$WORK/install1.log"; fail "install.sh"; }
    sed 's/^/  /' "$WORK/install1.log"
    grep -q "set the DNS server to 192.168.77.2" "$WORK/install1.log" || fail "install.sh did not name the address"
    grep -q "http://192.168.77.2/" "$WORK/install1.log" || fail "install.sh did not print the web UI's URL"
    grep -q "^  address: 192.168.77.2" "$root/etc/filterd/filterd.yaml" || fail "web.address not set"
    in_root "$root" filterd check --config /etc/filterd/filterd.yaml >/dev/null
    local before
    before=$(sha256sum "$root/etc/filterd/filterd.yaml")
    step "install.sh again: nothing to do"
    on_lan chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        bash /tmp/install.sh --yes --deb "/tmp/$(basename "$DEB")" </dev/null >"$WORK/install2.log" 2>&1 || {
        cat "$WORK/install2.log"; fail "install.sh (second run)"; }
    grep -q "is installed already" "$WORK/install2.log" || fail "second run reinstalled"
    grep -q "nothing to change" "$WORK/install2.log" || fail "second run changed the config"
    [ "$(sha256sum "$root/etc/filterd/filterd.yaml")" = "$before" ] || fail "second run changed the config"
    echo "  second run: package and config left as they were"
}

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, chroot, mounts)"
for tool in debootstrap unshare chroot ip; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done
started=$SECONDS
make_base
package_test
daemon_and_removal_test
installer_test
if [ ${#FAILURES[@]} -gt 0 ]; then
    printf 'deb-test: FAIL: %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
printf '\ndeb-test: OK in %d s\n' $((SECONDS - started))
