"""Open-loop Poisson load: arrivals at exponential gaps regardless of answers (so queueing shows),
bounded in count and time; every request is accounted for (answered, refused, failed or timed out)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
    status: int  # HTTP status; 0 = connection error, -1 = timed out
    latency_s: float
    shape: str
    detail: str = ""  # an error's first words: the body of a 4xx/5xx, or the client's exception


Body = tuple[bytes, str, int | None]  # body, shape label, binary header length (None: JSON)


async def _one(session: object, url: str, body: Body, timeout: float) -> Outcome:
    import aiohttp

    data, shape, header_length = body
    headers = {"Content-Type": "application/json"}
    if header_length is not None:
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}
    start = time.perf_counter()
    try:
        async with session.post(url, data=data, headers=headers,  # type: ignore[attr-defined]
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            answer = await resp.read()
            detail = "" if resp.status in (200, 503) else answer[:300].decode(errors="replace")
            return Outcome(resp.status, time.perf_counter() - start, shape, detail)
    except asyncio.TimeoutError:
        return Outcome(-1, time.perf_counter() - start, shape)
    except aiohttp.ClientError as e:
        return Outcome(0, time.perf_counter() - start, shape, f"{type(e).__name__}: {e}"[:300])


async def _schedule(send: Callable[[int], Awaitable[Outcome]], rate: float, duration_s: float, max_requests: int,
                    seed: int) -> tuple[list[Outcome], float]:
    """Request i is sent at its Poisson arrival time whether or not earlier ones were answered."""
    rng = random.Random(seed)
    arrivals: list[float] = []
    t = 0.0
    while len(arrivals) < max_requests:
        t += rng.expovariate(rate)
        if t > duration_s:
            break
        arrivals.append(t)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for i, at in enumerate(arrivals):
        delay = t0 + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    outcomes = await asyncio.gather(*tasks)
    return list(outcomes), loop.time() - t0


async def _run(urls: Sequence[str], bodies: Sequence[Body], rate: float, duration_s: float, max_requests: int,
               seed: int, timeout: float) -> tuple[list[Outcome], float]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:
        return await _schedule(lambda i: _one(session, *target(urls, bodies, i), timeout), rate,
                               duration_s, max_requests, seed)


def target(urls: Sequence[str], bodies: Sequence[Body], i: int) -> tuple[str, Body]:
    """Request `i`'s replica and body: replicas in turn, and each replica every body in turn. (With one
    index for both, two replicas split the bodies between them, even ones to one: with BERT's mixed
    lengths, one replica had 20% more tokens to serve.)"""
    return urls[i % len(urls)], bodies[(i // len(urls)) % len(bodies)]


def open_loop(url: str | Sequence[str], bodies: Sequence[Body], rate: float, duration_s: float, max_requests: int,
              seed: int = 0, timeout: float = 60.0) -> tuple[list[Outcome], float]:
    """Send Poisson arrivals at `rate`/s for `duration_s` (at most `max_requests`); wait for every answer
    (each bounded by `timeout`). Several URLs (replicas under direct ingress) take requests in turn.
    Returns the outcomes and the wall time from first send to last answer."""
    urls = [url] if isinstance(url, str) else list(url)
    return asyncio.run(_run(urls, bodies, rate, duration_s, max_requests, seed, timeout))


async def _one_handle(handle: Any, inputs: Mapping[str, Any], shape: str, timeout: float) -> Outcome:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(handle.predict.remote(dict(inputs)), timeout)
        return Outcome(200, time.perf_counter() - start, shape)
    except asyncio.TimeoutError:
        return Outcome(-1, time.perf_counter() - start, shape)
    except Exception as e:  # noqa: BLE001 - Ray wraps the replica's error; a refused request is a 400
        from flexrt.errors import InputSpecError  # here: a client process need not import torch to send

        status = 400 if isinstance(getattr(e, "cause", None), InputSpecError) or isinstance(e, InputSpecError) else 0
        return Outcome(status, time.perf_counter() - start, shape)


def open_loop_handle(handle: Any, requests: Sequence[tuple[Mapping[str, Any], str]], rate: float, duration_s: float,
                     max_requests: int, seed: int = 0, timeout: float = 60.0) -> tuple[list[Outcome], float]:
    """The same open-loop load through Ray Serve's DeploymentHandle (`handle.predict.remote`): no HTTP
    proxy, no JSON or binary encoding; what the replica and Ray's transport cost without them."""

    async def run() -> tuple[list[Outcome], float]:
        return await _schedule(lambda i: _one_handle(handle, *requests[i % len(requests)], timeout), rate, duration_s,
                               max_requests, seed)

    return asyncio.run(run())


def _shard(via: str, target: str | Sequence[str], items: Sequence[Any], rate: float, duration_s: float, max_requests: int,
           seed: int, timeout: float, start_at: float) -> tuple[list[Outcome], float]:
    """One client process's share of the load (a plain process over HTTP, a Ray task through a
    handle): HTTP bodies to the `target` URL(s), or requests to the Serve application named `target`
    through its DeploymentHandle. One untimed request first (a new process's handle learns its
    replicas, a session connects), then the timed load from `start_at` (wall clock, the same for every
    shard)."""
    if via == "handle":
        from ray import serve

        handle = serve.get_app_handle(str(target))
        warm = open_loop_handle(handle, items[:1], 1000.0, 1.0, 1, seed, timeout)
        time.sleep(max(0.0, start_at - time.time()))
        outcomes, wall = open_loop_handle(handle, items, rate, duration_s, max_requests, seed, timeout)
    else:
        warm = open_loop(target, items[:1], 1000.0, 1.0, 1, seed, timeout)
        time.sleep(max(0.0, start_at - time.time()))
        outcomes, wall = open_loop(target, items, rate, duration_s, max_requests, seed, timeout)
    if not warm[0] or warm[0][0].status != 200:
        raise RuntimeError(f"client shard: the untimed first request failed ({warm[0][0] if warm[0] else 'not sent'})")
    return outcomes, wall


def open_loop_clients(clients: int, via: str, target: str | Sequence[str], items: Sequence[Any], rate: float, duration_s: float,
                      max_requests: int, seed: int = 0, timeout: float = 60.0) -> tuple[list[Outcome], float]:
    """The open-loop load split over `clients` processes, each a Poisson stream at rate/clients (their
    sum is Poisson at `rate`), so that one Python client's own limit (encoding, its event loop) is not
    what is measured. HTTP shards are plain processes (no Ray in the load generator); handle shards are
    Ray tasks (a handle needs the cluster). The shards start together once each has warmed up.
    Returns every outcome and the longest shard's wall time."""
    per = max(1, max_requests // clients)
    lead_s = 10.0 if via == "handle" else 4.0  # room for each shard's process to start and warm up (Ray's are slower)
    start_at = time.time() + lead_s
    wait_s = lead_s + duration_s + timeout + 60
    jobs = [(via, target, rate / clients, duration_s, per, seed + 7919 * i, timeout, start_at) for i in range(clients)]
    results = _shards_in_ray(jobs, items, wait_s) if via == "handle" else _shards_in_processes(jobs, items, wait_s)
    return [o for outcomes, _ in results for o in outcomes], max(wall for _, wall in results)


def _shards_in_ray(jobs: Sequence[tuple[Any, ...]], items: Sequence[Any], wait_s: float) -> list[tuple[list[Outcome], float]]:
    import ray

    shard = ray.remote(num_cpus=0, max_retries=0)(_shard)
    ref = ray.put(list(items))
    refs = [shard.remote(via, target, ref, *rest) for via, target, *rest in jobs]
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=wait_s)
    if pending:
        for r in pending:
            ray.cancel(r, force=True)
        raise RuntimeError(f"{len(pending)} of {len(jobs)} client shards did not finish in time")
    return ray.get(ready)


def _shards_in_processes(jobs: Sequence[tuple[Any, ...]], items: Sequence[Any], wait_s: float) -> list[tuple[list[Outcome], float]]:
    import concurrent.futures
    import multiprocessing

    pool = concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_shard, via, target, list(items), *rest) for via, target, *rest in jobs]
        _, pending = concurrent.futures.wait(futures, timeout=wait_s)
        if pending:
            raise RuntimeError(f"{len(pending)} of {len(jobs)} client shards did not finish in time")
        return [f.result() for f in futures]
    finally:
        for proc in list(getattr(pool, "_processes", {}).values()):  # a hung shard must not outlive the run
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def summarize(outcomes: Sequence[Outcome], wall_s: float, rate: float) -> dict[str, float | int]:
    ok = sorted(o.latency_s for o in outcomes if o.status == 200)

    def pct(p: float) -> float:
        if not ok:
            return float("nan")
        return ok[min(len(ok) - 1, int(round(p / 100 * (len(ok) - 1))))] * 1000

    return {
        "offered_rps": rate,
        "sent": len(outcomes),
        "ok": len(ok),
        "rejected_503": sum(o.status == 503 for o in outcomes),
        "errors": sum(o.status not in (200, 503, -1) for o in outcomes),
        "timeouts": sum(o.status == -1 for o in outcomes),
        "achieved_rps": len(ok) / wall_s if wall_s > 0 else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": sum(ok) / len(ok) * 1000 if ok else float("nan"),
        # what went wrong, when something did: counts by status, and a few distinct messages
        "error_statuses": dict(collections.Counter(str(o.status) for o in outcomes if o.status not in (200, 503))),
        "error_samples": list(dict.fromkeys(o.detail for o in outcomes if o.detail))[:3],
    }
