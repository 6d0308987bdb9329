#!/usr/bin/env bash
# redis-server checkpoint benchmark (issue 16). Not part of the tests: run by hand, as root, on an idle machine.
#
#   Tools/bench/redis-checkpoint.sh [--quick]
#
# redis-server holding about 1 GiB (DEBUG POPULATE; 256 MiB with --quick), all resident, with 100
# clients connected (idle, each after a PING), runs under `legato run`. Prints the pause of the
# first (full) checkpoint and the median of three increments, each after a client rewrote 10% of
# the keys, beside the single-process target (20 ms + 1 ms per 10 MiB dirty) and beside what redis
# itself pauses for its own snapshot (BGSAVE's fork, INFO's latest_fork_usec), measured in the same
# run. Results go in Docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true; done
KEYS=900000
[ "${1:-}" = "--quick" ] && KEYS=225000
LEGATO=$PWD/.build/release/legato
[ -x "$LEGATO" ] || swift build -c release --product legato >/dev/null
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/legato-redisbench.XXXXXX)
PORT=$((30000 + $$ % 20000))
trap 'kill $CLIENTS 2>/dev/null || true; pkill -9 -f "legato run --name rbench" 2>/dev/null || true; rm -rf "$WORK"' EXIT
CLIENTS=
cli() { redis-cli -p "$PORT" "$@"; }
pause_of() { sed -n 's/.*paused \([0-9.]*\) ms, \([0-9]*\) pages.*/\1 \2/p'; }

"$LEGATO" run --name rbench --state-dir "$WORK/state" --local-mem 3G -- \
    redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --enable-debug-command yes --dir "$WORK" > "$WORK/out" 2> "$WORK/err" &
for _ in $(seq 200); do [ "$(cli PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
cli DEBUG POPULATE "$KEYS" key 1000 > /dev/null
USED=$(cli INFO memory | sed -n 's/^used_memory_rss:\([0-9]*\).*/\1/p' | tr -d '\r')
# 100 clients, connected and idle.
python3 - "$PORT" <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
held = []
for _ in range(100):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"PING\r\n")
    assert s.recv(16) == b"+PONG\r\n"
    held.append(s)
print("connected", flush=True)
time.sleep(3600)
PY
CLIENTS=$!
for _ in $(seq 100); do [ "$(cli CLIENT LIST | wc -l)" -ge 101 ] && break; sleep 0.1; done
CONNECTED=$(( $(cli CLIENT LIST | wc -l) - 1 ))

# rewrite: SET of 10% of the keys with new 1000-byte values, pipelined.
rewrite() {
    python3 - "$1" "$KEYS" <<'PY' | cli --pipe > /dev/null
import sys
step, keys = int(sys.argv[1]), int(sys.argv[2])
value = (b"%d" % step) * 1000
out = sys.stdout.buffer
for k in range(0, keys, 10):
    key = b"key:%d" % (k + step)
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1000\r\n%s\r\n" % (len(key), key, value[:1000]))
PY
}
FULL=$("$LEGATO" checkpoint rbench --state-dir "$WORK/state" | pause_of)
INCS=""
for step in 1 2 3; do
    rewrite "$step"
    INCS="$INCS$("$LEGATO" checkpoint rbench --state-dir "$WORK/state" | pause_of);"
done
BREAKDOWN=$(grep -o 'pause: .*' "$WORK/err" | tail -1)
# What redis pauses for its own snapshot: the fork of BGSAVE.
cli BGSAVE > /dev/null
for _ in $(seq 600); do [ "$(cli INFO persistence | sed -n 's/^rdb_bgsave_in_progress:\([0-9]\).*/\1/p' | tr -d '\r')" = 0 ] && break; sleep 0.1; done
FORK=$(cli INFO stats | sed -n 's/^latest_fork_usec:\([0-9]*\).*/\1/p' | tr -d '\r')

echo "# Legato redis-server checkpoint benchmark — $(date -u +%Y-%m-%d) — $(nproc) cores, $((USED >> 20)) MiB resident, $CONNECTED clients connected"
echo
python3 - <<PY
import statistics
full = "$FULL".split()
incs = [x.split() for x in "$INCS".split(";") if x]
fork_ms = int("$FORK") / 1000
print("| checkpoint | dirty pages | dirty MiB | pause ms | target ms | redis BGSAVE fork ms |")
print("|---|---|---|---|---|---|")
for kind, (ms, pages) in (("first (full)", full), ("increment, 10% of the keys rewritten (median of 3: " + " / ".join(a for a, b in incs) + ")",
                                                     (str(statistics.median(float(a) for a, b in incs)), incs[0][1]))):
    dirty = int(pages) * 4096 / 1048576
    print(f"| {kind} | {pages} | {dirty:.0f} | {float(ms):.1f} | {20 + dirty / 10:.0f} | {fork_ms:.1f} |")
PY
echo
echo "last pause: $BREAKDOWN"
