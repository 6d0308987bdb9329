#!/usr/bin/env python3
"""pyprogress.py - a Python computation that reports as it goes, for checkpoint/restore tests.

Usage: pyprogress.py [STEPS] [SOCKET]   (default 30; with SOCKET=socket it also holds a UDP socket)

Builds a dict of 200 000 strings, then STEPS times rewrites a strided part of it, folds it into a
sha256 and a float, prints one line and sleeps 0.1 s. The output depends only on the arguments.
"""
import sys, time, hashlib
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
if len(sys.argv) > 2 and sys.argv[2] == "socket":
    import socket
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data = {i: str(i) * 7 for i in range(200000)}
acc = hashlib.sha256()
total = 0.0
for s in range(steps):
    for k in range(s, 200000, 53):
        data[k] = data[k][::-1] + str(s)
        acc.update(data[k].encode())
        total += len(data[k]) * 0.5
    print(f"step {s} {acc.hexdigest()[:16]} {total!r}", flush=True)
    time.sleep(0.1)
print("done", acc.hexdigest(), total, flush=True)
