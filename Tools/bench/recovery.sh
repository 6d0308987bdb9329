#!/usr/bin/env bash
# Memory-node failure benchmarks (issue 17). Not part of the tests: run by hand, as root, on an idle machine.
#
#   Tools/bench/recovery.sh [--quick]
#
# Prints, beside floors measured in the same run:
#   1. write-back throughput (a program filling 1 GiB at --local-mem 64M: every page is evicted dirty
#      and stored) with --memory-replication none, log and mirror, on 3 memory and 3 log nodes;
#   2. the recovery of a dead memory node holding 1 GiB of one run (log mode, 3 log nodes, 2 recovery
#      memory nodes): the agent's time from noticing the death to every page located again, the
#      program's slowest page while it waited, and the throughput against the disk-read floor (the
#      log's segments read cold, page cache dropped) and the loopback TCP floor (segments cached).
# Results go in Docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MIB=1024
[ "${1:-}" = "--quick" ] && MIB=256
LEGATO=$ROOT/.build/release/legato
[ -x "$LEGATO" ] || swift build -c release --product legato >/dev/null
WORK=$(mktemp -d /tmp/legato-recoverybench.XXXXXX)
EXTRA=()
cleanup() {
    for p in "${EXTRA[@]}"; do kill "$p" 2>/dev/null || true; done
    "$LEGATO" cluster down --dir "$WORK/cluster" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cc -O2 -o "$WORK/floor" Tools/bench/floor.c
cc -O2 -o "$WORK/seqscan" Tools/workloads/seqscan.c
cc -O2 -o "$WORK/fillwait" Tools/workloads/fillwait.c
. "$(dirname "$0")/floors.sh"
SECRET=$WORK/secret
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$SECRET"

# ---- floors
tcp_floor
disk_floors "$MIB"
DISK=$DRMB

up() { "$LEGATO" cluster up --dir "$WORK/cluster" --secret-file "$SECRET" --memory-capacity 3G --dead-after-ms 60000 "$@"; }
down() { "$LEGATO" cluster down --dir "$WORK/cluster" >/dev/null; rm -rf "$WORK/cluster"; }

# ---- 1. write-back throughput by replication mode (median of 3 each)
C=$(up --memory 3 --log 3)
declare -A FILL
for mode in none log mirror; do
    runs=()
    for _ in 1 2 3; do
        runs+=("$("$LEGATO" run --local-mem 64M --coordinator "$C" --secret-file "$SECRET" --memory-replication $mode \
                   -- "$WORK/seqscan" "$MIB" 0 2>&1 >/dev/null | field fill)")
    done
    FILL[$mode]="$(median "${runs[@]}") (runs: ${runs[*]})"
done
down

# ---- 2. recovery of a dead memory node holding the whole run (cold: segments on disk; warm: cached)
recover() {  # $1 = cold|warm; prints "seconds pages slowest_ms"
    local C victim pid out
    C=$(up --memory 1 --log 3)
    victim=$(python3 -c "import json;d=json.load(open('$WORK/cluster/cluster.json'));print([x for x in d['daemons'] if x['name']=='memd-0'][0]['pid'])")
    mkfifo "$WORK/go"
    "$LEGATO" run --local-mem 64M --coordinator "$C" --secret-file "$SECRET" --memory-replication log --stats-json "$WORK/stats.json" \
        -- "$WORK/fillwait" "$MIB" < "$WORK/go" > "$WORK/out" 2> "$WORK/err" &
    pid=$!
    exec 7> "$WORK/go"
    for _ in $(seq 600); do grep -q filled "$WORK/out" 2>/dev/null && break; sleep 0.1; done
    # Two empty memory nodes join: the recovery's targets.
    for i in 1 2; do
        "$LEGATO" memd --coordinator "$C" --secret-file "$SECRET" --capacity 3G --listen 127.0.0.1:0 --dir "$WORK/cluster/memd-r$i" \
            > "$WORK/memd-r$i.log" 2>&1 &
        EXTRA+=($!)
    done
    for _ in $(seq 100); do
        [ "$("$LEGATO" status --coordinator "$C" --secret-file "$SECRET" --json | python3 -c 'import json,sys;print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["role"]=="memory" and n["state"]=="alive"))')" = 3 ] && break
        sleep 0.1
    done
    # Every log node has written out what it buffered; cold: the page cache forgets it.
    for _ in $(seq 300); do
        "$LEGATO" status --coordinator "$C" --secret-file "$SECRET" --json --counters | python3 -c '
import json, sys
nodes = [n for n in json.load(sys.stdin)["nodes"] if n["role"] == "log" and n["state"] == "alive"]
sys.exit(0 if nodes and all(n.get("counters", {}).get("buffered_bytes", 1) == 0 for n in nodes) else 1)' && break
        sleep 0.1
    done
    [ "$1" = cold ] && drop_caches
    kill -9 "$victim"
    echo go >&7
    exec 7>&-
    wait "$pid" || { cat "$WORK/err" >&2; echo "the run failed" >&2; exit 1; }
    grep -q "PASS fillwait" "$WORK/out" || { cat "$WORK/out" "$WORK/err" >&2; exit 1; }
    out=$(grep "recovered the" "$WORK/err" | tail -1)
    local pages secs slow
    pages=$(echo "$out" | sed -n 's/.*recovered the \([0-9]*\) pages.*/\1/p')
    secs=$(echo "$out" | sed -n 's/.* held in \([0-9.]*\) s.*/\1/p')
    slow=$(field slowest_page_ms < "$WORK/err")
    echo "$secs $pages $slow"
    for p in "${EXTRA[@]}"; do kill "$p" 2>/dev/null || true; done
    EXTRA=()
    rm -f "$WORK/go"
    down
}
COLD=(); WARM=()
for _ in 1 2 3; do COLD+=("$(recover cold)"); WARM+=("$(recover warm)"); done

echo "# Legato memory-node failure benchmark — $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -r), $MIB MiB"
echo
python3 - <<PY
import statistics
tcp, disk = $TCP, $DISK
fill = {m: v for m, v in [("none", "${FILL[none]}"), ("log", "${FILL[log]}"), ("mirror", "${FILL[mirror]}")]}
med = {m: float(v.split()[0]) for m, v in fill.items()}
print("## Write-back throughput (a program filling $MIB MiB at --local-mem 64M; MiB/s, median of 3)")
print()
print("| --memory-replication | MiB/s | share of none |")
print("|---|---|---|")
for m in ("none", "log", "mirror"):
    print(f"| {m} | {fill[m]} | {100 * med[m] / med['none']:.0f}% |")
print()
print(f"Floor: loopback TCP {tcp:.0f} MB/s (median of 3: ${TCPS[*]}); log stores each page on 3 log nodes, mirror on 2 memory nodes.")
print()
print("## Recovery of a dead memory node holding $MIB MiB of one run (log mode, 3 log nodes, 2 recovery nodes)")
print()
print("| segments | recovery (s) | pages | GB/s | GB/s per recovery node | floor (same run) | share of the floor | slowest page (ms) |")
print("|---|---|---|---|---|---|---|---|")
for name, runs, floor, what in (("on disk (cold cache)", "$(IFS=';'; echo "${COLD[*]}")", disk, "disk read"), ("cached (warm)", "$(IFS=';'; echo "${WARM[*]}")", tcp, "loopback TCP")):
    vals = [tuple(float(x) for x in r.split()) for r in runs.split(";") if r.strip()]
    vals = sorted(vals)[len(vals) // 2]  # the median run by time
    secs, pages, slow = vals
    gbs = pages * 4096 / secs / 1e9
    print(f"| {name} | {secs:.2f} | {int(pages)} | {gbs:.2f} | {gbs / 2:.2f} | {floor / 1000:.2f} GB/s ({what}) | {100 * gbs * 1000 / floor:.0f}% | {slow:.0f} |")
print()
print(f"Floors: disk read {disk:.0f} MB/s (median of 3: ${DRS[*]}), loopback TCP {tcp:.0f} MB/s. RAMCloud: 35 GB in 1.6 s on 60 recovery masters, about 0.36 GB/s each.")
PY
