#!/bin/sh
# cproject.sh DIR [FILES [FUNCTIONS]] - writes a small C project into DIR (default: 4 files of
# 300 functions each, a main.c and a Makefile), for builds under `legato run`: `make -j2 -C DIR`
# then DIR/prog prints one line that depends only on the arguments.
set -e
dir=$1
files=${2:-4}
funcs=${3:-300}
mkdir -p "$dir"
objs="main.o"
decls=""
calls=""
i=0
while [ "$i" -lt "$files" ]; do
    n="m$i"
    awk -v n="$n" -v funcs="$funcs" 'BEGIN {
        for (i = 0; i < funcs; i++)
            printf "int %s_f%d(int x) { int s = 0; for (int k = 0; k < x; k++) s += (k * %d) ^ (s >> 3); return s + %d; }\n", n, i, i, i
        printf "int %s_all(void) { int s = 0;\n", n
        for (i = 0; i < funcs; i += 7) printf "  s += %s_f%d(%d);\n", n, i, i % 13
        printf "  return s; }\n"
    }' > "$dir/$n.c"
    objs="$objs $n.o"
    decls="$decls int ${n}_all(void);"
    calls="$calls printf(\"%d \", ${n}_all());"
    i=$((i + 1))
done
cat > "$dir/main.c" <<C
#include <stdio.h>
$decls
int main(void) { $calls putchar(10); return 0; }
C
cat > "$dir/Makefile" <<M
prog: $objs
	@cc -o \$@ \$^
%.o: %.c
	@cc -O2 -c -o \$@ \$<
M
