"""The Python SDK's authorize round trips per second, for lanyard-bench (bench/run.py).

usage: python_authorize.py SOCKET blocking|asyncio IN_FLIGHT SECONDS

blocking: IN_FLIGHT threads, each with its own lanyard.Client (one call at a time each);
asyncio: one lanyard.AsyncClient with IN_FLIGHT tasks pipelining on its one connection.
Every answer is decoded into an Authorization; one that is not ALLOW counts as an error.
Prints one JSON object: requests, errors, rps and latency percentiles in microseconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

import lanyard

CAPABILITY = "github:read_repo"  # LOW: a durable audit record per call, as loadgen's authorize


def blocking(socket: str, in_flight: int, seconds: float) -> tuple[list[int], int]:
    latencies: list[list[int]] = [[] for _ in range(in_flight)]
    errors = [0] * in_flight
    clients = [lanyard.Client(socket) for _ in range(in_flight)]
    for c in clients:
        c.whoami()  # connected before the clock starts
    start = threading.Barrier(in_flight)

    def worker(i: int) -> None:
        c, mine = clients[i], latencies[i]
        start.wait()
        deadline = time.perf_counter() + seconds
        while (t0 := time.perf_counter_ns()) < deadline * 1e9:
            if not c.authorize(CAPABILITY).allowed:
                errors[i] += 1
            mine.append(time.perf_counter_ns() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return [x for mine in latencies for x in mine], sum(errors)


def pipelined(socket: str, in_flight: int, seconds: float) -> tuple[list[int], int]:
    async def run() -> tuple[list[int], int]:
        latencies: list[int] = []
        errors = 0
        async with lanyard.AsyncClient(socket) as c:
            await c.whoami()
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while (t0 := time.perf_counter_ns()) < deadline * 1e9:
                    if not (await c.authorize(CAPABILITY)).allowed:
                        errors += 1
                    latencies.append(time.perf_counter_ns() - t0)

            await asyncio.gather(*(worker() for _ in range(in_flight)))
        return latencies, errors
    return asyncio.run(run())


def percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000 if sorted_ns else 0.0


def main() -> None:
    socket, mode, in_flight, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    latencies, errors = (blocking if mode == "blocking" else pipelined)(socket, in_flight, seconds)
    latencies.sort()
    print(json.dumps({"requests": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
                      "p50_us": percentile(latencies, 0.5), "p99_us": percentile(latencies, 0.99),
                      "p999_us": percentile(latencies, 0.999)}))


if __name__ == "__main__":
    main()
