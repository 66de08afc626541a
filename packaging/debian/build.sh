#!/bin/sh
# Build filterd_<version>_all.deb with dpkg-deb alone (no debhelper): one architecture-free
# package whose Python code runs on Debian's own python3-* libraries.
#   packaging/debian/build.sh OUTDIR            → OUTDIR/filterd_<version>_all.deb
#   packaging/debian/build.sh --stage DIR       → the package's file tree in DIR (for tests)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$top/pyproject.toml" | head -n 1)
[ -n "$version" ] || { echo "build.sh: no version in pyproject.toml" >&2; exit 1; }

stage_only=no
if [ "${1:-}" = --stage ]; then
    stage_only=yes
    shift
fi
[ $# -eq 1 ] || { echo "usage: build.sh [--stage] DIR" >&2; exit 2; }

if [ "$stage_only" = yes ]; then
    root=$1
    rm -rf "$root"
    mkdir -p "$root"
else
    out=$1
    mkdir -p "$out"
    root=$(mktemp -d)
    chmod 0755 "$root"
    trap 'rm -rf "$root"' EXIT
fi

code=$root/usr/lib/filterd
install -d "$code/filterd" "$code/webui/templates" "$code/webui/static" "$code/config/lists" \
    "$root/usr/bin" "$root/etc/filterd" "$root/lib/systemd/system" "$root/usr/share/doc/filterd" \
    "$root/DEBIAN"
install -m 0644 "$top"/filterd/*.py "$code/filterd/"
for folder in "$top"/filterd/*/; do
    name=$(basename "$folder")
    [ "$name" = __pycache__ ] && continue
    install -d "$code/filterd/$name"
    install -m 0644 "$folder"*.py "$code/filterd/$name/"
done
install -m 0644 "$top"/webui/*.py "$code/webui/"
install -m 0644 "$top"/webui/templates/* "$code/webui/templates/"
if [ -n "$(ls -A "$top/webui/static")" ]; then
    install -m 0644 "$top"/webui/static/* "$code/webui/static/"
fi
install -m 0644 "$top"/config/categories.yaml "$top"/config/services.yaml "$top"/config/safesearch.yaml \
    "$top"/config/companions.yaml \
    "$code/config/"
install -m 0644 "$top"/config/lists/*.txt "$code/config/lists/"

for command in filterd filterd-webui; do
    case $command in
        filterd) entry="from filterd.cli import main" ;;
        *) entry="from webui.serve import main" ;;
    esac
    cat > "$root/usr/bin/$command" <<LAUNCHER
#!/usr/bin/python3 -s
"""$command: the code lives in /usr/lib/filterd (with its catalogs in /usr/lib/filterd/config)."""
import os
import sys

CODE = "/usr/lib/filterd"
sys.path.insert(0, CODE)
# Child processes (python3 -m filterd lists update, started by the web UI) find the code too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (CODE, os.environ.get("PYTHONPATH")) if p)
$entry

sys.exit(main())
LAUNCHER
    chmod 0755 "$root/usr/bin/$command"
done

install -m 0644 "$top/packaging/filterd.yaml" "$root/etc/filterd/filterd.yaml"
install -m 0644 "$top"/packaging/systemd/*.service "$top"/packaging/systemd/*.timer "$top"/packaging/systemd/*.path "$root/lib/systemd/system/"
install -m 0644 "$here/copyright" "$root/usr/share/doc/filterd/copyright"
for doc in "$top/docs/install.md" "$top/README.md"; do
    if [ -f "$doc" ]; then
        install -m 0644 "$doc" "$root/usr/share/doc/filterd/"
    fi
done
install -m 0644 "$here/conffiles" "$root/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/control.in" > "$root/DEBIAN/control"

if [ "$stage_only" = no ]; then
    deb="$out/filterd_${version}_all.deb"
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    echo "$deb"
fi
