"""The local process pool: one function over many tasks, results in task order.

img2dataset-style: the conversion only hands over small picklable tasks and reads results
back in order, so a distributed backend can replace this module's `run` without the
conversion knowing.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run(fn: Callable[[T], R], tasks: Iterable[T], workers: int,
        initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[R]:
    """Yield fn(task) for every task, in task order. With workers > 1 the tasks run in that
    many processes, with a bounded number in flight so memory does not grow with the set."""
    if workers <= 1:
        if initializer:
            initializer(*initargs)
        for t in tasks:
            yield fn(t)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else None)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
        pending: deque = deque()
        it = iter(tasks)
        for t in it:
            pending.append(pool.submit(fn, t))
            if len(pending) >= workers * 8:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
