"""A TCP relay that delays every chunk by a fixed time each way: Redis "across a network".

The benchmark machine runs Redis on loopback, where a round trip costs tens of microseconds;
a monitor in production reaches Redis over a network (a few hundred microseconds within one
zone). The relay forwards bytes unchanged and delivers each chunk ``delay`` after it arrived,
keeping order and throughput (chunks in flight overlap). Threads with blocking sockets, not
asyncio: the event loop's timers round sleeps up to whole milliseconds.

Usage: ``python bench/_link.py LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS`` (runs until killed).
``--measure`` prints the median Redis PING round trip through the relay instead.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import sys
import threading
import time


def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def deliver() -> None:
        while True:
            due, data = chunks.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    threading.Thread(target=deliver, daemon=True).start()
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        chunks.put((time.monotonic() + delay, data))
        if not data:
            break


def serve(listen: int, host: str, port: int, delay: float) -> None:
    server = socket.create_server(("127.0.0.1", listen))
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection((host, port))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, upstream, delay), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, delay), daemon=True).start()


def measure(port: int, n: int = 500) -> float:
    """Median seconds of a Redis PING round trip to 127.0.0.1:``port``."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"PING\r\n")
            s.recv(64)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


if __name__ == "__main__":
    if sys.argv[1] == "--measure":
        print(f"{measure(int(sys.argv[2])) * 1000:.3f}")
    else:
        listen_port, target_host, target_port, delay_ms = sys.argv[1:5]
        serve(int(listen_port), target_host, int(target_port), float(delay_ms) / 1000)
