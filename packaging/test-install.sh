#!/usr/bin/env bash
# Proves the nxr .deb installs into a clean Debian 12 root with plain apt, works there
# (launchers, unit enabled, profiles), and purges without leaving files behind.
#
#   bash packaging/test-install.sh              # builds dist/nxr_*.deb first
#   bash packaging/test-install.sh --no-build   # tests the .deb already in dist/
#
# Needs root and deb.debian.org. The clean root is made with debootstrap once and kept
# as .cache/debian12-minbase.tar.gz (remade when older than a week); every run installs
# into a fresh copy of it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

die() { echo "test-install: FAIL: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root (debootstrap, chroot)"

BUILD=1
case "${1:-}" in
    "") ;;
    --no-build) BUILD=0 ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac

if ((BUILD)); then
    bash packaging/build-deb.sh >/dev/null
fi
debs=(dist/nxr_*.deb)
[[ -f ${debs[0]} ]] || die "no dist/nxr_*.deb (run packaging/build-deb.sh)"
DEB=$REPO/${debs[0]}

MIRROR=http://deb.debian.org/debian
CACHE=$REPO/.cache/debian12-minbase.tar.gz
ROOT=""

# rm -rf through a mount point would delete the host's files: unmount whatever is still
# mounted below the root first (debootstrap mounts /proc and /sys while it runs), and
# leave the directory in place if that fails.
remove_root() {
    local dir=$1
    [[ -n $dir && -d $dir ]] || return 0
    awk -v d="$dir" 'index($2, d "/") == 1 || $2 == d {print $2}' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" || true; done
    if awk -v d="$dir" 'index($2, d "/") == 1 || $2 == d {f=1} END {exit !f}' /proc/mounts; then
        echo "test-install: $dir still has mounts; not removing it" >&2
        return 0
    fi
    rm -rf --one-file-system "$dir"
}
trap 'remove_root "$ROOT"' EXIT
trap 'exit 1' INT TERM HUP  # so that the EXIT trap runs on these too

mkdir -p "$REPO/.cache" "$REPO/build"

if [[ ! -f $CACHE || -n $(find "$CACHE" -mtime +7) ]]; then
    if ! command -v debootstrap >/dev/null; then
        echo "test-install: installing debootstrap" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            debootstrap >/dev/null
    fi
    echo "test-install: creating the clean Debian 12 root (debootstrap, cached in .cache/)" >&2
    ROOT=$(mktemp -d "$REPO/build/debian12-root.XXXXXX")
    chmod 755 "$ROOT"  # mktemp's 0700 would lock out _apt and other users in the root
    debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 ||
        { tail -n 20 "$ROOT.log" >&2; die "debootstrap failed (log: $ROOT.log)"; }
    rm -f "$ROOT.log"
    # debootstrap leaves no package lists: fetch them once here, not on every run,
    # without translations and downloaded .debs, which would only make the cache bigger.
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    echo 'Acquire::Languages "none";' >"$ROOT/etc/apt/apt.conf.d/99nxr-test-no-translations"
    chroot "$ROOT" apt-get update -qq || die "apt-get update in the clean root failed"
    chroot "$ROOT" apt-get clean
    tar -C "$ROOT" -czf "$CACHE.tmp" . && mv "$CACHE.tmp" "$CACHE"
    remove_root "$ROOT"
fi

ROOT=$(mktemp -d "$REPO/build/debian12-root.XXXXXX")
tar -C "$ROOT" -xzf "$CACHE"  # also restores the root directory's own mode
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The root is thrown away after the run: dpkg's fsync of every file only costs time.
echo force-unsafe-io >"$ROOT/etc/dpkg/dpkg.cfg.d/nxr-test-unsafe-io"
cp "$DEB" "$ROOT/tmp/"

# A clean environment: nothing from this host (PATH with pyenv shims, PIP_*, PYTHON*).
in_root() {
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# The cached package lists may name versions the mirror has since replaced.
in_root apt-get update -qq || die "apt-get update in the fresh root failed"

# --no-install-recommends: the package's Depends alone must be enough.
echo "test-install: apt-get install ./$(basename "$DEB") into a fresh copy of the clean root" >&2
in_root sh -c 'cd /tmp && apt-get install -y -q --no-install-recommends ./nxr_*.deb' \
    >"$ROOT.install.log" 2>&1 ||
    { tail -n 30 "$ROOT.install.log" >&2; die "apt-get install of the package failed (log: $ROOT.install.log)"; }
rm -f "$ROOT.install.log"

checks=0
check() {  # check DESCRIPTION COMMAND...: COMMAND must succeed
    local what=$1 out
    shift
    if ! out=$("$@" 2>&1); then
        [[ -n $out ]] && printf '%s\n' "$out" | tail -n 20 >&2
        die "$what"
    fi
    checks=$((checks + 1))
    echo "  ok: $what"
}

want="nxrd, version $(dpkg-deb -f "$DEB" Version | sed 's/-[^-]*$//')"
got=$(in_root nxrd --version 2>&1) || die "nxrd --version failed: $got"
check "nxrd --version says '$want'" test "$got" = "$want"
check "nxrctl --help" in_root nxrctl --help
check "nxrctl --version as an unprivileged user" \
    chroot --userspec=65534:65534 "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin nxrctl --version
check "unit at /lib/systemd/system/nxrd.service" test -f "$ROOT/lib/systemd/system/nxrd.service"
check "the workloads' unit at /lib/systemd/system/nxr-workloads.service" \
    test -f "$ROOT/lib/systemd/system/nxr-workloads.service"
check "nxr's slice at /lib/systemd/system/nxr.slice" test -f "$ROOT/lib/systemd/system/nxr.slice"
# An upgrade restarts nxrd (which adopts the workloads), never the unit holding them.
check "the package never starts or restarts nxr-workloads.service itself" \
    sh -c "! grep -q 'nxr-workloads' '$ROOT/var/lib/dpkg/info/nxr.postinst'"
check "unit enabled (multi-user.target.wants/nxrd.service)" \
    test "$(readlink "$ROOT/etc/systemd/system/multi-user.target.wants/nxrd.service")" \
    = /lib/systemd/system/nxrd.service
check "configuration directory /etc/nxr/profiles" test -d "$ROOT/etc/nxr/profiles"
doc=$(sed -n 's|^Documentation=file:||p' units/nxrd.service)
check "the unit's Documentation= is installed ($doc)" test -f "$ROOT$doc"
check "API group nxr exists" in_root getent group nxr
for p in profiles/*.toml; do
    check "example profile /usr/share/nxr/$p" cmp "$p" "$ROOT/usr/share/nxr/$p"
    check "nxrctl validate /usr/share/nxr/$p" in_root nxrctl validate "/usr/share/nxr/$p"
done

in_root apt-get purge -y -q nxr >"$ROOT.purge.log" 2>&1 ||
    { tail -n 30 "$ROOT.purge.log" >&2; die "apt-get purge nxr failed (log: $ROOT.purge.log)"; }
rm -f "$ROOT.purge.log"
for f in /usr/lib/nxr /usr/bin/nxrd /lib/systemd/system/nxrd.service /etc/nxr \
    /lib/systemd/system/nxr-workloads.service /lib/systemd/system/nxr.slice \
    /etc/systemd/system/multi-user.target.wants/nxrd.service; do
    check "purge removed $f" test ! -e "$ROOT$f" -a ! -L "$ROOT$f"
done

echo "test-install: OK, $checks checks on $(basename "$DEB") in a clean Debian 12 root"
