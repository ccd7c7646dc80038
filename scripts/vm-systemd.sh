#!/usr/bin/env bash
# The systemd tier: the .deb installed in the qemu test VM with systemd as PID 1, and the
# unit checked end to end: start, delegated cgroup tree, status, reload, journal fields,
# kill -9 of nxrd (systemd restarts it, every workload keeps its PID), watchdog, stop.
#   scripts/vm-systemd.sh          exits 0 when every check passes, 1 otherwise
# Slow: software emulation; the boot alone takes several minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
bash scripts/setup.sh --vm
KVER=$(cat .cache/vm/kernel-version)
KERNEL=$REPO/.cache/vm/root/boot/vmlinuz-$KVER
RES=$(mktemp -d /tmp/nxr-vmsd.XXXXXX)
trap 'rm -rf "$RES"' EXIT

# The package as shipped, installed in the guest (its /usr and /var are overlays there):
# the .deb the package tier built, or a fresh one when it is missing or older than the
# sources.
deb=$(ls -t dist/nxr_*.deb 2>/dev/null | head -1 || true)
if [[ -z $deb || -n $(find nxrd units packaging pyproject.toml -newer "$deb" -type f | head -1) ]]; then
    bash packaging/build-deb.sh >/dev/null
    deb=$(ls -t dist/nxr_*.deb | head -1)
fi
cp "$deb" "$RES/nxr.deb"
# Two cheap workloads in two classes; the odd durations make their processes findable.
cat > "$RES/demo.toml" <<'EOF'
[workloads.web]
command = ["sleep", "7701"]

[workloads.crunch]
command = ["sleep", "7702"]
class = "batch"

# A core of its own: the rest of the machine is kept off it while nxrd runs.
[workloads.solo]
command = ["sleep", "7703"]
class = "latency-critical"
cpus = 1
EOF
# Samples each stress-ng worker's CPU (field 39 of /proc/PID/stat) every 50 ms for $2
# seconds; prints how many samples fell on the CPUs in $1, and how many there were.
cat > "$RES/oncpu.py" <<'PY'
import glob, sys, time
cpus = {int(c) for c in sys.argv[1].split(",")}
end, hits, total = time.monotonic() + float(sys.argv[2]), 0, 0
while time.monotonic() < end:
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = open(stat).read()
        except OSError:
            continue
        if "(stress-ng" not in text:
            continue
        total += 1
        hits += int(text.rsplit(")", 1)[1].split()[36]) in cpus
    time.sleep(0.05)
print(hits, total)
PY

# What runs inside the guest, as root, once systemd has booted.
cat > "$RES/guest.sh" <<'GUEST'
set -u
RES=$1 REPO=$2
FAILED=0
ok()   { echo "CHECK ok:   $*"; }
bad()  { echo "CHECK FAIL: $*"; FAILED=1; }
hdr()  { echo; echo "== $*"; }

hdr "PID 1: $(cat /proc/1/comm); systemd $(systemctl --version | head -1)"
[[ $(cat /proc/1/comm) == systemd ]] && ok "systemd is PID 1" || bad "PID 1 is not systemd"
systemctl is-system-running || true   # informational: 'degraded' is normal in this VM
stat -fc 'cgroup fs: %T' /sys/fs/cgroup

hdr "install"
# dpkg writes /usr, /var and /etc: overlays in the guest (vng --overlay-rwdir; /etc is
# one that virtme-ng-init mounted), thrown away with the VM.
if dpkg -i "$RES/nxr.deb" > "$RES/dpkg.txt" 2>&1; then ok "the .deb installed"
else bad "dpkg -i failed"; tail -20 "$RES/dpkg.txt"; fi
systemctl daemon-reload
systemctl cat nxrd | grep -E '^Exec'
[[ $(systemctl show -P ExecStart nxrd) == *"/usr/bin/nxrd"* ]] && ok "the packaged unit runs /usr/bin/nxrd" || bad "not the packaged unit"
# The package starts nxrd at once, with no profile yet (it waits for one): stop it, so
# the start below is the one that reads the profile.
systemctl stop nxrd
cp "$RES/demo.toml" /etc/nxr/profiles/
export PATH=/usr/bin:$PATH  # the packaged nxrctl from here on

hdr "systemctl start nxrd"
t0=$(date +%s)
# Type=notify: start returns once nxrd sent READY=1 (or failed).
if timeout 600 systemctl start nxrd; then ok "started in $(( $(date +%s) - t0 ))s"
else bad "systemctl start nxrd failed"; systemctl status --no-pager -l nxrd; journalctl -b -u nxrd --no-pager | tail -40; fi

# Workloads are launched after READY: give them a moment to reach their leaves.
for _ in $(seq 60); do
    [[ $(pgrep -xc sleep) -ge 2 ]] && break; sleep 2
done

hdr "systemctl show"
systemctl show -p ActiveState,SubState,StatusText,ControlGroup,MainPID,NRestarts nxrd
[[ $(systemctl show -P ActiveState nxrd) == active ]] && ok "ActiveState=active" || bad "not active"
[[ -n $(systemctl show -P StatusText nxrd) ]] && ok "StatusText set" || bad "no StatusText"
NXRD_CG=/sys/fs/cgroup$(systemctl show -P ControlGroup nxrd)
CG=/sys/fs/cgroup$(systemctl show -P ControlGroup nxr-workloads)
MAIN=$(systemctl show -P MainPID nxrd)
HOLDER=$(systemctl show -P MainPID nxr-workloads)

hdr "cgroup tree under $CG (nxr-workloads.service)"
find "$CG" -mindepth 1 -type d | sort | while read -r d; do
    printf '%-60s procs: %s\n' "${d#"$CG"}" "$(tr '\n' ' ' < "$d/cgroup.procs")"
done
echo "subtree_control: $(cat "$CG/cgroup.subtree_control")"
[[ $(systemctl show -P ActiveState nxr-workloads) == active ]] && ok "nxr-workloads.service started with nxrd" || bad "nxr-workloads.service not active"
[[ $(cat "$NXRD_CG/cgroup.procs") == "$MAIN" ]] && ok "nxrd (MainPID $MAIN) alone in its unit's cgroup" || bad "nxrd.service holds: $(tr '\n' ' ' < "$NXRD_CG/cgroup.procs")"
grep -qx "$HOLDER" "$CG/nxrd/cgroup.procs" && ok "the holder ($HOLDER) is in <workloads unit>/nxrd" || bad "holder $HOLDER not in $CG/nxrd"
[[ -z $(cat "$CG/cgroup.procs") ]] && ok "no process in the workloads unit's cgroup itself" || bad "processes left in $CG"
for w in web crunch; do
    leaf=$(find "$CG" -mindepth 2 -type d -name "$w" | head -1)
    if [[ -n $leaf && -n $(cat "$leaf/cgroup.procs") ]]; then ok "workload $w in ${leaf#"$CG"}"
    else bad "no populated leaf for workload $w"; fi
done

hdr "nxrctl status"
nxrctl status && ok "nxrctl status" || bad "nxrctl status rc=$?"

hdr "systemctl reload nxrd"
t0=$(date +%s)
if timeout 300 systemctl reload nxrd; then ok "reload ok in $(( $(date +%s) - t0 ))s"
else bad "systemctl reload failed"; fi
journalctl -b -u nxrd --no-pager | grep -iE 'reload' | tail -5
[[ $(systemctl show -P ActiveState nxrd) == active ]] && ok "active after reload" || bad "not active after reload"

hdr "journal fields"
# Each event is a journal entry with its workload and a PRIORITY (docs/daemon.md).
if journalctl -u nxrd -o json --no-pager | python3 -c '
import json, sys
rows = [json.loads(line) for line in sys.stdin if line.strip()]
web = [r for r in rows if r.get("NXR_WORKLOAD") == "web" and r.get("NXR_EVENT")]
sys.exit(not (web and all(r.get("PRIORITY") in "01234567" for r in web)))
'; then ok "events carry NXR_WORKLOAD, NXR_EVENT and PRIORITY"
else bad "no event entry with NXR_WORKLOAD=web and a PRIORITY"; journalctl -u nxrd -o verbose --no-pager | tail -30; fi

hdr "kill -9 of the MainPID: Restart=on-failure, and the workloads are taken over"
before=$(pgrep -f 'sleep 770[12]' | sort | tr '\n' ' ')
kill -9 "$MAIN"
for _ in $(seq 300); do
    now_main=$(systemctl show -P MainPID nxrd)
    [[ $now_main != "$MAIN" && $now_main != 0 && $(systemctl show -P ActiveState nxrd) == active ]] && break
    sleep 1
done
systemctl show -p ActiveState,SubState,MainPID,NRestarts nxrd
[[ $now_main != "$MAIN" && $(systemctl show -P NRestarts nxrd) == 1 ]] && ok "restarted once by systemd (MainPID $MAIN -> $now_main)" || bad "not restarted"
after=$(pgrep -f 'sleep 770[12]' | sort | tr '\n' ' ')
[[ -n $before && $before == "$after" ]] && ok "every workload kept its PID ($after)" || bad "workload PIDs changed: $before -> $after"
journalctl -u nxrd --no-pager | grep -E 'took over [0-9]+ running' | tail -1
nxrctl status && ok "nxrctl status after the restart" || bad "nxrctl status rc=$?"
MAIN=$now_main
# ExecStopPost= gave the slices back after the kill; the restarted nxrd narrowed them again
journalctl -u nxrd --no-pager | grep -E 'kept clear|restore-host' | tail -3
[[ -n $(systemctl show -P AllowedCPUs user.slice) ]] && ok "user.slice narrowed again after the restart" || bad "user.slice not narrowed after the restart"

hdr "watchdog: waiting 45s (WatchdogSec=30s)"
sleep 45
now_main=$(systemctl show -P MainPID nxrd)
systemctl show -p ActiveState,SubState,StatusText,MainPID,NRestarts,Result nxrd
if [[ $now_main == "$MAIN" && $(systemctl show -P NRestarts nxrd) == 1 ]] \
   && ! journalctl -b -u nxrd --no-pager | grep -qi 'watchdog timeout'; then
    ok "no watchdog timeout, same MainPID, no further restart"
else bad "watchdog fired or nxrd restarted"; journalctl -b -u nxrd --no-pager | tail -20; fi

hdr "exclusive cores: system.slice, user.slice and init.scope kept off them"
SOLO=$(nxrctl status -o json | python3 -c 'import json,sys; print(next(w["cpus"] for w in json.load(sys.stdin)["workloads"] if w["name"] == "solo"))')
REST=$(python3 -c "import os; print(','.join(str(c) for c in sorted(os.sched_getaffinity(0)) if str(c) != '$SOLO'))")
echo "solo's core: $SOLO; the rest: $REST"
for u in system.slice user.slice init.scope; do
    got=$(systemctl show -P AllowedCPUs $u)
    [[ $got == "$REST" ]] && ok "$u AllowedCPUs=$got" || bad "$u AllowedCPUs='$got', not $REST"
done
journalctl -u nxrd --no-pager | grep -E 'kept clear' | tail -1
# two CPU hogs outside nxr, one per slice, each as busy as the machine has CPUs
systemd-run --unit nxr-hog-sys --slice=system.slice /usr/bin/stress-ng --temp-path /tmp --cpu 2 --timeout 120
systemd-run --unit nxr-hog-user --slice=user.slice /usr/bin/stress-ng --temp-path /tmp --cpu 2 --timeout 120
for _ in $(seq 60); do [[ $(pgrep -c stress-ng) -ge 6 ]] && break; sleep 1; done
pgrep -a stress-ng || { systemctl status --no-pager nxr-hog-sys nxr-hog-user | tail -20; journalctl -u nxr-hog-sys --no-pager | tail -5; }
read -r hits total < <(python3 "$RES/oncpu.py" "$SOLO" 10)
echo "stress-ng samples on core $SOLO while nxrd runs: $hits of $total"
[[ $total -gt 50 && $hits == 0 ]] && ok "no outside process ran on the exclusive core ($total samples)" || bad "$hits of $total samples on the exclusive core"
# what nxrctl explain says may still run there: no process of the slices, no stress-ng
nxrctl explain solo | grep 'on its cores besides it' || true
others=$(nxrctl explain solo -o json | python3 -c 'import json,sys; o=json.load(sys.stdin)["others_on_cores"]; print(o["processes"], sum(p["cgroup"].startswith(("/system.slice", "/user.slice", "/init.scope")) for p in o["named"]))')
[[ $others == "0 0" ]] && ok "nxrctl explain: no other process may run on solo's core" || bad "nxrctl explain lists others on solo's core: $others"

hdr "systemctl stop nxrd"
t0=$(date +%s)
timeout 600 systemctl stop nxrd && ok "stopped in $(( $(date +%s) - t0 ))s" || bad "systemctl stop failed"
systemctl show -p ActiveState,SubState,Result nxrd
# KillMode=process: systemd signals only nxrd, so this checks nxrd's own --on-stop.
left=$(pgrep -a -x sleep | grep -E 'sleep 770[12]' || true)
[[ -z $left ]] && ok "no workload process left" || bad "workload processes left: $left"
leaves=$(find "$CG" -mindepth 2 -type d | grep -v '/nxrd$' || true)
[[ -z $leaves ]] && ok "the workloads' cgroups removed" || bad "cgroups left: $leaves"
for u in system.slice user.slice init.scope; do
    got=$(systemctl show -P AllowedCPUs $u)
    [[ -z $got ]] && ok "$u AllowedCPUs given back" || bad "$u still AllowedCPUs=$got"
    eff=$(cat /sys/fs/cgroup/$u/cpuset.cpus.effective 2>/dev/null || echo "no cpuset")
    echo "$u cpuset.cpus.effective: $eff"
done
sleep 2
read -r hits total < <(python3 "$RES/oncpu.py" "$SOLO" 5)
echo "stress-ng samples on core $SOLO after nxrd stopped: $hits of $total"
[[ $hits -gt 0 ]] && ok "outside processes run on that core again" || bad "still none on core $SOLO after the stop"
systemctl stop nxr-hog-sys nxr-hog-user 2>/dev/null || true

hdr "journal (nxrd)"
journalctl -b -u nxrd --no-pager | tail -25
echo
((FAILED)) && echo "RESULT: FAIL" || echo "RESULT: all checks passed"
exit $FAILED
GUEST

# --systemd boots the host's /sbin/init (systemd) on the host's root; virtme's exec then
# runs from serial-getty@ttyS0 (virtme-ng-init replaces its ExecStart).
#  container=             the host root has /.dockerenv, so PID 1 would think it runs in
#                         docker (container semantics). An empty $container in PID 1's
#                         environment makes it detect qemu.
#  systemd.unit=serial-getty@ttyS0.service
#                         the generators (separate processes) still see /.dockerenv and
#                         so, as in a container, read PID 1's argv instead of the kernel
#                         command line: the getty generator adds console-getty instead of
#                         serial-getty@ttyS0 (which vng's drop-in turns into the command
#                         runner), and systemd.mask=/systemd.wants= are ignored. PID 1
#                         reads systemd.unit= itself, so boot straight into that getty:
#                         this also skips graphical.target (the host's postgresql, timers).
APPEND="container= systemd.unit=serial-getty@ttyS0.service"
echo "vm: booting $KVER with systemd as PID 1 (software emulation, 2 vCPUs, 2G)" >&2
start=$(date +%s)
# /dev/kvm hangs under qemu on these machines: always emulate. vng's exit status is
# unreliable: the result comes back through $RES (--rwdir). NXR_VM_VERBOSE=1 puts the
# boot console into vng.log (shown on failure).
PATH=$REPO/.venv/bin:$PATH timeout "${NXR_VM_TIMEOUT:-2400}" vng --disable-kvm --systemd ${NXR_VM_VERBOSE:+--verbose} \
    --run "$KERNEL" --memory 2G --cpus 2 --rwdir "$RES" --append "$APPEND" \
    --overlay-rwdir /usr --overlay-rwdir /var \
    --exec "bash $RES/guest.sh $RES $REPO > $RES/out.txt 2>&1; echo \$? > $RES/rc" \
    </dev/null >"$RES/vng.log" 2>&1 &
VNG=$!

# serial-getty@.service BindsTo=dev-ttyS0.device, which only udev announces, and this
# host has no udev package: the job times out after 90s and the getty never starts.
# vng hands systemd a per-run unit directory (SYSTEMD_UNIT_PATH=~/.cache/virtme-ng/guest/
# run-XXXX: , written on the host, read-only in the guest) holding its
# serial-getty@.service.d drop-in. An instance file there overrides the template (the
# template's drop-in still applies), so put serial-getty@ttyS0.service there without the
# device dependency. vng writes the directory before starting qemu and systemd reads it
# some 30s later: find ours (its drop-in names our $RES) and write the unit in between.
GUESTCACHE=$HOME/.cache/virtme-ng/guest
dropin=
for _ in $(seq 300); do
    dropin=$(grep -l "virtme_initmount0=${RES#/} " \
        "$GUESTCACHE"/run-*/serial-getty@.service.d/virtme-ng.conf 2>/dev/null | head -1) || true
    [[ -n $dropin ]] && break
    kill -0 "$VNG" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $dropin ]]; then
    echo "vm: FAILED: did not find vng's unit directory under $GUESTCACHE" >&2
    kill "$VNG" 2>/dev/null; wait "$VNG" || true
    tail -n 20 "$RES/vng.log" >&2
    exit 1
fi
printf '%s\n' \
    '[Unit]' \
    'Description=virtme-ng command runner on ttyS0 (serial-getty@ttyS0 without udev)' \
    'After=basic.target' \
    '[Service]' \
    '# vng'"'"'s serial-getty@.service.d drop-in adds the tty and ExecStart=virtme-ng-init.' \
    'Type=simple' \
    'Restart=no' > "$(dirname "$(dirname "$dropin")")/serial-getty@ttyS0.service"
wait "$VNG" || true
echo "vm: done in $(( $(date +%s) - start ))s" >&2

if [[ ! -s $RES/rc ]]; then
    echo "vm: FAILED: the VM did not start or the command did not finish; vng said:" >&2
    sed 's/\x1b\[[0-9;]*[mK]//g; s/\r/\n/g' "$RES/vng.log" | grep -v '^\s*$' | tail -n 40 >&2
    [[ -f $RES/out.txt ]] && tail -n 40 "$RES/out.txt" >&2
    exit 1
fi
cat "$RES/out.txt"
exit "$(cat "$RES/rc")"
