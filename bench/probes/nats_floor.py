"""What nats-server alone spends per message on a plain JetStream load shaped like ours.

    pip install nats-py
    python3 bench/probes/nats_floor.py [--messages N] [--payload BYTES]

Starts its own `nats-server -js` (random port, temporary store) and, for each variant,
creates a stream as src/queue/nats.rs does (file storage, `discard: new`, a byte limit,
a 2-minute duplicate window, one subject per event, `Nats-Msg-Id` on every publish),
publishes N events (1,000 publishes in flight, each waiting for its PubAck), then drains
them through a durable pull consumer (fetches of 500) and acknowledges them. Prints the
nats-server process's CPU time (from /proc) per message for the publishes and for the
deliveries with their acks. Variants: work-queue retention with an ack per message (what
the server runs), limits retention with an ack per message, and limits retention with one
`AckAll` per fetch. (A work-queue stream refuses `AckAll` consumers: "workqueue stream
requires explicit ack", error 10098.)
"""
import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StreamConfig

VARIANTS = [
    ("work-queue, ack per message (as the server)", RetentionPolicy.WORK_QUEUE, AckPolicy.EXPLICIT),
    ("limits, ack per message", RetentionPolicy.LIMITS, AckPolicy.EXPLICIT),
    ("limits, one AckAll per fetch", RetentionPolicy.LIMITS, AckPolicy.ALL),
]


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def measure(port, pid, messages, payload):
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    tick = os.sysconf("SC_CLK_TCK")
    for label, retention, ack_policy in VARIANTS:
        name = f"PROBE{time.time_ns()}"
        await js.add_stream(StreamConfig(
            name=name, subjects=[f"{name}.>"], retention=retention, discard=DiscardPolicy.NEW,
            max_bytes=4 << 30, duplicate_window=120,
        ))
        t0 = cpu_ticks(pid)
        for _ in range(0, messages, 1000):
            await asyncio.gather(*[
                js.publish(f"{name}.{key}", payload, headers={"Nats-Msg-Id": key})
                for key in (os.urandom(32).hex() for _ in range(1000))
            ])
        t1 = cpu_ticks(pid)
        sub = await js.pull_subscribe(
            f"{name}.>", durable="probe", config=ConsumerConfig(ack_policy=ack_policy, max_ack_pending=-1))
        got = 0
        while got < messages:
            batch = await sub.fetch(500, timeout=10)
            if ack_policy == AckPolicy.ALL:
                await batch[-1].ack()
            else:
                for message in batch:
                    await message.ack()
            got += len(batch)
        await nc.flush()
        t2 = cpu_ticks(pid)
        us = lambda ticks: ticks / tick / messages * 1e6
        print(f"{label:45} publish {us(t1 - t0):5.1f} µs/msg, delivery + ack {us(t2 - t1):5.1f} µs/msg (nats-server CPU)")
        await js.delete_stream(name)
    await nc.close()


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--messages", type=int, default=100_000)
    args.add_argument("--payload", type=int, default=700, help="bytes per event (ours: ~700 as JSON)")
    a = args.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = tempfile.mkdtemp(prefix="nats-floor.")
    server = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        asyncio.run(measure(port, server.pid, a.messages, b"x" * a.payload))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(store)


if __name__ == "__main__":
    main()
