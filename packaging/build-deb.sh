#!/usr/bin/env bash
# Builds the nxr Debian package (binary only) on Debian 12 and prints the path of the
# .deb it leaves in dist/. Idempotent: installs its own build dependencies with apt and
# builds from a fresh copy of the working tree each time.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

BUILD_PKGS=(build-essential debhelper dpkg-dev python3-dev python3-pip libsystemd-dev pkg-config)
missing=()
for p in "${BUILD_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "build-deb: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# debian/changelog names the version; a forgotten bump would ship the wrong one.
deb_version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
py_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
if [[ ${deb_version%-*} != "$py_version" ]]; then
    echo "build-deb: packaging/debian/changelog says $deb_version, pyproject.toml $py_version" >&2
    exit 1
fi

# dpkg-buildpackage wants debian/ at the top of the source tree: build from a copy of
# the working tree (tracked and untracked files, nothing git ignores) with
# packaging/debian/ as debian/.
OUT=$REPO/build/deb
SRC=$OUT/nxr-$py_version
rm -rf "$OUT"
mkdir -p "$SRC"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -C "$SRC" -xf -
rm -rf "$SRC/debian"
cp -a packaging/debian "$SRC/debian"

echo "build-deb: building nxr $deb_version (log: build/deb/build.log)" >&2
if ! (cd "$SRC" && dpkg-buildpackage -b -us -uc) >"$OUT/build.log" 2>&1; then
    tail -n 40 "$OUT/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed; the whole log is build/deb/build.log" >&2
    exit 1
fi

arch=$(dpkg --print-architecture)
deb=nxr_${deb_version}_$arch.deb
mkdir -p dist
rm -f dist/nxr_*.deb
cp "$OUT/$deb" dist/
echo "$REPO/dist/$deb"
