#!/usr/bin/env python3
"""pymanager.py - a multiprocessing Manager's shared dict and list, for checkpoint/restore tests.

Usage: pymanager.py [STEPS]   (default 20)

The Manager runs its server in a child process that listens on a UNIX socket under /tmp (a
name); this process's proxies talk to it over connections accepted there. Each step stores into
the shared dict and list through them, folds what it reads back into a sha256, prints one line
and sleeps 0.1 s. The output depends only on STEPS.
"""
import hashlib
import multiprocessing as mp
import sys
import time


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with mp.Manager() as manager:
        shared = manager.dict()
        squares = manager.list()
        acc = hashlib.sha256()
        for s in range(steps):
            shared[s] = str(s) * 5
            squares.append(s * s)
            acc.update(repr((sorted(shared.items())[-3:], list(squares)[-3:])).encode())
            print(f"step {s} {acc.hexdigest()[:16]} {len(shared)}", flush=True)
            time.sleep(0.1)
        print("done", sum(squares), flush=True)


if __name__ == "__main__":
    main()
