#!/usr/bin/env bash
# Boot a Debian kernel with a pure cgroup v2 hierarchy in qemu (virtme-ng) and run
# the kernel-tier tests inside as root. Fails, never skips, when the VM cannot start.
# Extra arguments go to pytest inside the VM.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
bash scripts/setup.sh --vm
KVER=$(cat .cache/vm/kernel-version)
KERNEL=$REPO/.cache/vm/root/boot/vmlinuz-$KVER
RES=$(mktemp -d /tmp/nxr-vm.XXXXXX)
trap 'rm -rf "$RES"' EXIT
ARGS=""
(($#)) && ARGS=$(printf ' %q' "$@")  # with no arguments printf would still emit '' (= ".")

echo "kernel tier: booting $KVER in qemu (software emulation, 2 vCPUs, 2G)"
# /dev/kvm hangs under qemu on these machines: always emulate (shared/docs/real-kernel.md).
# vng's own exit status is unreliable (255 on success): the result comes from $RES.
PATH=$REPO/.venv/bin:$PATH timeout "${NXR_VM_TIMEOUT:-1500}" vng --disable-kvm \
    --run "$KERNEL" --memory 2G --cpus 2 --rwdir "$RES" \
    --exec "cd $REPO && NXR_KERNEL_TIER=1 NXR_VM_RESULTS=$RES .venv/bin/python -m pytest tests/kernel -p no:cacheprovider -p no:hypothesispytest -v$ARGS > $RES/out.txt 2>&1; echo \$? > $RES/rc" \
    </dev/null >"$RES/vng.log" 2>&1 || true

if [[ ! -s $RES/rc ]]; then
    echo "kernel tier: FAILED: the VM did not start or did not finish; vng said:" >&2
    tail -n 40 "$RES/vng.log" >&2
    [[ -f $RES/out.txt ]] && tail -n 40 "$RES/out.txt" >&2
    exit 1
fi
cat "$RES/out.txt"
[[ -d $RES/artifacts ]] && cp -r "$RES/artifacts/." "${NXR_VM_ARTIFACTS:-/tmp}/" 2>/dev/null || true
exit "$(cat "$RES/rc")"
