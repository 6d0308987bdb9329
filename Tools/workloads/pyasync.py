"""An asyncio program at work, for checkpoint tests: a producer and two consumers over an
asyncio.Queue, timers, work handed to a thread pool (run_in_executor) and a pair of connected
sockets the loop reads and writes (asyncio's own self-pipe is a socket pair too). One line per
step; each line depends on every step before it, so a restore that lost or repeated anything
prints other lines than a plain run.

    python3 pyasync.py STEPS
"""
import asyncio
import hashlib
import socket
import sys

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 40


def work(seed: bytes) -> bytes:
    h = seed
    for _ in range(3000):
        h = hashlib.sha256(h).digest()
    return h


async def main() -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=4)
    left, right = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=left)
    echo_reader, echo_writer = await asyncio.open_connection(sock=right)
    state = hashlib.sha256(b"start").digest()

    async def echo() -> None:
        while line := await echo_reader.readline():
            echo_writer.write(line[::-1][1:] + b"\n")
            await echo_writer.drain()

    async def producer() -> None:
        for i in range(STEPS):
            await asyncio.sleep(0.03)
            await queue.put(i)
        for _ in range(2):
            await queue.put(None)

    async def consumer(name: str) -> None:
        nonlocal state
        while (i := await queue.get()) is not None:
            digest = await loop.run_in_executor(None, work, state + bytes([i]))
            writer.write(digest.hex().encode() + b"\n")
            await writer.drain()
            back = (await reader.readline()).strip()
            state = hashlib.sha256(state + back).digest()
            print(f"step {i} {state.hex()[:16]}", flush=True)

    echoing = asyncio.create_task(echo())
    # One consumer at a time holds the state: the second waits on a lock, so the order is fixed.
    lock = asyncio.Lock()

    async def locked(name: str) -> None:
        async with lock:
            await consumer(name)

    await asyncio.gather(producer(), locked("a"), locked("b"))
    writer.close()
    await echoing
    print(f"done after {STEPS} steps", flush=True)


asyncio.run(main())
