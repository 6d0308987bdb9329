#!/usr/bin/env bash
# Remote-memory benchmarks (issue 2). Not part of the tests: run by hand, as root, on an idle machine.
#
#   Tools/bench/remote-memory.sh [--quick]
#
# Prints, measured in this run:
#   1. the floors: a page fault served from a local buffer by another process (userfaultfd), and a
#      loopback TCP round trip of 16 bytes -> 4 KiB;
#   2. the remote-fault latency a program sees under `legato run` (faultlat at 1/8 local memory);
#   3. workload times at 100/50/25/12.5% local memory against a plain run, and the same workloads
#      under Linux swap (a swapfile on disk, and zram) with a cgroup memory limit equal to --local-mem;
#      for the sequential scan, also the same work paged by userfaultfd inside its own process.
# Results go in Docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

LEGATO=$ROOT/.build/release/legato
if [ ! -x "$LEGATO" ]; then
    echo "building the release binary..." >&2
    swift build -c release --product legato >/dev/null
fi
WORK=$(mktemp -d /tmp/legato-bench.XXXXXX)
trap 'cleanup' EXIT
SWAPFILE=$WORK/swapfile
CG=""

cleanup() {
    swapoff "$SWAPFILE" 2>/dev/null || true
    swapoff /dev/zram0 2>/dev/null || true
    [ -e /sys/block/zram0/reset ] && echo 1 > /sys/block/zram0/reset 2>/dev/null || true
    [ -n "$CG" ] && rmdir "$CG" 2>/dev/null || true
    rm -rf "$WORK"
}

cc -O2 -pthread -o "$WORK/floor" Tools/bench/floor.c
for w in seqscan randrw faultlat; do cc -O2 -pthread -o "$WORK/$w" "Tools/workloads/$w.c"; done

MIB=256
SEQ_ARGS="$MIB 3"
RAND_MIB=64
RAND_ARGS="$RAND_MIB 4 200000 1"
LAT_ROUNDS=20000
if [ $QUICK = 1 ]; then SEQ_ARGS="$MIB 2"; RAND_ARGS="$RAND_MIB 4 50000 1"; LAT_ROUNDS=5000; fi

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
seconds() { /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -1; }

echo "# Legato remote-memory benchmark — $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -r)"
echo

# ---- 1. floors
UF=$("$WORK/floor" uffd 20000)
TF=$("$WORK/floor" tcp 20000)
UF50=$(echo "$UF" | field p50); UF99=$(echo "$UF" | field p99)
TF50=$(echo "$TF" | field p50); TF99=$(echo "$TF" | field p99)
FLOOR50=$(echo "$UF50 + $TF50" | bc -l); FLOOR99=$(echo "$UF99 + $TF99" | bc -l)

# ---- 2. remote-fault latency as the program sees it
LAT=$("$LEGATO" run --local-mem 8M --stats-json "$WORK/lat.json" -- "$WORK/faultlat" 64 $LAT_ROUNDS 2>&1 >/dev/null | grep faultlat_us)
L50=$(echo "$LAT" | field p50); L99=$(echo "$LAT" | field p99)
AGENT=$(python3 -c "import json;d=json.load(open('$WORK/lat.json'))['fault_latency_us'];print(f\"{d['p50']:.1f} / {d['p99']:.1f}\")")

echo "## Remote-fault latency (µs)"
echo
echo "| what | p50 | p99 |"
echo "|---|---|---|"
printf "| floor: uffd fault served by another process | %.1f | %.1f |\n" "$UF50" "$UF99"
printf "| floor: loopback TCP 16 B -> 4 KiB round trip | %.1f | %.1f |\n" "$TF50" "$TF99"
printf "| **floor: sum** | **%.1f** | **%.1f** |\n" "$FLOOR50" "$FLOOR99"
printf "| legato run, faultlat 64M at --local-mem 8M (program-side) | %.1f | %.1f |\n" "$L50" "$L99"
echo "| agent-side (uffd read -> page installed), from --stats-json | $AGENT | |"
printf "\nRatio to the floor (p50): %.2fx\n\n" "$(echo "$L50 / $FLOOR50" | bc -l)"

# ---- 3. workloads: plain, legato at fractions, swap (disk, zram) at the same limits
setup_cgroup() {
    if [ -d /sys/fs/cgroup/memory ]; then
        CG=/sys/fs/cgroup/memory/legato-bench-$$
        mkdir -p "$CG"
    else
        CG=/sys/fs/cgroup/legato-bench-$$
        mkdir -p "$CG"
    fi
}
cg_limit() {
    if [ -f "$CG/memory.limit_in_bytes" ]; then
        echo "$1" > "$CG/memory.limit_in_bytes"
        echo 60 > "$CG/memory.swappiness" 2>/dev/null || true
    else
        echo "$1" > "$CG/memory.max"
    fi
}
# Runs a command inside the cgroup; prints seconds, or "killed" if the kernel OOM-killed it twice
# (under a cgroup v1 limit the OOM killer sometimes fires while swap still has room: the same run
# completes on another try).
in_cgroup() {
    local out try
    for try in 1 2; do
        if out=$(bash -c "echo \$\$ > $CG/cgroup.procs; exec /usr/bin/time -f %e $* 2>&1 >/dev/null" 2>&1); then
            echo "$out" | tail -1
            return
        fi
    done
    echo "killed"
}

SWAP_DISK=0; SWAP_ZRAM=0
if fallocate -l 2G "$SWAPFILE" 2>/dev/null && chmod 600 "$SWAPFILE" && mkswap "$SWAPFILE" >/dev/null 2>&1; then SWAP_DISK=1; fi
[ -e /sys/block/zram0 ] && SWAP_ZRAM=1
setup_cgroup

run_row() {  # name, footprint MiB, workload args...
    local name=$1 fp=$2; shift 2
    local plain
    plain=$(seconds "$@")
    echo
    LAST_PLAIN=$plain
    echo "### $name (plain run: ${plain} s)"
    echo
    echo "| local memory | legato run | x plain | swap to disk (cgroup) | x plain | zram (cgroup) | x plain |"
    echo "|---|---|---|---|---|---|---|"
    for pct in 100 50 25 12.5; do
        local bytes
        bytes=$(python3 -c "print(int($fp * 1048576 * $pct / 100))")
        local lg disk zr
        lg=$(seconds "$LEGATO" run --local-mem "$bytes" -- "$@")
        disk="n/a"; zr="n/a"
        if [ $SWAP_DISK = 1 ]; then
            swapon "$SWAPFILE"; cg_limit "$bytes"; disk=$(in_cgroup "$@"); swapoff "$SWAPFILE"
        fi
        if [ $SWAP_ZRAM = 1 ]; then
            echo 1 > /sys/block/zram0/reset; echo 2G > /sys/block/zram0/disksize; mkswap /dev/zram0 >/dev/null
            swapon /dev/zram0; cg_limit "$bytes"; zr=$(in_cgroup "$@"); swapoff /dev/zram0
        fi
        ratio() { [[ "$1" =~ ^[0-9.]+$ ]] && python3 -c "print(f'{$1/$plain:.1f}x')" || echo "-"; }
        secs() { [[ "$1" =~ ^[0-9.]+$ ]] && echo "$1 s" || echo "$1"; }
        echo "| ${pct}% ($(python3 -c "print(f'{$bytes/1048576:.0f}')")M) | $(secs "$lg") | $(ratio "$lg") | $(secs "$disk") | $(ratio "$disk") | $(secs "$zr") | $(ratio "$zr") |"
    done
}

echo "## Workload time against local memory"
run_row "sequential scan: seqscan $SEQ_ARGS" "$MIB" "$WORK/seqscan" $SEQ_ARGS
# The sequential scan's floor: the same work paged by userfaultfd inside the program's own process
# (floor.c uffdscan), with no second process, no ptrace and no network (median of three).
echo
echo "uffd paging floor for the sequential scan (floor.c uffdscan, median of 3):"
echo
echo "| local memory | uffd floor | x plain |"
echo "|---|---|---|"
for pct in 100 50 25 12.5; do
    lm=$(python3 -c "print(max(1, int($MIB * $pct / 100)))")
    fl=()
    for _ in 1 2 3; do fl+=("$("$WORK/floor" uffdscan "$MIB" "$lm" "${SEQ_ARGS#* }" | field floor_uffdscan_s)"); done
    med=$(python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.2f}')" "${fl[@]}")
    echo "| ${pct}% (${lm}M) | $med s | $(python3 -c "print(f'{$med/$LAST_PLAIN:.1f}x')") |"
done
run_row "random access: randrw $RAND_ARGS" "$RAND_MIB" "$WORK/randrw" $RAND_ARGS
echo
echo "Swap rows: the same binary in a cgroup whose memory limit equals --local-mem (all of the program's"
echo "memory counts there, not only its anonymous memory); 'killed' means the kernel OOM-killed it."
