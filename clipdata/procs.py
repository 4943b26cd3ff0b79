"""Process hygiene for worker pools: workers die with their parent, SIGTERM stops a run the
way Ctrl-C does.

A worker left running after its parent was killed (SIGKILL from the OOM killer, SIGTERM from
`timeout`, docker or systemd) keeps writing into OUT, and a rerun then mixes its stale files
into the new layout. On Linux the kernel kills the worker for us (PR_SET_PDEATHSIG); elsewhere
a watcher thread polls the parent's pid. Both check once more after arming, since the parent
may already be gone.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

PR_SET_PDEATHSIG = 1
_POLL_S = 0.5


def _prctl_pdeathsig(sig: int) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits; False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # the running program's own symbols include libc's: no find_library, which starts a
        # subprocess in every worker and so widened the window in which the parent can die
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(alive: Callable[[], bool], name: str) -> None:
    """Exit this process once `alive()` turns false, checked every _POLL_S in a daemon thread."""
    def loop() -> None:
        while alive():
            time.sleep(_POLL_S)
        os._exit(1)
    threading.Thread(target=loop, daemon=True, name=name).start()


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone (or its pid reused by another user)
        return False
    return True


def die_with_parent(parent: int | None = None) -> str:
    """Call first thing in a worker: it then ends when the process that started it ends.
    `parent` is the pid the worker expects as its parent (default: its parent now); a worker
    whose parent is already gone exits at once. Returns how: "pdeathsig" or "watch"."""
    expected = os.getppid() if parent is None else parent
    how = "pdeathsig" if _prctl_pdeathsig(signal.SIGKILL) else "watch"
    if how == "watch":
        _watch(lambda: os.getppid() == expected, "clipdata-parent-watch")
    if os.getppid() != expected:  # the parent died before the kernel or the thread was watching
        os._exit(1)
    return how


def worker_init(parent: int | None = None, owner: int | None = None) -> None:
    """For a worker: die with the parent, and leave SIGINT to the parent, which stops the pool
    (a terminal's Ctrl-C reaches the whole process group; the workers would each print a
    traceback).

    `parent`: the pid that forked this worker, known before the fork (a worker whose parent
    died while it started must not take its new parent, init, for the one to watch: it would
    live on, blocked on its task queue, holding every descriptor it inherited). `owner`: the
    process that runs the pool where that is not the parent (a forkserver's workers): it is
    watched too, so a worker ends when the run ends even if the server outlives it."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, inherited by fork
    if owner is not None and owner != (parent if parent is not None else os.getppid()):
        _watch(lambda: _runs(owner), "clipdata-owner-watch")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread, so `timeout`,
    docker stop and systemd get the same clean, resumable stop as Ctrl-C. A no-op outside the
    main thread (only it may set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
