#!/usr/bin/env python3
"""pyprogress.py - a Python computation that reports as it goes, for checkpoint/restore tests.

Usage: pyprogress.py [STEPS] [MODE]   (default 30; MODE "socket": it also holds a netlink socket,
       which a checkpoint refuses;
       MODE "shm": it also maps shared anonymous memory, which keeps a count over the steps (printed
       at the end); "memfd": the same in a memfd, mapped shared (python's mmap keeps a descriptor of it);
       MODE "pending": SIGUSR1 (to the process) and SIGUSR2 (to the main thread) are sent at the
       start while blocked, and their handlers only run at the end, when they are unblocked)

Builds a dict of 200 000 strings, then STEPS times rewrites a strided part of it, folds it into a
sha256 and a float, prints one line and sleeps 0.1 s. The output depends only on the arguments.
"""
import sys, time, hashlib
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
mode = sys.argv[2] if len(sys.argv) > 2 else ""
if mode == "socket":
    import socket
    held = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
if mode == "shm":
    import mmap
    held = mmap.mmap(-1, 65536)  # MAP_SHARED | MAP_ANONYMOUS
    held[0:5] = b"hello"
if mode == "memfd":
    import mmap, os
    fd = os.memfd_create("pyprogress")
    os.ftruncate(fd, 65536)
    held = mmap.mmap(fd, 65536)
    os.close(fd)
    held[0:5] = b"memfd"
if mode == "pending":
    import os, signal, threading
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGUSR2])
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2)
data = {i: str(i) * 7 for i in range(200000)}
acc = hashlib.sha256()
total = 0.0
for s in range(steps):
    for k in range(s, 200000, 53):
        data[k] = data[k][::-1] + str(s)
        acc.update(data[k].encode())
        total += len(data[k]) * 0.5
    if mode in ("shm", "memfd"):  # the shared mapping carries a count across the steps
        held[8:16] = (int.from_bytes(held[8:16], "little") + s).to_bytes(8, "little")
    print(f"step {s} {acc.hexdigest()[:16]} {total!r}", flush=True)
    time.sleep(0.1)
print("done", acc.hexdigest(), total, flush=True)
if mode in ("shm", "memfd"):
    print("shared:", bytes(held[0:5]), int.from_bytes(held[8:16], "little"), flush=True)
if mode == "pending":
    got = []
    signal.signal(signal.SIGUSR1, lambda n, f: got.append("SIGUSR1"))
    signal.signal(signal.SIGUSR2, lambda n, f: got.append("SIGUSR2"))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR1, signal.SIGUSR2])
    print("pending signals delivered at the end:", sorted(got), flush=True)
