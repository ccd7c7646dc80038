#!/usr/bin/env bash
# Boot a Debian kernel with a pure cgroup v2 hierarchy in qemu (virtme-ng) and run one
# shell command inside as root, from the repository root. Prints its output and exits
# with its status; exits 1 when the VM does not start or finish.
#   scripts/vm-run.sh 'COMMAND'
# NXR_VM_CPUS (default 2) sets the vCPUs; NXR_VM_OUT=DIR is shared read-write with the
# guest at the same path, for results that must outlive the VM.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
bash scripts/setup.sh --vm
KVER=$(cat .cache/vm/kernel-version)
KERNEL=$REPO/.cache/vm/root/boot/vmlinuz-$KVER
RES=$(mktemp -d /tmp/nxr-vm.XXXXXX)
trap 'rm -rf "$RES"' EXIT

# Handed over as a file: vng runs --exec with sh, which would mangle quoting.
printf '%s\n' "$1" > "$RES/cmd.sh"
CPUS=${NXR_VM_CPUS:-2}
RW=(--rwdir "$RES")
if [[ -n ${NXR_VM_OUT:-} ]]; then
    mkdir -p "$NXR_VM_OUT"
    RW+=(--rwdir "$NXR_VM_OUT")
fi
echo "vm: booting $KVER in qemu (software emulation, $CPUS vCPUs, 2G)" >&2
# /dev/kvm hangs under qemu on these machines: always emulate (shared/docs/real-kernel.md).
# vng's own exit status is unreliable (255 on success): the result comes from $RES.
PATH=$REPO/.venv/bin:$PATH timeout "${NXR_VM_TIMEOUT:-2400}" vng --disable-kvm \
    --run "$KERNEL" --memory 2G --cpus "$CPUS" "${RW[@]}" \
    --exec "cd $REPO && NXR_VM_RESULTS=$RES bash $RES/cmd.sh > $RES/out.txt 2>&1; echo \$? > $RES/rc; dmesg | tail -n 20 > $RES/dmesg.txt" \
    </dev/null >"$RES/vng.log" 2>&1 || true

if [[ ! -s $RES/rc ]]; then
    echo "vm: FAILED: the VM did not start or did not finish; vng said:" >&2
    tail -n 40 "$RES/vng.log" >&2
    [[ -f $RES/out.txt ]] && tail -n 40 "$RES/out.txt" >&2
    exit 1
fi
cat "$RES/out.txt"
rc=$(cat "$RES/rc")
if [[ $rc != 0 ]]; then
    # An OOM kill or a kernel warning shows in the guest's log, not in the command's output.
    echo "vm: the command exited $rc; the guest kernel's last messages:" >&2
    cat "$RES/dmesg.txt" >&2 2>/dev/null || true
fi
exit "$rc"
