#!/usr/bin/env python3
"""pyobjects.py - a heap of ordinary Python objects, built, mutated, verified.

Usage: pyobjects.py [MIB] [build|full]   (default: 300 full; peak RSS is roughly MIB MiB)

"build" stops after the structures are built, verified once and digested;
"full" goes on with the mutation passes below.

Deterministically (seeded random.Random, never hash()/id()/set-of-str order)
builds, in roughly equal shares of the target:
  * a dict of str -> str            (keys "k%09d", random lowercase values)
  * a list of (int, float, str) tuples
  * a list of bytearrays             (1 B .. 64 KiB, random contents)
  * a big list of ints               (random 62-bit values)
Every structure is then verified against a fresh run of its generator (so
the data that was built early and not touched since - the part a
memory-disaggregation runtime will have paged out - is re-read in full).
Mutation passes follow, each verified:
  1. delete a random half of the dict keys (verified against a bitmap of
     deleted indices), insert as many new keys, rebuild the dict sorted by key;
  2. sort the tuples by (str, int); check order, length and an
     order-independent fingerprint of the multiset;
  3. xor-translate every bytearray, reverse every third one; regenerate and
     compare;
  4. sort the ints; check order, length and multiset fingerprint;
  then the dict, bytearrays and tuples are checked once more.
Finally prints counts and sha256 digests of canonical serializations of each
structure, then "PASS pyobjects".  Any mismatch prints "FAIL: ..." and exits 1.
"""
import hashlib
import random
import struct
import sys
from array import array

SEED = 20240601
LETTERS = bytes(b"abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(256))
XOR_TABLE = bytes(i ^ 0x5A for i in range(256))
M64 = (1 << 64) - 1
CHUNK = 8192


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------- generators

def gen_strings(rng, count, lo, hi):
    """Yields count random lowercase strings with lengths in [lo, hi]."""
    left = count
    while left:
        n = min(left, CHUNK)
        lens = [rng.randint(lo, hi) for _ in range(n)]
        blob = rng.randbytes(sum(lens)).translate(LETTERS).decode("ascii")
        pos = 0
        for ln in lens:
            yield blob[pos:pos + ln]
            pos += ln
        left -= n


def gen_dict_items(seed, count, prefix):
    rng = random.Random(seed)
    for i, v in enumerate(gen_strings(rng, count, 12, 52)):
        yield "%s%09d" % (prefix, i), v


def gen_tuples(seed, count):
    rng = random.Random(seed)
    for s in gen_strings(rng, count, 4, 12):
        yield (rng.getrandbits(40), rng.random(), s)


def gen_bytearrays(seed, total_bytes):
    rng = random.Random(seed)
    made = 0
    while made < total_bytes:
        n = min(rng.randint(1, 65536), total_bytes - made)
        made += n
        yield bytearray(rng.randbytes(n))


def gen_ints(seed, count):
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.getrandbits(62)


# ------------------------------------------------------------ serializations

def digest_dict(d):
    h = hashlib.sha256()
    buf = []
    for k, v in d.items():
        buf.append("%s=%s\n" % (k, v))
        if len(buf) >= CHUNK:
            h.update("".join(buf).encode())
            buf.clear()
    h.update("".join(buf).encode())
    return h.hexdigest()


def tuple_line(t):
    return "%d,%r,%s\n" % t


def digest_tuples(lst):
    h = hashlib.sha256()
    for i in range(0, len(lst), CHUNK):
        h.update("".join(map(tuple_line, lst[i:i + CHUNK])).encode())
    return h.hexdigest()


def digest_bytearrays(lst):
    h = hashlib.sha256()
    for b in lst:
        h.update(struct.pack("<Q", len(b)))
        h.update(b)
    return h.hexdigest()


def digest_ints(lst):
    h = hashlib.sha256()
    for i in range(0, len(lst), CHUNK):
        h.update(array("q", lst[i:i + CHUNK]).tobytes())
    return h.hexdigest()


def fp64(data):
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def tuples_fingerprint(it):
    s = 0
    for t in it:
        s += fp64(tuple_line(t).encode())
    return s & M64


def ints_fingerprint(it):
    s = 0
    for x in it:
        y = (x * 0x9E3779B97F4A7C15) & M64
        s += (y ^ (y >> 29)) * 0xBF58476D1CE4E5B9
    return s & M64


def is_sorted(lst, key=None):
    if key is None:
        return all(lst[i] <= lst[i + 1] for i in range(len(lst) - 1))
    return all(key(lst[i]) <= key(lst[i + 1]) for i in range(len(lst) - 1))


# ---------------------------------------------------------------------- main

def main():
    usage = "usage: pyobjects.py [MIB] [build|full]  (default: 300 full)\n"
    args = sys.argv[1:]
    mode = "full"
    if args and args[-1] in ("build", "full"):
        mode = args.pop()
    if len(args) > 1 or (args and not args[0].isdigit()):
        sys.stderr.write(usage)
        sys.exit(2)
    mib = int(args[0]) if args else 300
    if mib < 1:
        sys.stderr.write(usage)
        sys.exit(2)
    budget = mib << 20
    # approximate resident bytes per element, measured with CPython 3.11
    n_dict = max(1, int(budget * 0.21 / 190))
    n_tuples = max(1, int(budget * 0.21 / 198))
    ba_bytes = max(1, int(budget * 0.21))
    n_ints = max(1, int(budget * 0.21 / 63))
    s_dict, s_new, s_tup, s_ba, s_int, s_del = (SEED + i for i in range(6))

    # ---- build
    d = dict(gen_dict_items(s_dict, n_dict, "k"))
    tuples = list(gen_tuples(s_tup, n_tuples))
    bas = list(gen_bytearrays(s_ba, ba_bytes))
    ints = list(gen_ints(s_int, n_ints))
    print("pyobjects mib=%d dict=%d tuples=%d bytearrays=%d (%d bytes) ints=%d"
          % (mib, len(d), len(tuples), len(bas), ba_bytes, len(ints)))

    # ---- verify everything against a fresh run of the generators
    if len(d) != n_dict:
        fail("dict has %d entries, expected %d" % (len(d), n_dict))
    for i, (k, v) in enumerate(gen_dict_items(s_dict, n_dict, "k")):
        got = d.get(k)
        if got != v:
            fail("dict entry %d key %s: expected %r got %r" % (i, k, v, got))
    if len(tuples) != n_tuples:
        fail("tuple list has %d entries, expected %d" % (len(tuples), n_tuples))
    for i, t in enumerate(gen_tuples(s_tup, n_tuples)):
        if tuples[i] != t:
            fail("tuple %d: expected %r got %r" % (i, t, tuples[i]))
    n = 0
    for i, b in enumerate(gen_bytearrays(s_ba, ba_bytes)):
        if i >= len(bas) or bas[i] != b:
            fail("bytearray %d differs (len expected %d got %d)"
                 % (i, len(b), len(bas[i]) if i < len(bas) else -1))
        n += 1
    if n != len(bas):
        fail("bytearray list has %d entries, expected %d" % (len(bas), n))
    if len(ints) != n_ints:
        fail("int list has %d entries, expected %d" % (len(ints), n_ints))
    for i, x in enumerate(gen_ints(s_int, n_ints)):
        if ints[i] != x:
            fail("int %d: expected %d got %d" % (i, x, ints[i]))
    print("built: dict=%s" % digest_dict(d))
    print("built: tuples=%s" % digest_tuples(tuples))
    print("built: bytearrays=%s" % digest_bytearrays(bas))
    print("built: ints=%s" % digest_ints(ints))
    if mode == "build":
        print("PASS pyobjects")
        return

    # ---- pass 1: dict delete half, insert, rebuild sorted
    rng = random.Random(s_del)
    order = array("l", range(n_dict))
    rng.shuffle(order)
    deleted = bytearray(n_dict)
    for i in order[:n_dict // 2]:
        deleted[i] = 1
        del d["k%09d" % i]
    del order
    n_del = n_dict // 2
    if len(d) != n_dict - n_del:
        fail("dict has %d entries after deleting %d of %d" % (len(d), n_del, n_dict))
    for k, v in gen_dict_items(s_new, n_del, "n"):
        d[k] = v
    keys = sorted(d)
    d = {k: d[k] for k in keys}
    del keys
    if len(d) != n_dict:
        fail("rebuilt dict has %d entries, expected %d" % (len(d), n_dict))

    def check_dict(when):
        if len(d) != n_dict:
            fail("%s: dict has %d entries, expected %d" % (when, len(d), n_dict))
        for i, (k, v) in enumerate(gen_dict_items(s_dict, n_dict, "k")):
            got = d.get(k)
            if deleted[i]:
                if got is not None:
                    fail("%s: deleted dict key %s still present" % (when, k))
            elif got != v:
                fail("%s: dict entry %s: expected %r got %r" % (when, k, v, got))
        for k, v in gen_dict_items(s_new, n_del, "n"):
            if d.get(k) != v:
                fail("%s: new dict entry %s: expected %r got %r" % (when, k, v, d.get(k)))
        if not is_sorted(list(d)):
            fail("%s: rebuilt dict keys not in sorted order" % when)

    check_dict("after rebuild")

    # ---- pass 2: sort tuples by (str, int)
    fp_before = tuples_fingerprint(gen_tuples(s_tup, n_tuples))
    tuples.sort(key=lambda t: (t[2], t[0]))
    if len(tuples) != n_tuples:
        fail("sorted tuple list has %d entries" % len(tuples))
    if not is_sorted(tuples, key=lambda t: (t[2], t[0])):
        fail("tuple list not sorted")
    fp_tuples = tuples_fingerprint(tuples)
    if fp_tuples != fp_before:
        fail("tuple multiset changed by sort: fingerprint %016x, expected %016x" % (fp_tuples, fp_before))

    # ---- pass 3: transform bytearrays
    for i, b in enumerate(bas):
        b[:] = b.translate(XOR_TABLE)
        if i % 3 == 0:
            b.reverse()

    def check_bytearrays(when):
        n = 0
        for i, b in enumerate(gen_bytearrays(s_ba, ba_bytes)):
            b = b.translate(XOR_TABLE)
            if i % 3 == 0:
                b.reverse()
            if i >= len(bas):
                fail("%s: only %d bytearrays" % (when, len(bas)))
            if bas[i] != b:
                k = next(j for j in range(len(b)) if j >= len(bas[i]) or bas[i][j] != b[j])
                fail("%s: bytearray %d offset %d: expected 0x%02x got %s"
                     % (when, i, k, b[k], "0x%02x" % bas[i][k] if k < len(bas[i]) else "end of data"))
            n += 1
        if n != len(bas):
            fail("%s: %d bytearrays, expected %d" % (when, len(bas), n))

    check_bytearrays("after transform")

    # ---- pass 4: sort ints
    fp_before = ints_fingerprint(gen_ints(s_int, n_ints))
    ints.sort()
    if len(ints) != n_ints or not is_sorted(ints):
        fail("int list not sorted or wrong length (%d)" % len(ints))
    fp_after = ints_fingerprint(ints)
    if fp_after != fp_before:
        fail("int multiset changed by sort: fingerprint %016x, expected %016x" % (fp_after, fp_before))

    # ---- everything once more, after the last big pass
    check_dict("final check")
    check_bytearrays("final check")
    if len(tuples) != n_tuples or tuples_fingerprint(tuples) != fp_tuples:
        fail("final check: tuple list changed")

    print("final: dict entries=%d deleted=%d inserted=%d" % (len(d), n_del, n_del))
    print("final: dict=%s" % digest_dict(d))
    print("final: tuples=%s" % digest_tuples(tuples))
    print("final: bytearrays=%s" % digest_bytearrays(bas))
    print("final: ints=%s min=%d max=%d" % (digest_ints(ints), ints[0], ints[-1]))
    print("PASS pyobjects")


if __name__ == "__main__":
    main()
