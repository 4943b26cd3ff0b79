"""The local process pool: one function over many tasks, results in task order.

img2dataset-style: the conversion only hands over small picklable tasks and reads results
back in order, so a distributed backend can replace this module's `run` without the
conversion knowing.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator, Sequence, TypeVar

from ..errors import WorkerError
from ..procs import worker_init
from ..machine import default_workers  # noqa: F401  (re-exported for the pipeline)

T = TypeVar("T")
R = TypeVar("R")


def _context(fn: Callable) -> multiprocessing.context.BaseContext:
    """fork when this process runs no other thread (instant start, nothing re-imported);
    otherwise forkserver (forking a threaded process can deadlock the child), with the task's
    module imported once in the server rather than in every worker."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" not in methods:
        return multiprocessing.get_context()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([fn.__module__, "PIL.Image", "PIL.JpegImagePlugin", "PIL.PngImagePlugin"])
    return ctx


def _chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(t) for t in chunk]


def _init_worker(owner: int, forked: bool, initializer: Callable[..., None] | None, *initargs) -> None:
    """Every worker dies with the run that started it (also when the run died while this
    worker was starting) and leaves Ctrl-C to the parent."""
    worker_init(parent=owner if forked else None, owner=owner)
    if initializer:
        initializer(*initargs)


def run(fn: Callable[[T], R], tasks: Sequence[T], workers: int,
        initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[R]:
    """Yield fn(task) for every task, in task order. With workers > 1 the tasks run in that
    many processes, in chunks (fewer round trips), with a bounded number in flight so
    memory does not grow with the set."""
    if workers <= 1:
        if initializer:
            initializer(*initargs)
        for t in tasks:
            yield fn(t)
        return
    size = max(1, min(16, len(tasks) // (workers * 8)))
    chunks = (list(tasks[i:i + size]) for i in range(0, len(tasks), size))
    ctx = _context(fn)
    forked = ctx.get_start_method() == "fork"
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(), forked, initializer, *initargs))
    try:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.submit(_chunk, fn, chunk))
            if len(pending) >= workers * 4:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool:
        _stop(pool)
        raise WorkerError(
            "a worker process died (out of memory, or a crash inside an image decoder)",
            hint="the images finished so far are kept: run the same command with --resume "
                 "(add --workers 1 to see which image it is)") from None
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Interrupted (Ctrl-C, SIGTERM), failed, or the consumer stopped: drop the queued chunks
    and end the workers now, so that none writes into OUT after the run has returned."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=10)
    # and let the pool's manager thread finish closing its wake-up pipe now: left running, it
    # raced the interpreter's exit hook, which wrote to that pipe as it closed ("Exception
    # ignored ... Bad file descriptor" after `interrupted`; CPython 3.11's concurrent.futures)
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None and manager.is_alive():
        manager.join(timeout=10)
