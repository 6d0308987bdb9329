#!/usr/bin/env bash
# Process-tree checkpoint benchmark (issue 15). Not part of the tests: run by hand, as root, on an idle machine.
#
#   Tools/bench/tree-checkpoint.sh [--quick]
#
# A tree of 8 processes holding 1 GiB in all (256 MiB with --quick: Tools/workloads/treedirtier,
# 128 MiB each) runs under `legato run` with all of it resident; then the same 1 GiB in one process
# (Tools/workloads/dirtier). Prints the pause of the first (full) checkpoint and the median of three
# increments with 10% of the memory dirty, for the tree and for the one process, beside the target
# (20 ms + 1 ms per 10 MiB dirty) and the copy floor (process_vm_readv of the dirty bytes into memory
# already faulted in), all measured in the same run. Results go in Docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Descriptors inherited from whatever started us would be PROG's too.
for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true; done
MIB=1024
[ "${1:-}" = "--quick" ] && MIB=256
LEGATO=$PWD/.build/release/legato
[ -x "$LEGATO" ] || swift build -c release --product legato >/dev/null
WORK=$(mktemp -d /tmp/legato-treebench.XXXXXX)
trap 'pkill -9 -f "legato run --name tbench-" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cc -O2 -o "$WORK/treedirtier" Tools/workloads/treedirtier.c
cc -O2 -o "$WORK/dirtier" Tools/workloads/dirtier.c
cc -O2 -o "$WORK/floor" Tools/bench/floor.c
STATE=$WORK/state
wait_for() { while ! grep -q "$2" "$1" 2>/dev/null; do sleep 0.02; done; }
pause_of() { sed -n 's/.*paused \([0-9.]*\) ms, \([0-9]*\) pages.*/\1 \2/p'; }
COPY=$("$WORK/floor" copy "$MIB" | sed -n 's/.*=\([0-9.]*\)/\1/p')   # ms per GiB
PAGES=$(( MIB * 256 / 10 ))   # 10% of the memory per step

# measure NAME ARGV...: full checkpoint, then one increment after each of three steps.
measure() {
    local name=$1; shift
    local out=$WORK/$name.out
    "$LEGATO" run --name "$name" --state-dir "$STATE" --local-mem $((MIB * 2))M -- "$@" > "$out" 2> "$WORK/$name.err" &
    wait_for "$out" ready
    local full incs=""
    full=$("$LEGATO" checkpoint "$name" --state-dir "$STATE" | pause_of)
    for step in 0 1 2; do
        wait_for "$out" "step $step"
        incs="$incs$("$LEGATO" checkpoint "$name" --state-dir "$STATE" | pause_of);"
    done
    pkill -9 -f "legato run --name $name" || true
    wait || true
    local breakdown
    breakdown=$(grep -o 'pause: .*' "$WORK/$name.err" | tail -1)
    python3 -c "
import statistics
r = [x.split() for x in '$incs'.split(';') if x]
print('$full'.replace(' ', ':'), str(statistics.median(float(a) for a, b in r)) + ':' + r[0][1], ','.join(a for a, b in r))"
    echo "$breakdown" > "$WORK/$name.breakdown"
}
TREE=$(measure tbench-tree "$WORK/treedirtier" 8 "$MIB" "$PAGES" 4 5000)
ONE=$(measure tbench-one "$WORK/dirtier" "$MIB" "$PAGES" 4 5000)

echo "# Legato process-tree checkpoint benchmark — $(date -u +%Y-%m-%d) — $(nproc) cores, $MIB MiB, all resident"
echo
python3 - <<PY
copy = $COPY
rows = [("8 processes", "$TREE".split()), ("1 process", "$ONE".split())]
print("| what | checkpoint | dirty pages | dirty MiB | pause ms | target ms | copy floor ms |")
print("|---|---|---|---|---|---|---|")
for label, (full, inc, runs) in rows:
    for kind, cell in (("first (full)", full), ("increment, 10% dirty (median of 3: " + runs.replace(",", " / ") + ")", inc)):
        ms, pages = cell.split(":")
        dirty = int(pages) * 4096 / 1048576
        print(f"| {label} | {kind} | {pages} | {dirty:.0f} | {float(ms):.1f} | {20 + dirty / 10:.0f} | {copy * dirty / 1024:.0f} |")
PY
echo
echo "last pause of the tree: $(cat "$WORK/tbench-tree.breakdown")"
echo "last pause of the one process: $(cat "$WORK/tbench-one.breakdown")"
