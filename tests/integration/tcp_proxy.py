#!/usr/bin/env python3
"""A loopback TCP proxy for fault tests (written for drover's tests).

    tcp_proxy.py LISTEN_PORT TARGET_PORT PIDFILE

Forwards 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. Signals change its behaviour:
  SIGUSR1  stall: keep every connection open but forward nothing, and accept new
           connections without connecting them anywhere (half-open, as a dead network
           path looks to both ends)
  SIGUSR2  resume forwarding (bytes held during a stall are then delivered)
  SIGHUP   drop: close every connection at once (both sides see a reset/EOF)
"""
import asyncio
import os
import signal
import sys

stalled = asyncio.Event()  # set while stalled
resumed = None
conns = set()


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            while stalled.is_set():
                await resumed.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(creader, cwriter, target):
    while stalled.is_set():
        await resumed.wait()
    try:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        cwriter.close()
        return
    pair = (cwriter, swriter)
    conns.add(pair)
    tasks = [asyncio.ensure_future(pipe(creader, swriter)),
             asyncio.ensure_future(pipe(sreader, cwriter))]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()
    for w in pair:
        try:
            w.close()
        except Exception:
            pass
    conns.discard(pair)


def stall():
    global resumed
    resumed = asyncio.Event()
    stalled.set()


def resume():
    stalled.clear()
    if resumed is not None:
        resumed.set()


def drop():
    for pair in list(conns):
        for w in pair:
            try:
                w.transport.abort()
            except Exception:
                pass
    conns.clear()


async def main():
    global resumed
    listen, target, pidfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    resumed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, stall)
    loop.add_signal_handler(signal.SIGUSR2, resume)
    loop.add_signal_handler(signal.SIGHUP, drop)
    server = await asyncio.start_server(lambda r, w: handle(r, w, target), "127.0.0.1", listen)
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
