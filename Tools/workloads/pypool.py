"""pypool.py MIB [WORKERS] - a multiprocessing Pool (fork start method) over data its parent built.

The parent builds MIB MiB of byte pages, then a Pool of WORKERS (default 2) forked workers each
hash every eighth page of what they inherited (copy-on-write, never sent to them) and build a list
of their own; the parent prints each task's digest in task order, then its own digest of the whole.
The output depends only on MIB: a plain run and one under `legato run` must print the same.
"""
import hashlib
import multiprocessing as mp
import sys

PAGE = 4096
mib = int(sys.argv[1])
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
pages = [bytes([(i * 7 + 3) % 251]) * PAGE for i in range(mib * 256)]


def work(k):
    h = hashlib.sha256()
    for p in pages[k::8]:
        h.update(p)
    own = [str(i * k) for i in range(20000 * mib // 8)]
    return k, h.hexdigest()[:16], len(own), own[-1]


if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(workers) as pool:
        for r in pool.map(work, range(8)):
            print(*r)
    whole = hashlib.sha256()
    for p in pages:
        whole.update(p)
    print("parent", whole.hexdigest()[:16])
