"""Processes: workers die with their parent (however it dies), SIGTERM stops like Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _gone(pid: int, seconds: float = 20) -> bool:
    """True once `pid` no longer runs (bounded wait; a zombie counts as gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        except OSError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.1)
    return False


# A parent that starts a worker (fork, like the pool) and reports the worker's pid; the worker
# arms die_with_parent, with the kernel's help or (forced) with the watcher thread.
PARENT = """
    import os, sys, time
    import clipdata.procs as procs
    if sys.argv[1] == "watch":
        procs._prctl_pdeathsig = lambda sig: False
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        how = procs.die_with_parent()
        os.write(w, how.encode())
        while True:
            time.sleep(1)
    print(pid, os.read(r, 20).decode(), flush=True)
    with procs.sigterm_as_interrupt():
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            os._exit(130)
"""


@pytest.mark.parametrize("how", ["pdeathsig", "watch"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_worker_dies_with_its_parent(how: str, sig: int) -> None:
    if how == "pdeathsig" and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    parent = _python(PARENT, how)
    worker = None
    try:
        pid, armed = parent.stdout.readline().split()
        worker = int(pid)
        assert armed == how
        parent.send_signal(sig)  # only the parent: the worker is left to notice
        parent.wait(timeout=30)
        assert _gone(worker), f"worker {worker} outlived its parent ({how}, signal {sig})"
    finally:
        parent.kill()
        parent.wait(timeout=30)
        if worker and not _gone(worker, 0):
            os.kill(worker, signal.SIGKILL)


def test_sigterm_is_a_keyboard_interrupt() -> None:
    parent = _python(PARENT, "pdeathsig" if sys.platform.startswith("linux") else "watch")
    try:
        worker = int(parent.stdout.readline().split()[0])
        parent.send_signal(signal.SIGTERM)
        out, err = parent.communicate(timeout=30)
        assert parent.returncode == 130 and out.strip() == "interrupted" and err == ""
        assert _gone(worker)
    finally:
        parent.kill()
        parent.wait(timeout=30)


def test_worker_whose_parent_is_already_gone_exits_at_once() -> None:
    """The race die_with_parent closes: the parent died before the worker armed itself."""
    proc = _python("""
        import os
        import clipdata.procs as procs
        procs.die_with_parent(parent=os.getppid() + 999_999)  # not our parent: as if it had died
        print("still running", flush=True)
    """)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == ""


def test_sigterm_handler_is_restored_and_main_thread_only() -> None:
    import threading

    from clipdata.procs import sigterm_as_interrupt
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with sigterm_as_interrupt():
                pass
        except BaseException as e:  # signal.signal would raise ValueError off the main thread
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join(timeout=30)
    assert errors == []
