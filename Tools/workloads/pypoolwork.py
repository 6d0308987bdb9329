"""pypoolwork.py TASKS [WORKERS] - a multiprocessing Pool (fork start method) kept busy for a while.

The parent forks WORKERS (default 2) workers and hands them TASKS tasks one at a time (imap, chunk
size 1: pipes and the pool's semaphores stay in use throughout); each task hashes a chain long enough
to take a noticeable moment, and the parent prints each result in task order as it comes, then a
digest of all. The output depends only on TASKS: a plain run, one under `legato run` and one
checkpointed mid-work and restored must print the same.
"""
import hashlib
import multiprocessing as mp
import sys

tasks = int(sys.argv[1])
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2


def work(k):
    h = hashlib.sha256(str(k).encode())
    for _ in range(60000):
        h = hashlib.sha256(h.digest())
    return k, h.hexdigest()[:16]


if __name__ == "__main__":
    mp.set_start_method("fork")
    whole = hashlib.sha256()
    with mp.Pool(workers) as pool:
        for k, digest in pool.imap(work, range(tasks), chunksize=1):
            print(k, digest, flush=True)
            whole.update(digest.encode())
    print("all", whole.hexdigest()[:16])
