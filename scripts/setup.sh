#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: apt packages, the project
# virtualenv, and (with --vm) the Debian kernel the kernel-tier tests boot.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WANT_VM=0
[[ "${1:-}" == "--vm" ]] && WANT_VM=1

APT_PKGS=(python3-venv python3-dev gcc pkg-config libsystemd-dev haproxy nftables iperf3)  # haproxy: the request front; nftables: egress marks; iperf3: the egress tests
VM_PKGS=(qemu-system-x86 kmod busybox-static systemd stress-ng runc)  # systemd: journald for the kernel tier; stress-ng: outside load the systemd tier keeps off exclusive cores; runc: the node agent's pods are real containers
((WANT_VM)) && APT_PKGS+=("${VM_PKGS[@]}")

missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The virtualenv is rebuilt only when pyproject.toml changes.
PY=${PYTHON:-python3}
stamp=.venv/.nxr-installed
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "setup: installing the project into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev,demo]'
    # The demo's models ship in these wheels. Without their dependencies: one declares
    # opencv-python (288 MB, and libGL), the other torch; the demo reads only model files.
    .venv/bin/pip install -q --no-deps rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3
    touch "$stamp"
fi

if ((WANT_VM)); then
    # The full Debian kernel flavour: the -cloud- one lacks the 9p modules the
    # virtme-ng root filesystem needs (../shared/docs/real-kernel.md).
    VMDIR=$REPO/.cache/vm
    mkdir -p "$VMDIR"
    if [[ ! -f $VMDIR/kernel-version ]]; then
        find_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
        pkg=$(find_pkg)
        if [[ -z $pkg ]]; then  # no package lists yet on this machine
            apt-get update -qq
            pkg=$(find_pkg)
        fi
        [[ -n $pkg ]] || { echo "setup: cannot find the Debian kernel package (apt-get update?)" >&2; exit 1; }
        ver=${pkg#linux-image-}
        echo "setup: fetching $pkg for the test VM"
        (cd "$VMDIR" && rm -f ./*.deb && apt-get download -qq "$pkg")
        rm -rf "$VMDIR/root" && dpkg -x "$VMDIR"/"$pkg"_*.deb "$VMDIR/root"
        rm -f "$VMDIR"/*.deb
        echo "$ver" > "$VMDIR/kernel-version"
    fi
    ver=$(cat "$VMDIR/kernel-version")
    # virtme-ng loads the guest's modules from the host's /lib/modules.
    if [[ ! -d /lib/modules/$ver ]]; then
        mkdir -p /lib/modules
        cp -a "$VMDIR/root/lib/modules/$ver" /lib/modules/
    fi
    if [[ ! -x .venv/bin/vng ]]; then
        echo "setup: installing virtme-ng"
        .venv/bin/pip install -q virtme-ng
    fi
fi
