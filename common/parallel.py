"""A pool of spawned single-purpose worker processes with progress reported back: the one loop that the
corpus-scale jobs (tokenisation, preference-pair generation) share.

    run_spawned_pool(job, shards, workers=2, initializer=init, initargs=(cfg,), on_progress=bar.update)

Each worker runs `initializer(*initargs, queue)` once (load models there) and then `job(item)` for the items
handed to it in order; `queue.put(x)` inside a worker calls `on_progress(x)` here. The first failure cancels the
items not yet started and is re-raised; a worker that dies (killed, out of memory) raises BrokenProcessPool
instead of hanging the run. Processes are spawned, not forked, so no thread pools or locks are inherited.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any


def run_spawned_pool(
    job: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    on_progress: Callable[[Any], Any],
) -> None:
    """Run `job(item)` for every item on `workers` spawned processes (see the module docstring)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=(*initargs, queue)) as pool:
        futures = [pool.submit(job, item) for item in items]
        running = set(futures)
        while running:
            while not queue.empty():
                on_progress(queue.get())
            done, running = wait(running, timeout=0.2, return_when=FIRST_EXCEPTION)
            if any(f.exception() for f in done):
                for f in running:
                    f.cancel()
                break
        for f in futures:
            if f.done() and not f.cancelled() and f.exception():
                raise f.exception()
    while not queue.empty():
        on_progress(queue.get())
