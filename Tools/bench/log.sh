#!/usr/bin/env bash
# Replicated-log benchmarks (issue 3). Not part of the tests: run by hand, as root, on an idle machine.
#
#   Tools/bench/log.sh [--quick]
#
# Starts a loopback cluster of 3 log nodes and prints, beside the floors measured in the same run:
#   - append throughput with R=1 and R=3 (buffered: an append is acknowledged once every replica holds
#     it in memory) against the loopback TCP floor (and that floor / R). The payloads are one hot
#     4 KiB array, as the floor's sender sends one hot buffer; a further R=3 row rewrites each batch's
#     payloads before its append (warm, like a checkpoint's freshly read pages) and times the appends;
#   - recovery reads (every segment of a writer's log read from its replicas in parallel, page cache
#     dropped first) against the disk's read floor; the disk write floor for reference.
# Results go in Docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOTAL=1G
[ "${1:-}" = "--quick" ] && TOTAL=256M
LEGATO=$PWD/.build/release/legato
[ -x "$LEGATO" ] || swift build -c release --product legato >/dev/null
WORK=$(mktemp -d /tmp/legato-logbench.XXXXXX)
trap '"$LEGATO" cluster down --dir "$WORK/cluster" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
cc -O2 -o "$WORK/floor" Tools/bench/floor.c
. "$(dirname "$0")/floors.sh"

tcp_floor
MIB=$(( $(numfmt --from=iec "$TOTAL") / 1048576 ))
disk_floors "$MIB"

C=$("$LEGATO" cluster up --memory 0 --log 3 --dir "$WORK/cluster")
# Each timed run starts on a quiet cluster: every log node has written out what the previous run
# left buffered, so that one run's disk writes do not share the two vCPUs with the next run's appends.
quiesce() {
  for _ in $(seq 300); do
    "$LEGATO" status --coordinator "$C" --json --counters | python3 -c '
import json, sys
nodes = [n for n in json.load(sys.stdin)["nodes"] if n["role"] == "log" and n["state"] == "alive"]
sys.exit(0 if nodes and all(n.get("counters", {}).get("buffered_bytes", 1) == 0 for n in nodes) else 1)' && return
    sleep 0.1
  done
  echo "log nodes still busy writing out after 30 s" >&2
}
# Appends: median of three runs each (this VM's figures vary by 20% from run to run).
append() { quiesce; "$LEGATO" bench log-append --coordinator "$C" "$@" | field log_append_mbps; }
R1S=(); R3S_=(); R3SS=(); R3FS=()
for i in 1 2 3; do
  R1S+=("$(append --replicas 1 --total "$TOTAL" --writer $((1100 + i)))")
  R3S_+=("$(append --replicas 3 --total "$TOTAL" --writer $((1300 + i)))")
  R3SS+=("$(append --replicas 3 --total "$TOTAL" --writer $((1400 + i)) --sync)")
  R3FS+=("$(append --replicas 3 --total "$TOTAL" --writer $((1500 + i)) --fresh-payloads)")
done
R1=$(median "${R1S[@]}"); R3=$(median "${R3S_[@]}"); R3S=$(median "${R3SS[@]}"); R3F=$(median "${R3FS[@]}")
quiesce
RDS=()
for _ in 1 2 3; do
  drop_caches
  RDS+=("$("$LEGATO" bench log-read --coordinator "$C" --writer 1301 --threads 4 | field log_read_mbps)")
done
RD=$(median "${RDS[@]}")

echo "# Legato replicated-log benchmark — $(date -u +%Y-%m-%d) — $(nproc) cores, $TOTAL per run"
echo
echo "| what | MB/s | floor (same run) | share of the floor |"
echo "|---|---|---|---|"
python3 - <<PY
tcp, dw, dr = $TCP, $DWMB, $DRMB
rows = [
  ("append, R=1 (buffered, median of 3)", $R1, tcp, "loopback TCP"),
  ("append, R=3 (buffered, median of 3)", $R3, tcp / 3, "loopback TCP / 3"),
  ("append, R=3, payloads written just before (median of 3)", $R3F, tcp / 3, "loopback TCP / 3"),
  ("append, R=3, then sync (median of 3)", $R3S, dw / 3, "disk write+fsync / 3"),
  ("recovery read (4 readers, cold cache, median of 3)", $RD, dr, "disk read, median of 3"),
]
for name, v, floor, what in rows:
    print(f"| {name} | {v:.0f} | {floor:.0f} ({what}) | {100*v/floor:.0f}% |")
print()
print(f"Floors (medians of 3): loopback TCP {tcp:.0f} MB/s (runs: ${TCPS[*]}), disk write+fsync {dw:.0f} MB/s, disk read {dr:.0f} MB/s (runs: ${DRS[*]}).")
print("Recovery reads (MB/s): ${RDS[*]}.")
print("Appends (MB/s): R=1 ${R1S[*]}; R=3 ${R3S_[*]}; R=3 with fresh payloads ${R3FS[*]}; R=3 then sync ${R3SS[*]}.")
PY
