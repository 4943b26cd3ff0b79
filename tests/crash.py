"""Crash consistency, systematically: run a command in a forked child that SIGKILLs itself at a
chosen point, damage what a crash can damage, resume, and compare OUT with an uninterrupted
run, byte for byte.

Kill points (each the n-th occurrence in the run, counted in the process that dies):
- `rename`         just after the n-th atomic rename into place (a finished file),
- `before-rename`  just before it: a whole temporary file, not yet renamed,
- `partial-write`  in the middle of the n-th file written (half its bytes in the temporary),
- `commit`         at the n-th journal batch, before its lines are written (files written,
                   their journal entries not),
- `cut-line`       in the middle of writing the n-th journal batch (a cut last line).
- a scenario's own points: before the n-th call of a function it names (a cache write).
Damage, after the kill (what a power cut can leave, as well as a kill):
- `missing`, `empty`, `truncated` (half its bytes): one output file, chosen by the seed,
- `zeroed`:        one output file of its full size whose bytes are all NUL (its size reached
                   the disk, its data did not: XFS, ext4 with data=writeback),
- `unrenamed`:     one output file back under a temporary name of the dead run (a rename whose
                   folder entry never reached the disk),
- `cut-journal`:   the journal's last line cut short,
- `lost-line`:     the journal's last whole line gone (written, never synced).

A case passes when the resume ends with OUT equal to the uninterrupted run's, or refuses with
one clear line where the scenario allows a refusal. `power_cuts` (below) models what a kill
cannot show, a missing fsync: OUT as a power cut leaves it. The CI test runs a fixed sample of cases
(`tests/test_crash.py`); `fuzz/crash.py` runs every case, or many more, by hand.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import select
import shutil
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

KILLS = ("rename", "before-rename", "partial-write", "commit", "cut-line")
DAMAGES = ("none", "missing", "empty", "truncated", "zeroed", "unrenamed", "cut-journal", "lost-line")
IGNORED = {".clipdata.lock"}
_JOURNAL_DAMAGES = ("none", "cut-journal", "lost-line")  # no file to pick


@dataclass(frozen=True)
class Case:
    kill: str
    n: int
    damage: str = "none"
    pick: int = 0  # which candidate file the damage hits (modulo their number)

    def __str__(self) -> str:
        return f"{self.kill}#{self.n}+{self.damage}" + (f"@{self.pick}" if self.damage not in _JOURNAL_DAMAGES else "")


@dataclass
class Scenario:
    """One command under test. `run(out)` makes OUT from nothing; `resume(out)` finishes a
    killed run (the same command with --resume, or the same command again where that is the
    command's resume). `journal`: its journal's name in OUT, if it keeps one. `skip`: top-level
    names of OUT that are not compared (a cache, which holds the same vectors in another order)."""

    name: str
    run: Callable[[Path], object]
    resume: Callable[[Path], object]
    journal: str | None = ".clipdata-journal.jsonl"
    skip: frozenset[str] = frozenset()
    refusals: tuple[str, ...] = ()  # resume messages that count as a clear refusal, not a failure
    hooks: dict[str, tuple[object, str]] = field(default_factory=dict)  # kill point -> (owner, function): before its n-th call


@dataclass
class Outcome:
    case: Case
    status: str  # ok | finished | refused | wrong | crash | child-error
    detail: str = ""
    redone: int = 0  # finished files the resume found damaged and made again


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("wrong", "crash", "child-error")]

    def summary(self) -> str:
        by: dict[str, int] = {}
        for o in self.outcomes:
            by[o.status] = by.get(o.status, 0) + 1
        detected = sum(1 for o in self.outcomes if o.redone)
        return (f"{len(self.outcomes)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
                + f"; damage found and repaired in {detected}")


def tree(root: Path, skip: frozenset[str] = frozenset(), transient: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under root with its bytes (the lock and `skip` left out), by an explicit walk.

    Names ending in one of `transient` are never read: files another process creates and
    removes while the walk runs (SQLite's -wal/-shm while a server holds a cache open)."""
    found: dict[str, bytes] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        for e in sorted(os.scandir(folder), key=lambda e: e.name):
            rel = Path(e.path).relative_to(root)
            if rel.parts[0] in skip or e.name in IGNORED or (transient and e.name.endswith(transient)):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            else:
                found[rel.as_posix()] = Path(e.path).read_bytes()
    return found


# ---- the child: hooks that count events and die at the chosen one --------------------------

class _Dying:
    """A file object that dies after `budget` bytes: a write cut short by a kill."""

    def __init__(self, f, budget: int, die: Callable[[], None]) -> None:
        self._f, self._budget, self._die = f, budget, die

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) >= self._budget:
            self._f.write(data[:self._budget])
            self._f.flush()
            self._die()
        self._budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        if name == "fileno":  # writers that use the descriptor directly write through write()
            raise AttributeError(name)
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


@contextmanager
def _patched(case: Case, hooks: dict[str, tuple[object, str]], count, main_pid: int | None) -> Iterator[None]:
    """Patch the one place the case kills at, counting its occurrences in `count` (shared
    with forked workers); with `main_pid` None, count only."""
    from clipdata import fsutil
    from clipdata.pipeline import journal

    def die() -> None:
        if main_pid is None:
            return
        if os.getpid() != main_pid:  # a pool worker: the run dies with it
            os.kill(main_pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    def hit() -> bool:
        with count.get_lock():
            count.value += 1
            return count.value == case.n

    saved = (os.replace, fsutil._open_new, journal.Journal.commit, journal.Journal.BATCH)
    saved_hook = (hooks[case.kill], getattr(*hooks[case.kill])) if case.kill in hooks else None
    if case.kill in ("rename", "before-rename"):
        real = os.replace

        def replace(src, dst, *a, **k):
            if not hit():
                return real(src, dst, *a, **k)
            if case.kill == "before-rename":
                die()
            real(src, dst, *a, **k)
            die()

        os.replace = replace
    elif case.kill == "partial-write":
        real_open = fsutil._open_new

        def open_new(tmp):
            f = real_open(tmp)
            return _Dying(f, 1 + case.n % 7 * 64, die) if hit() and main_pid is not None else f

        fsutil._open_new = open_new
    elif case.kill in ("commit", "cut-line"):
        real_commit = journal.Journal.commit

        def commit(self):
            if self._pending and hit() and main_pid is not None:
                if case.kill == "commit":
                    die()
                data = b"".join(self._pending)
                self._file.write(data[:max(1, len(data) // 2)])
                self._file.flush()
                die()
            return real_commit(self)

        journal.Journal.commit = commit
        journal.Journal.BATCH = 1  # a batch per image: a journal commit to kill at per image
    elif saved_hook is not None:  # the scenario's own point: before the n-th call of a function
        (owner, name), real_fn = saved_hook

        def call(*a, **k):
            if hit():
                die()
            return real_fn(*a, **k)

        setattr(owner, name, call)
    else:
        raise ValueError(case.kill)
    try:
        yield
    finally:
        os.replace, fsutil._open_new, journal.Journal.commit, journal.Journal.BATCH = saved
        if saved_hook is not None:
            setattr(*saved_hook[0], saved_hook[1])


def _one_thread() -> int | None:
    """Run torch (where loaded) on one thread; returns the count it had."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


CHILD_TIMEOUT_S = float(os.environ.get("CLIPDATA_CRASH_CHILD_TIMEOUT", "300"))


def _wait(pid: int, seconds: float) -> tuple[int, bool]:
    """Wait for the child itself (not for its pipe's end of file, which a worker that outlived
    it would hold open forever): (status, hung). A child still running after `seconds` is killed."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status, False
        if time.monotonic() >= deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1], True
        time.sleep(0.01)


def _lingering(pgid: int, seconds: float) -> list[int]:
    """Live (not zombie) processes of the killed run's process group still there after
    `seconds`: a worker the run's death did not end."""
    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                alive.append(int(entry.name))
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _read_all(fd: int, seconds: float) -> str:
    """What the child wrote to its pipe, waiting at most `seconds` for the end of file."""
    deadline, chunks = time.monotonic() + seconds, []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def run_killed(scenario: Scenario, case: Case, out: Path) -> str:
    """Run the scenario in a forked child that dies at `case`: 'killed', 'finished' (the
    point lies past the end of the run) or 'error: ...' (the child failed on its own)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        code = 0
        try:
            os.setpgid(0, 0)
            _one_thread()  # torch's thread pool does not survive a fork: it would hang
            with _patched(case, scenario.hooks, multiprocessing.Value("l", 0), os.getpid()):
                scenario.run(out)
        except BaseException:
            os.write(w, traceback.format_exc()[-2000:].encode())
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    status, hung = _wait(pid, CHILD_TIMEOUT_S)
    survivors = [] if hung else _lingering(pid, 5.0)
    try:
        os.killpg(pid, signal.SIGKILL)  # nothing of the child's outlives it
    except (ProcessLookupError, PermissionError):
        pass
    message = _read_all(r, 5.0)
    if hung:
        return f"error: the run did not end within {CHILD_TIMEOUT_S:.0f} s (a hang)"
    if survivors:
        return f"error: processes {survivors} outlived the killed run (they could write into OUT)"
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "finished"
    return "error: " + (message or f"status {status}")


def count_events(scenario: Scenario, out: Path) -> dict[str, int]:
    """How many of each kill point an uninterrupted run passes (so cases can name them all)."""
    counts = {}
    for kill in KILLS + tuple(scenario.hooks):
        shutil.rmtree(out, ignore_errors=True)
        n = multiprocessing.Value("l", 0)  # workers forked by the run count here too
        with _patched(Case(kill, 0), scenario.hooks, n, None):
            scenario.run(out)
        counts[kill] = n.value
    shutil.rmtree(out, ignore_errors=True)
    return counts


# ---- damage and judgement ------------------------------------------------------------------

def damage(out: Path, case: Case, journal: str | None) -> str:
    """Apply the case's damage; says what it did ('' when there was nothing to damage)."""
    if case.damage == "none" or not out.is_dir():
        return ""
    if case.damage in ("cut-journal", "lost-line"):
        j = out / journal if journal else None
        if j is None or not j.is_file():
            return ""
        data = j.read_bytes().rstrip(b"\n")
        last = data.rfind(b"\n") + 1
        if last == 0 or last >= len(data):  # the header alone: nothing after it to lose
            return ""
        if case.damage == "lost-line":
            j.write_bytes(data[:last])
            return "the journal's last line lost"
        keep = last + (len(data) - last) * (case.pick % 5 + 1) // 6  # cut somewhere inside the last line
        j.write_bytes(data[:keep])
        return f"cut the journal's last line at byte {keep - last}"
    # a file hard-linked to an input shares its data, on disk before the run: no crash damages it
    files = sorted(p for p in tree_paths(out) if not p.name.startswith(".") and p.name not in IGNORED
                   and p.stat().st_nlink == 1)
    if not files:
        return ""
    victim = files[case.pick % len(files)]
    if case.damage == "missing":
        victim.unlink()
    elif case.damage == "empty":
        victim.write_bytes(b"")
    elif case.damage == "truncated":
        data = victim.read_bytes()
        victim.write_bytes(data[:len(data) // 2])
    elif case.damage == "zeroed":
        victim.write_bytes(bytes(victim.stat().st_size))
    elif case.damage == "unrenamed":  # a pid no live run has: the resume's own temporaries differ
        from clipdata.fsutil import TMP_PREFIX
        victim.rename(victim.with_name(f"{TMP_PREFIX}4194999-{victim.name}"))
    return f"{case.damage}: {victim.relative_to(out)}"


def tree_paths(root: Path) -> list[Path]:
    paths, stack = [], [root]
    while stack:
        for e in os.scandir(stack.pop()):
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            else:
                paths.append(Path(e.path))
    return paths


def check(scenario: Scenario, case: Case, out: Path, expected: dict[str, bytes]) -> Outcome:
    """One case: kill, damage, resume, compare."""
    shutil.rmtree(out, ignore_errors=True)
    how = run_killed(scenario, case, out)
    if how.startswith("error"):
        return Outcome(case, "child-error", how)
    if how == "finished":  # the point lies past the end: the run is whole, nothing to resume
        got = tree(out, scenario.skip)
        return Outcome(case, "finished" if got == expected else "wrong", _diff(expected, got))
    return _resumed(scenario, case, out, expected, damage(out, case, scenario.journal))


def _resumed(scenario: Scenario, case: Case, out: Path, expected: dict[str, bytes], did: str) -> Outcome:
    """Resume OUT as a case left it (`did`: what was done to it) and judge the result."""
    from clipdata.errors import ClipdataError

    try:
        report = scenario.resume(out)
    except ClipdataError as e:
        text = str(e)
        if "\n" in text:
            return Outcome(case, "wrong", f"{did}; a refusal of more than one line: {text!r}")
        if any(r in text for r in scenario.refusals):
            return Outcome(case, "refused", f"{did}; {text}")
        return Outcome(case, "wrong", f"{did}; refused: {text}")
    except BaseException as e:  # noqa: BLE001  (a traceback is the failure being looked for)
        return Outcome(case, "crash", f"{did}; {type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")
    got = tree(out, scenario.skip)
    redone = getattr(report, "redone", 0) or getattr(getattr(report, "layout", None), "redone", 0) or 0
    if got != expected:
        return Outcome(case, "wrong", f"{did}; {_diff(expected, got)}", redone)
    return Outcome(case, "ok", did, redone)


def _diff(expected: dict[str, bytes], got: dict[str, bytes]) -> str:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    changed = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    parts = [f"{name}: {', '.join(v[:4])}" + (" …" if len(v) > 4 else "")
             for name, v in (("missing", missing), ("extra", extra), ("changed", changed)) if v]
    return "; ".join(parts)


def cases(counts: dict[str, int], budget: int | None, seed: int, damages=DAMAGES) -> list[Case]:
    """Every (kill point, occurrence, damage) the run offers, or a seeded sample of `budget`
    of them that covers each kill point and each damage at least once where it can."""
    every = [Case(kill, n, d, pick) for kill in counts for n in range(1, counts[kill] + 1)
             for d in damages for pick in ((0,) if d in _JOURNAL_DAMAGES else (n * 7 + 3,))]
    if budget is None or budget >= len(every):
        return every
    rng = random.Random(seed)
    chosen: list[Case] = []
    kills = [k for k in counts if counts[k]]
    for t in range(max(len(kills), len(damages)) if kills else 0):  # each kill point and each damage, paired in turn
        pool = [c for c in every if c.kill == kills[t % len(kills)] and c.damage == damages[t % len(damages)]]
        if len(chosen) < budget:
            chosen.append(rng.choice(pool))
    rest = [c for c in every if c not in chosen]
    rng.shuffle(rest)
    return chosen + rest[:max(0, budget - len(chosen))]


def sweep(scenario: Scenario, work: Path, budget: int | None, seed: int = 0,
          log: Callable[[str], None] | None = None) -> Tally:
    """Run the scenario's cases under `work`: a reference run, the events it passes, then each case."""
    threads = _one_thread()  # every run on one thread, like the forked ones: the same floats
    try:
        return _sweep(scenario, work, budget, seed, log)
    finally:
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)


def _sweep(scenario: Scenario, work: Path, budget: int | None, seed: int,
           log: Callable[[str], None] | None) -> Tally:
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"  # the reference is made where every case runs: outputs may name OUT
    scenario.run(out)
    expected = tree(out, scenario.skip)
    counts = count_events(scenario, out)
    tally = Tally()
    for case in cases(counts, budget, seed):
        outcome = check(scenario, case, out, expected)
        tally.outcomes.append(outcome)
        if log and outcome.status in ("wrong", "crash", "child-error"):
            log(f"{scenario.name} {case}: {outcome.status}: {outcome.detail}")
    if log:
        log(f"{scenario.name}: events {counts}; {tally.summary()}")
    sys.stdout.flush()
    return tally


# ---- the review server's decision file: an append-only log is its own journal --------------

DECISION_KILLS = ("before-write", "partial-write", "before-fsync", "before-ack")


def decision_batches(n: int, seed: int) -> list[list[tuple[str, str | None]]]:
    """n appends of 1-3 rows over a few paths; every row's class is unique (`c7`), so the rows
    on disk say exactly which decisions reached it. Some take a path back (None)."""
    rng = random.Random(seed)
    batches, k = [], 0
    for _ in range(n):
        rows = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            rows.append((f"img{rng.randrange(4)}.jpg", None if rng.random() < 0.15 else f"c{k}"))
            k += 1
        batches.append(rows)
    return batches


def _fold(batches) -> dict[str, str | None]:
    state: dict[str, str | None] = {}
    for rows in batches:
        for path, cls in rows:
            state[path] = cls
    return state


def _check_rows(path: Path) -> str:
    """'' when every line is whole JSON and each row's `previous` is the class the file gave
    that path before it; else what is wrong."""
    import json
    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):
        return "the file ends inside a row"
    seen: dict[str, str | None] = {}
    for number, line in enumerate(data.splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            return f"line {number} is not JSON: {line[:60]!r}"
        if row.get("previous") != seen.get(row["path"]):
            return f"line {number}: previous {row.get('previous')!r}, the file said {seen.get(row['path'])!r}"
        seen[row["path"]] = row["class"]
    return ""


def check_decisions(case: Case, folder: Path, batches) -> Outcome:
    """Append the batches in a child killed at `case`; damage; then the server's next start
    reads the file, the client sends again what was not confirmed, and the result must be
    the uninterrupted sequence's."""
    from clipdata.formats import decisions

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            count = [0]
            real_write, real_fsync = os.write, os.fsync

            def hit() -> bool:
                count[0] += 1
                return count[0] == case.n

            def write(fd, data):
                if fd != w and case.kill in ("before-write", "partial-write") and hit():
                    if case.kill == "partial-write":
                        real_write(fd, bytes(data)[:max(1, len(data) // 2)])
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_write(fd, data)

            def fsync(fd):
                if case.kill == "before-fsync" and hit():
                    os.kill(os.getpid(), signal.SIGKILL)
                real_fsync(fd)
                if case.kill == "before-ack" and hit():
                    os.kill(os.getpid(), signal.SIGKILL)

            os.write, os.fsync = write, fsync
            log = decisions.DecisionLog(folder)
            for i, rows in enumerate(batches):
                log.append(rows)
                real_write(w, f"{i}\n".encode())  # confirmed to the client
        except BaseException:
            os.write(w, b"error " + traceback.format_exc()[-1500:].encode())
            os._exit(3)
        os._exit(0)
    os.close(w)
    status, hung = _wait(pid, CHILD_TIMEOUT_S)
    said = _read_all(r, 5.0)
    if hung:
        return Outcome(case, "child-error", f"the writer did not end within {CHILD_TIMEOUT_S:.0f} s (a hang)")
    if "error" in said:
        return Outcome(case, "child-error", said)
    acked = len(said.split())
    file = folder / decisions.FILE
    did = damage(folder, case, decisions.FILE) if case.damage == "cut-journal" else ""
    flat = [row for rows in batches for row in rows]
    whole = _whole_rows(file)
    if whole != flat[:len(whole)]:
        return Outcome(case, "wrong", f"{did}; the file's rows are not the decisions in order: {whole}")
    if not did and len(whole) < sum(len(rows) for rows in batches[:acked]):  # a kill loses nothing confirmed
        return Outcome(case, "wrong", f"{acked} append(s) confirmed, {len(whole)} row(s) on disk")
    try:
        on_disk = decisions.read(folder)  # the server's next start
    except BaseException as e:  # noqa: BLE001
        return Outcome(case, "crash", f"{did}; reading after the kill: {type(e).__name__}: {e}")
    if on_disk != _fold([whole]):
        return Outcome(case, "wrong", f"{did}; read {on_disk}, the file's whole rows say {_fold([whole])}")
    # the client sends again every append not wholly on disk, from the first such
    first, total = 0, 0
    while first < len(batches) and total + len(batches[first]) <= len(whole):
        total += len(batches[first])
        first += 1
    log = decisions.DecisionLog(folder)
    log.refresh()
    for rows in batches[first:]:
        log.append(rows)
    wrong = _check_rows(file)
    final = decisions.read(folder)
    if wrong or final != _fold(batches):
        return Outcome(case, "wrong", f"{did}; {wrong or f'final {final} != {_fold(batches)}'}")
    return Outcome(case, "ok" if os.WIFSIGNALED(status) else "finished", did)


def _whole_rows(file: Path) -> list[tuple[str, str | None]]:
    """(path, class) of every whole line of the file, in order."""
    import json
    if not file.exists():
        return []
    rows = []
    for line in file.read_bytes().split(b"\n")[:-1]:
        try:
            row = json.loads(line)
            rows.append((row["path"], row["class"]))
        except (ValueError, KeyError, TypeError):
            rows.append(("<damaged>", line.decode(errors="replace")))
    return rows


def decisions_sweep(work: Path, budget: int | None, seed: int = 0,
                    log: Callable[[str], None] | None = None) -> Tally:
    batches = decision_batches(12, seed)
    writes = len(batches)  # one write and one fsync per append (the first also fsyncs the folder)
    every = [Case(kill, n, d) for kill in DECISION_KILLS for n in range(1, writes + 1)
             for d in ("none", "cut-journal")]
    if budget is not None and budget < len(every):
        every = random.Random(seed).sample(every, budget)
    tally = Tally()
    for case in every:
        outcome = check_decisions(case, work / "labeled", batches)
        tally.outcomes.append(outcome)
        if log and outcome.status in ("wrong", "crash", "child-error"):
            log(f"decisions {case}: {outcome.status}: {outcome.detail}")
    if log:
        log(f"review decisions: {len(batches)} appends; {tally.summary()}")
    return tally


# ---- power cuts: what the disk holds is what was made durable --------------------------------
#
# A kill loses nothing the run wrote (the page cache survives it), so the kill sweep cannot see
# a missing fsync. Here one uninterrupted run is traced: each rename into place, each syncfs,
# each fsync of a file or a folder. At every point where durability changes (before each
# syncfs, after each fsync of the journal, after its removal) OUT is copied as a power cut
# would leave it: every file renamed into place and not yet durable is lost (`missing`: the
# rename never reached the disk) or emptied (`empty`: its name did, its data did not). Then each
# copy is resumed, or, where the journal is gone (the run was complete), taken as it is, and
# must equal the uninterrupted run. Linux only (file descriptors are named through /proc).

POWER_DAMAGES = ("missing", "empty")


class _Disk:
    """The durability model: a file renamed into place at time r is durable once a syncfs came
    after r, or an fsync of the file and one of its folder both did."""

    def __init__(self, out: Path, snapshots: Path, journal: str | None, syncfs: bool) -> None:
        self.out, self.snapshots, self.journal = os.path.realpath(out), snapshots, journal
        self.syncfs = syncfs  # False: the fsync-per-file way of systems without syncfs
        self.t = self.synced_all = 0
        self.renamed: dict[str, int] = {}
        self.made: dict[str, int] = {}  # folders the run created
        self.fsynced: dict[str, int] = {}
        self.taken: list[tuple[Path, str]] = []  # (copy, at which point)

    def tick(self) -> int:
        self.t += 1
        return self.t

    def durable(self, path: str) -> bool:
        r = self.renamed.get(path)
        if r is not None and self.synced_all < r and not (
                self.fsynced.get(path, 0) > r and self.fsynced.get(os.path.dirname(path), 0) > r):
            return False
        # (a file not renamed into place by the run, the journal or a cache that syncs itself, is)
        folder = os.path.dirname(path)  # and each folder the run made on its way: its entry too
        while folder.startswith(self.out + os.sep):
            m = self.made.get(folder)
            if m is not None and self.synced_all < m and self.fsynced.get(os.path.dirname(folder), 0) < m:
                return False
            folder = os.path.dirname(folder)
        return True

    def snapshot(self, point: str) -> None:
        if not os.path.isdir(self.out):
            return
        for damage in POWER_DAMAGES:
            copy = self.snapshots / f"{len(self.taken):03d}"
            shutil.copytree(self.out, copy, symlinks=True)
            for path in tree_paths(Path(self.out)):
                real = os.path.realpath(path)
                if not self.durable(real) and path.name not in IGNORED:
                    lost = copy / Path(real).relative_to(self.out)
                    if lost.exists():
                        lost.unlink() if damage == "missing" else lost.write_bytes(b"")
            self.taken.append((copy, f"{point}+{damage}"))


@contextmanager
def _traced(disk: _Disk) -> Iterator[None]:
    from clipdata import fsutil
    saved = (os.replace, os.fsync, os.unlink, os.mkdir, fsutil._SYNCFS)
    real_replace, real_fsync, real_unlink, real_mkdir, real_syncfs = saved

    def mkdir(path, *a, **k):
        real_mkdir(path, *a, **k)
        disk.made[os.path.realpath(path)] = disk.tick()

    def replace(src, dst, *a, **k):
        real_replace(src, dst, *a, **k)
        disk.renamed[os.path.realpath(dst)] = disk.tick()

    def fsync(fd):
        real_fsync(fd)
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        disk.fsynced[path] = disk.tick()
        if disk.journal and path == os.path.join(disk.out, disk.journal):
            disk.snapshot("journal fsynced")

    def unlink(path, *a, **k):
        real_unlink(path, *a, **k)
        if disk.journal and os.path.realpath(os.path.dirname(os.fspath(path))) == disk.out \
                and os.path.basename(os.fspath(path)) == disk.journal:
            disk.snapshot("journal removed")

    def syncfs(fd):
        disk.snapshot("before a sync")
        done = real_syncfs(fd)
        disk.synced_all = disk.tick()
        return done

    os.replace, os.fsync, os.unlink, os.mkdir = replace, fsync, unlink, mkdir
    fsutil._SYNCFS = syncfs if real_syncfs is not None and disk.syncfs else None
    try:
        yield
    finally:
        os.replace, os.fsync, os.unlink, os.mkdir, fsutil._SYNCFS = saved


def power_cuts(scenario: Scenario, work: Path, budget: int | None, seed: int = 0,
               log: Callable[[str], None] | None = None, syncfs: bool = True) -> Tally:
    """Trace one run, then resume every power-cut copy of OUT (or a seeded `budget` of them).
    `syncfs` False: the run syncs as it does where Linux's syncfs is missing (macOS, Windows)."""
    threads = _one_thread()
    try:
        work.mkdir(parents=True, exist_ok=True)
        out = work / "out"
        scenario.run(out)
        expected = tree(out, scenario.skip)
        shutil.rmtree(out)
        disk = _Disk(out, work / "power-cuts", scenario.journal, syncfs)
        from clipdata.pipeline import journal
        batch, journal.Journal.BATCH = journal.Journal.BATCH, 1  # a batch, so a sync, per image
        try:
            with _traced(disk):
                scenario.run(out)
        finally:
            journal.Journal.BATCH = batch
        disk.snapshot("end of the run")
        taken = disk.taken
        if budget is not None and budget < len(taken):  # the run's end always: a user takes it as done
            ends = [t for t in taken if t[1].startswith(("journal removed", "end of the run"))]
            rest = [t for t in taken if t not in ends]
            taken = ends + random.Random(seed).sample(rest, max(0, min(len(rest), budget - len(ends))))
        tally = Tally()
        for copy, point in taken:
            case = Case("power-cut", int(copy.name), point)
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(copy, out, symlinks=True)
            if scenario.journal and not (out / scenario.journal).exists():  # a finished run, as the user finds it
                got = tree(out, scenario.skip)
                outcome = Outcome(case, "finished" if got == expected else "wrong", _diff(expected, got))
            else:
                outcome = _resumed(scenario, case, out, expected, f"at {point}")
                if outcome.redone:  # only what was not yet durable was lost: nothing journaled
                    outcome = Outcome(case, "wrong", f"at {point}: the journal vouched for the files of "
                                                     f"{outcome.redone} item(s) the disk had not made durable")
            tally.outcomes.append(outcome)
            if log and outcome.status in ("wrong", "crash", "child-error"):
                log(f"{scenario.name} power cut {point}: {outcome.status}: {outcome.detail}")
        if log:
            log(f"{scenario.name}: power cuts ({'syncfs' if syncfs else 'fsync per file'}) at "
                f"{len(disk.taken)} points, {len(taken)} resumed; {tally.summary()}")
        return tally
    finally:
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)
