"""Processes: workers die with their parent (however it dies), SIGTERM stops like Ctrl-C."""
from __future__ import annotations

import contextlib
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
    while True:
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
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


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
    with procs.sigterm_as_interrupt():
        try:
            print(pid, os.read(r, 20).decode(), flush=True)
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
            with contextlib.suppress(ProcessLookupError):
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



@pytest.mark.parametrize("forked", [True, False], ids=["fork", "forkserver"])
def test_pool_worker_whose_run_died_while_it_started_exits(forked: bool) -> None:
    """A run killed while its pool was still starting workers: a late worker must not adopt
    init as the parent to watch (it lived on, holding the run's descriptors, and a crash test
    waiting for their end of file hung). Forked workers check the pid known before the fork;
    a forkserver's workers watch the run besides their server."""
    proc = _python("""
        import os, sys, time
        from clipdata.pipeline import pool
        dead = os.fork()
        if dead == 0:
            os._exit(0)
        os.waitpid(dead, 0)  # a pid that no longer runs: the run, dead before the worker armed
        pool._init_worker(dead, sys.argv[1] == "fork", None)
        time.sleep(10)
        print("still running", flush=True)
    """, "fork" if forked else "forkserver")
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


# ---- a real conversion, killed ----------------------------------------------------------



@pytest.fixture(scope="module")
def slow_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough work (noisy PNGs, PNG crops) that a run is still going when it is signalled."""
    import json

    import numpy as np
    from PIL import Image
    root = tmp_path_factory.mktemp("slow") / "src"
    root.mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(80):
        Image.fromarray(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)).save(root / f"im{i:03d}.png")
        images.append({"id": i, "file_name": f"im{i:03d}.png", "width": 480, "height": 360})
        anns += [{"id": i * 10 + k, "image_id": i, "category_id": 1, "bbox": [k * 50, k * 30, 200, 150]}
                 for k in range(4)]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "noise"}]}))
    return root / "ann.json"


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clipdata.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _convert(src: Path, out: Path, *extra: str) -> subprocess.Popen:
    return _cli("convert", "coco", str(src), str(out), "--workers", "2", "-q", "--image-format", "png", *extra)


def _wait_for_progress(proc: subprocess.Popen, out: Path, crops: int = 40) -> None:
    """Until the run has written some crops (bounded). Crops, not journal lines: the journal
    is written in batches whose spacing grows with the time syncing takes, so on a loaded
    machine a run could end before it showed a few lines."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and sum(1 for _ in out.rglob("*.png")) >= crops:
            return
        time.sleep(0.02)
    pytest.fail(f"the run ended or stalled before it could be signalled: {proc.poll()}")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        pytest.skip("this kernel does not list a process's children")
    return [int(c) for c in text.split()]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(slow_set: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = _convert(slow_set, out)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return _tree(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL-parent-only"])
def test_killed_convert_leaves_no_worker_and_resumes_to_identical_bytes(
        tmp_path: Path, slow_set: Path, reference: dict[str, bytes], sig: int) -> None:
    out = tmp_path / "out"
    proc = _convert(slow_set, out)
    workers: list[int] = []
    try:
        _wait_for_progress(proc, out)
        workers = _children(proc.pid)
        assert workers, "the run has no worker processes to test"
        proc.send_signal(sig)  # the parent only, as `timeout`, docker and the OOM killer do
        _, err = proc.communicate(timeout=120)
        if sig == signal.SIGTERM:  # a clean stop, like Ctrl-C: one line, the usual code
            assert proc.returncode == 130 and err.strip() == "interrupted", err
        else:
            assert proc.returncode == -signal.SIGKILL
        for w in workers:
            assert _gone(w), f"worker {w} outlived its parent"
        snapshot = _tree(out)
        time.sleep(1)  # nothing keeps writing into OUT
        assert _tree(out) == snapshot
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for w in workers:
            if not _gone(w, 0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w, signal.SIGKILL)
    resumed = _convert(slow_set, out, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert _tree(out) == reference


def test_an_interrupt_between_results_stops_the_workers_before_it_leaves_convert(
        tmp_path: Path, slow_set: Path) -> None:
    """An interrupt raised while the run journals a result (not inside the pool) ends the
    workers and the pool's manager thread before it propagates: the caller may keep the
    traceback alive (a reference cycle does), and a pool left to the garbage collector raced
    concurrent.futures' exit hook ('interrupted', then an EBADF traceback)."""
    proc = _python(f"""
        import os, threading
        from concurrent.futures.process import _ExecutorManagerThread
        import clipdata
        from clipdata.pipeline import journal as jr
        real, seen = jr.Journal.record, []
        def record(self, *a, **k):
            seen.append(1)
            if len(seen) == 3:
                raise KeyboardInterrupt
            return real(self, *a, **k)
        jr.Journal.record = record
        try:
            clipdata.convert({str(slow_set)!r}, {str(tmp_path / "out")!r}, workers=2, image_format="png")
        except KeyboardInterrupt as e:
            kept = e  # every frame of the run stays alive, as a cycle would keep it
            managers = [t for t in threading.enumerate() if isinstance(t, _ExecutorManagerThread)]
            children = open(f"/proc/{{os.getpid()}}/task/{{os.getpid()}}/children").read().split()
            print(len(managers), len(children), flush=True)
    """)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.split() == ["0", "0"], (out, err)  # no manager thread, no worker left running
    assert "Traceback" not in err and "Bad file descriptor" not in err, err


def test_two_runs_into_one_out(tmp_path: Path, slow_set: Path, reference: dict[str, bytes]) -> None:
    """A second run into a busy OUT fails at once with one line, whatever its flags; the
    first is unharmed. The first is paused (SIGSTOP) while the others try, so it is surely
    still running."""
    out = tmp_path / "out"
    first = _convert(slow_set, out)
    try:
        _wait_for_progress(first, out, crops=8)
        first.send_signal(signal.SIGSTOP)
        for extra in ((), ("--overwrite",), ("--resume",)):
            second = _convert(slow_set, out, *extra)
            _, err = second.communicate(timeout=120)
            assert second.returncode == 1 and err.count("\n") == 1, (extra, err)
            assert "another clipdata run is writing into this folder" in err, (extra, err)
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=600) == 0, first.stderr.read()
    finally:
        first.send_signal(signal.SIGCONT)
        first.kill()
        first.wait(timeout=30)
    assert _tree(out) == reference
