# Floors the benchmarks share, measured in the run that prints them. Sourced by Tools/bench/*.sh
# (after WORK is set and $WORK/floor is built from Tools/bench/floor.c).

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" | tail -1; }
median() { python3 -c "import sys, statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# TCPS: three loopback TCP bandwidth runs (MB/s); TCP: their median.
tcp_floor() {
    TCPS=()
    for _ in 1 2 3; do TCPS+=("$("$WORK/floor" tcpbw 2048 | field floor_tcpbw_mbps)"); done
    TCP=$(median "${TCPS[@]}")
}

# disk_floors MIB: DWMB, one write of MIB MiB then fdatasync (MB/s); DRS, three reads of it with the
# page cache dropped first; DRMB, their median.
disk_floors() {
    local mib=$1 dw dr
    dw=$(dd if=/dev/zero of="$WORK/dd" bs=8M count=$((mib / 8)) conv=fdatasync 2>&1 | tail -1 | sed -n 's/.*copied, \([0-9.]*\) s.*/\1/p')
    DWMB=$(python3 -c "print(f'{$mib*1048576/$dw/1e6:.1f}')")
    DRS=()
    for _ in 1 2 3; do
        drop_caches
        dr=$(dd if="$WORK/dd" of=/dev/null bs=8M 2>&1 | tail -1 | sed -n 's/.*copied, \([0-9.]*\) s.*/\1/p')
        DRS+=("$(python3 -c "print(f'{$mib*1048576/$dr/1e6:.1f}')")")
    done
    DRMB=$(median "${DRS[@]}")
    rm -f "$WORK/dd"
}
