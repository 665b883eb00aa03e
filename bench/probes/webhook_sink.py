"""A fast webhook endpoint for bench/probes/webhooks.sh: answers every request 204 at once
(HTTP/1.1 keep-alive, asyncio, no verification) and counts them.

Usage: webhook_sink.py PORT STATS_FILE. Writes "<requests> <first unix time> <last unix
time>" to STATS_FILE every 0.2 s.
"""

import asyncio
import sys
import time

count = 0
first = last = 0.0


async def handle(reader, writer):
    global count, first, last
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            now = time.time()
            if count == 0:
                first = now
            count += 1
            last = now
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def report(path):
    while True:
        with open(path, "w") as f:
            f.write(f"{count} {first} {last}\n")
        await asyncio.sleep(0.2)


async def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await asyncio.gather(server.serve_forever(), report(path))


asyncio.run(main())
