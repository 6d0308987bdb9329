"""An asyncio TCP server and its clients in one program, for checkpoint tests: a server on
127.0.0.1 (a port the kernel picks) and three clients, each sending requests and reading the
answers over its own connection; a request's answer depends on everything that connection carried
before, and each line printed on all of it, so a restored connection that lost, repeated or
reordered a byte prints other lines than a plain run.

    python3 pyasyncserver.py ROUNDS
"""
import asyncio
import hashlib
import sys

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 40


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    state = hashlib.sha256(b"server").digest()
    while line := await reader.readline():
        state = hashlib.sha256(state + line).digest()
        # A large answer: it fills the socket buffers, so a checkpoint finds bytes in flight.
        writer.write(state.hex().encode() * 200 + b"\n")
        await writer.drain()
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # The clients take turns in a fixed order: each waits for the one before it in a round.
    turns = [asyncio.Event() for _ in range(3)]

    async def ordered(k: int) -> None:
        name = "abc"[k]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        state = hashlib.sha256(name.encode()).digest()
        for i in range(ROUNDS):
            await turns[k].wait()
            turns[k].clear()
            writer.write(f"{name} {i} {state.hex()[:8]}\n".encode())
            await writer.drain()
            answer = await reader.readline()
            state = hashlib.sha256(state + answer).digest()
            print(f"{name} round {i} {state.hex()[:16]}", flush=True)
            await asyncio.sleep(0.01)
            turns[(k + 1) % 3].set()
        writer.close()
        await writer.wait_closed()

    turns[0].set()
    await asyncio.gather(*(ordered(k) for k in range(3)))
    server.close()
    await server.wait_closed()
    print(f"done after {ROUNDS} rounds", flush=True)


asyncio.run(main())
