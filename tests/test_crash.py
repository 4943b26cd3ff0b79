"""Crash consistency: every command that writes an output folder, killed (SIGKILL) at many
points and damaged as a crash can damage it, resumes to the uninterrupted run's bytes or
refuses in one clear line (the harness: tests/crash.py).

CI runs a fixed, seeded sample per scenario; CLIPDATA_CRASH_CASES=N raises it (`all`: every
case), and `python fuzz/crash.py` runs the long mode by hand.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import clipdata
import crash
from helpers import make_image, write_coco

_BUDGET = os.environ.get("CLIPDATA_CRASH_CASES", "")
SEED = int(os.environ.get("CLIPDATA_CRASH_SEED", "0"))


def budget(default: int) -> int | None:
    return None if _BUDGET == "all" else int(_BUDGET) if _BUDGET else default


def _sweep(scenario: crash.Scenario, work: Path, default: int, power_cuts: int = 8) -> crash.Tally:
    """The kill sweep, then (`power_cuts` > 0) the power-cut copies of one traced run, syncing
    as on Linux (syncfs) and as elsewhere (an fsync per file and folder)."""
    lines: list[str] = []
    tally = crash.sweep(scenario, work, budget(default), SEED, log=lines.append)
    for syncfs in (True, False) if power_cuts else ():
        tally.outcomes += crash.power_cuts(scenario, work / f"power-{syncfs}", budget(power_cuts), SEED,
                                           log=lines.append, syncfs=syncfs).outcomes
    print("\n".join(lines))
    assert not tally.failures, "\n".join(lines)
    return tally


# ---- sources ---------------------------------------------------------------------------------

def coco_source(root: Path, n: int = 6) -> Path:
    imgs, anns = [], []
    for i in range(n):
        make_image(root / f"im{i}.jpg", (64, 48), color=(10 * i, 30, 200))
        imgs.append({"id": i + 1, "file_name": f"im{i}.jpg", "width": 64, "height": 48})
        anns.append({"id": 10 * i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 20, 10], "iscrowd": 0})
        anns.append({"id": 10 * i + 2, "image_id": i + 1, "category_id": 2, "bbox": [30, 10, 20, 20], "iscrowd": 0})
    anns.append({"id": 999, "image_id": 1, "category_id": 2, "bbox": [500, 500, 5, 5], "iscrowd": 0})  # skipped
    imgs[0]["width"] = 100  # wider than the file: the box below is skipped by the worker, which sees 64
    anns.append({"id": 998, "image_id": 1, "category_id": 1, "bbox": [70, 5, 10, 10], "iscrowd": 0})
    return write_coco(root / "annotations.json", imgs, anns, [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}])


def folder_source(root: Path, n: int = 8) -> Path:
    for i in range(n):
        make_image(root / ("train" if i % 4 else "valid") / ("red" if i % 2 else "blue") / f"p{i}.png",
                   (24 + i, 20), color=(i * 20, 0, 0), fmt="PNG")
    return root


def yolo_source(root: Path, n: int = 12) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("circle\nsquare\n")
    for i in range(n):
        make_image(root / "images" / f"y{i}.jpg", (40, 40), color=(0, i * 10, 0))
        (root / "labels" / f"y{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.4 0.4\n1 0.25 0.25 0.3 0.2\n")
    return root


# ---- convert ---------------------------------------------------------------------------------

def test_convert_coco_crops_with_exports(tmp_path: Path) -> None:
    ann = coco_source(tmp_path / "src")
    opts = dict(workers=1, export="hf,openclip,webdataset", shard_size=4)
    _sweep(crash.Scenario("convert coco crops",
                          lambda out: clipdata.convert(ann, out, **opts),
                          lambda out: clipdata.convert(ann, out, resume=True, **opts)), tmp_path / "work", 30)


def test_convert_folder_scenes(tmp_path: Path) -> None:
    src = folder_source(tmp_path / "src")
    opts = dict(format="folder", mode="scenes", workers=1)
    _sweep(crash.Scenario("convert folder scenes",
                          lambda out: clipdata.convert(src, out, **opts),
                          lambda out: clipdata.convert(src, out, resume=True, **opts)), tmp_path / "work", 20)


def test_convert_yolo_with_worker_processes(tmp_path: Path) -> None:
    """Two workers: the kill lands in a worker or the parent; the run dies either way."""
    src = yolo_source(tmp_path / "src")
    opts = dict(format="yolo", workers=2, image_format="png")
    _sweep(crash.Scenario("convert yolo, 2 workers",
                          lambda out: clipdata.convert(src, out, **opts),
                          lambda out: clipdata.convert(src, out, resume=True, **opts)), tmp_path / "work", 16,
           power_cuts=0)  # the trace sees one process: the workers' renames would pass unseen


# ---- label, review apply ----------------------------------------------------------------------

def unlabeled(root: Path, n: int = 10) -> Path:
    for i in range(n):
        make_image(root / ("sub" if i % 3 == 0 else "") / f"u{i}.jpg", (32 + i, 30), color=(i * 25, 90, 30))
    return root


def test_label(tmp_path: Path, spec) -> None:
    """Killed while embedding (before a batch reaches the cache) or while writing: --resume
    keeps the cached embeddings and writes the rest again."""
    from clipdata.embedding.cache import EmbeddingCache
    images = unlabeled(tmp_path / "images")
    spec = spec.__class__(**{**spec.__dict__, "batch_size": 3})
    opts = dict(classes="red,green,blue", spec=spec, copy=True)
    _sweep(crash.Scenario("label", lambda out: clipdata.label(images, out, **opts),
                          lambda out: clipdata.label(images, out, resume=True, **opts),
                          skip=frozenset({"cache"}), hooks={"cache-put": (EmbeddingCache, "put")}),
           tmp_path / "work", 16)


def test_a_killed_label_run_is_finished_with_resume_or_overwrite(tmp_path: Path, spec, monkeypatch) -> None:
    """It used to be stuck: no label.json, so --overwrite refused the folder as not label's."""
    from clipdata.commands import label as lb
    from clipdata.errors import ClipdataError
    images = unlabeled(tmp_path / "images", 4)
    opts = dict(classes="red,green", spec=spec)
    clipdata.label(images, tmp_path / "reference", **opts)
    out = tmp_path / "out"
    for finish in ("resume", "overwrite"):
        with monkeypatch.context() as m:  # killed after the review tree, before label.json
            m.setattr(lb, "write_labelstudio", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
            with pytest.raises(KeyboardInterrupt):
                clipdata.label(images, out, overwrite=True, **opts)
        with pytest.raises(ClipdataError, match="holds an interrupted clipdata label run.*--resume"):
            clipdata.label(images, out, **opts)
        with pytest.raises(ClipdataError, match="another source or other options"):
            clipdata.label(images, out, resume=True, **{**opts, "classes": "red,blue"})
        report = clipdata.label(images, out, **{finish: True}, **opts)
        assert report.cache_hits == 4  # nothing embedded twice
        assert crash.tree(out, frozenset({"cache"})) == crash.tree(tmp_path / "reference", frozenset({"cache"}))
    with pytest.raises(ClipdataError, match="nothing to resume"):
        clipdata.label(images, out, resume=True, **opts)


def test_review_apply(tmp_path: Path, spec) -> None:
    from clipdata.formats.decisions import DecisionLog
    images = unlabeled(tmp_path / "images")
    labeled = tmp_path / "labeled"
    clipdata.label(images, labeled, classes="red,green,blue", spec=spec)
    DecisionLog(labeled).append([("u1.jpg", "green"), ("u2.jpg", "_rejected"), ("sub/u3.jpg", "blue")])
    opts = dict(split_ratios="0.5,0.25,0.25", export="hf")
    _sweep(crash.Scenario("review apply", lambda out: clipdata.review_apply(labeled, out, **opts),
                          lambda out: clipdata.review_apply(labeled, out, resume=True, **opts)),
           tmp_path / "work", 16, power_cuts=0)  # worker processes (power cuts: convert's journal, tested above)


def test_embed(tmp_path: Path, spec) -> None:
    """Killed between parts, inside one, before a cache batch: the same command again keeps the
    parts whose files the journal vouches for and writes the rest."""
    pytest.importorskip("pyarrow")
    from clipdata.embedding.cache import EmbeddingCache
    images = unlabeled(tmp_path / "images", 8)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    spec = spec.__class__(**{**spec.__dict__, "batch_size": 2})
    cache = tmp_path / "cache"

    def resume(out: Path):
        return clipdata.embed(images, out, spec=spec, part_size=3, cache_dir=cache)

    def run(out: Path):  # from a cold cache, so that a kill can land before a batch is cached
        shutil.rmtree(cache, ignore_errors=True)
        return resume(out)

    _sweep(crash.Scenario("embed", run, resume, hooks={"cache-put": (EmbeddingCache, "put")}), tmp_path / "work", 16)


# ---- the review server's decision file -------------------------------------------------------

def test_review_decisions_file(tmp_path: Path) -> None:
    """A server killed before, inside or after a decision's write: the next start reads the
    file, nothing confirmed is lost, and the client's retries end in the uninterrupted state."""
    lines: list[str] = []
    tally = crash.decisions_sweep(tmp_path, budget(40), SEED, log=lines.append)
    print("\n".join(lines))
    assert not tally.failures, "\n".join(lines)


def test_a_decision_write_that_fails_saves_nothing(tmp_path: Path, monkeypatch) -> None:
    import errno
    from clipdata.formats import decisions
    log = decisions.DecisionLog(tmp_path)
    log.append([("a.jpg", "cat")])
    real = os.write

    def full(fd, data):
        real(fd, bytes(data)[:7])  # a part reaches the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        log.append([("a.jpg", "dog"), ("b.jpg", "dog")])
    monkeypatch.setattr(os, "write", real)
    assert log.current("a.jpg") == "cat" and log.current("b.jpg") is None  # not taken as saved
    rows = log.append([("b.jpg", "fox")])
    assert rows[0]["previous"] is None
    assert decisions.read(tmp_path) == {"a.jpg": "cat", "b.jpg": "fox"}
    assert crash._check_rows(tmp_path / decisions.FILE) == ""


def test_a_decision_file_cut_while_the_server_runs_is_read_again(tmp_path: Path) -> None:
    """Appending at the old end of a shorter file left a run of NUL bytes: a file no server could open."""
    from clipdata.formats import decisions
    log = decisions.DecisionLog(tmp_path)
    log.append([("a.jpg", "cat"), ("b.jpg", "dog")])
    file = tmp_path / decisions.FILE
    file.write_bytes(file.read_bytes().split(b"\n")[0] + b"\n")  # someone keeps the first row only
    log.append([("c.jpg", "fox")])
    assert b"\0" not in file.read_bytes()
    assert decisions.read(tmp_path) == {"a.jpg": "cat", "c.jpg": "fox"}


# ---- the listed defect, as a table: resume checks the disk, not only its journal -------------

def _killed_after_images(source: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that wrote and journaled every image, then died before its manifest."""
    from clipdata.commands import convert as cv
    with monkeypatch.context() as m:
        m.setattr(cv, "_finish", lambda *a: os.kill(os.getpid(), 0) or (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            clipdata.convert(source, out, workers=1)


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "one byte changed"])
def test_resume_remakes_a_finished_crop_the_disk_lost(tmp_path: Path, monkeypatch, damage: str) -> None:
    ann = coco_source(tmp_path / "src")
    clipdata.convert(ann, tmp_path / "reference", workers=1)
    out = tmp_path / "out"
    _killed_after_images(ann, out, monkeypatch)
    crop = out / "train" / "cat" / "im2_21.jpg"
    data = crop.read_bytes()
    if damage == "missing":
        crop.unlink()
    elif damage == "empty":
        crop.write_bytes(b"")
    elif damage == "truncated":
        crop.write_bytes(data[:len(data) // 2])
    else:
        crop.write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
    report = clipdata.convert(ann, out, workers=1, resume=True)
    assert (report.resumed, report.redone) == (5, 1)
    assert crash.tree(out) == crash.tree(tmp_path / "reference")
    clipdata.inspect(out)


def test_resume_over_a_cut_journal_line_and_a_cut_header(tmp_path: Path, monkeypatch) -> None:
    from clipdata.pipeline.journal import JOURNAL
    ann = coco_source(tmp_path / "src")
    clipdata.convert(ann, tmp_path / "reference", workers=1)
    out = tmp_path / "out"
    _killed_after_images(ann, out, monkeypatch)
    journal = out / JOURNAL
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join(lines[:-2]) + b"\n" + lines[-2][:17])  # the last result cut
    report = clipdata.convert(ann, out, workers=1, resume=True)
    assert report.resumed == 5 and crash.tree(out) == crash.tree(tmp_path / "reference")

    _killed_after_images(ann, out := tmp_path / "out2", monkeypatch)
    (out / JOURNAL).write_bytes(lines[0][:30])  # the header itself never reached the disk whole
    report = clipdata.convert(ann, out, workers=1, resume=True)
    assert report.resumed == 0 and crash.tree(out) == crash.tree(tmp_path / "reference")


def test_journal_lines_name_each_file_by_size_and_hash(tmp_path: Path, monkeypatch) -> None:
    from clipdata.pipeline.journal import JOURNAL
    ann = coco_source(tmp_path / "src")
    out = tmp_path / "out"
    _killed_after_images(ann, out, monkeypatch)
    rows = [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()[1:]]
    first = rows[0]
    crop = out / "train" / "cat" / "im0_1.jpg"
    import hashlib
    assert first["f"][0] == [crop.stat().st_size, hashlib.sha256(crop.read_bytes()).hexdigest()]
    assert first["f"][2] is None and first["o"][2] == "empty_after_clamp"  # a skipped box wrote nothing


# ---- two runs never mix ----------------------------------------------------------------------

def _busy_runs(tmp_path: Path, spec) -> dict[str, tuple[Path, list]]:
    """Each command that writes an output folder: (OUT it finished, its calls into that OUT
    with each of its flags)."""
    images = unlabeled(tmp_path / "images", 4)
    ann = coco_source(tmp_path / "src", 2)
    out = {name: tmp_path / name for name in ("convert", "label", "review apply", "embed")}
    label = lambda **k: clipdata.label(images, out["label"], classes="red,green", spec=spec, **k)  # noqa: E731
    calls = {
        "convert": lambda **k: clipdata.convert(ann, out["convert"], workers=1, **k),
        "label": label,
        "review apply": lambda **k: clipdata.review_apply(out["label"], out["review apply"], **k),
        "embed": lambda **k: clipdata.embed(images, out["embed"], spec=spec, part_size=2),
    }
    flags = {"embed": [{}]}  # embed has no flags: the same command again is its resume
    for name, call in calls.items():
        call()
    return {name: (out[name], [lambda f=f, c=call: c(**f) for f in flags.get(name, [{}, {"overwrite": True}, {"resume": True}])])
            for name, call in calls.items()}


def test_a_run_into_a_busy_out_refuses_in_one_line_and_changes_nothing(tmp_path: Path, spec) -> None:
    """Another run holds OUT (its lock): every command, with every flag, stops at once with one
    line naming OUT, deletes or writes nothing there, and leaves the holder's lock in place."""
    from clipdata.errors import OutputError
    from clipdata.fsutil import LOCK_NAME, locked
    for name, (out, calls) in _busy_runs(tmp_path, spec).items():
        before = crash.tree(out)
        with locked(out):  # the other run (a lock is per open file: this process counts as another)
            for call in calls:
                with pytest.raises(OutputError) as e:
                    call()
                text = str(e.value)
                assert "another clipdata run is writing into this folder" in text and str(out) in text, (name, text)
                assert "\n" not in text, (name, text)
                assert (out / LOCK_NAME).exists(), name  # the holder's lock was not taken away
                assert crash.tree(out) == before, name


def test_a_journal_a_power_cut_brought_back_is_finished_to_the_same_bytes(tmp_path: Path, spec, monkeypatch) -> None:
    """A run's last step removes its journal; a power cut can undo that removal (the folder
    was not synced after it). The finished OUT then looks interrupted: the resume (for embed,
    the same command) must end with the same bytes, not a refusal or a mix."""
    from clipdata.errors import OutputError
    from clipdata.pipeline import journal as jr
    images = unlabeled(tmp_path / "images", 4)
    ann = coco_source(tmp_path / "src", 3)
    runs = {"convert": lambda out, **k: clipdata.convert(ann, out, workers=1, **k),
            "label": lambda out, **k: clipdata.label(images, out, classes="red,green", spec=spec, **k),
            "embed": lambda out, **k: clipdata.embed(images, out, spec=spec, part_size=2)}
    real, kept = jr.Journal.finish, {}
    monkeypatch.setattr(jr.Journal, "finish", lambda self, files=(): kept.update(j=self.path.read_bytes()) or real(self, files))
    for name, run in runs.items():
        reference, out = tmp_path / f"{name}-reference", tmp_path / name
        run(reference)
        kept.clear()
        run(out)
        (out / jr.JOURNAL).write_bytes(kept["j"])
        if name != "embed":
            with pytest.raises(OutputError, match="interrupted clipdata.*--resume"):
                run(out)
        run(out, resume=True)
        assert crash.tree(out, frozenset({"cache"})) == crash.tree(reference, frozenset({"cache"})), name


# SQLite's -wal/-shm/-journal files exist while a server has the cache open (it opens and
# closes it when it likes, so one may vanish mid-walk): they are no change to the folder.
SQLITE_RUNTIME = ("-wal", "-shm", "-journal")


def test_a_review_server_and_a_label_run_into_its_folder_exclude_each_other(tmp_path: Path, spec) -> None:
    """`label --overwrite` under a running server deleted the folder it served (and the
    decisions being made); a server started during a label run served half its files. Two
    servers of one folder still share it."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from clipdata.errors import ClipdataError, OutputError
    from clipdata.fsutil import LOCK_NAME, locked
    images = unlabeled(tmp_path / "images", 3)
    labeled = tmp_path / "labeled"
    label = lambda **k: clipdata.label(images, labeled, classes="red,green", spec=spec, **k)  # noqa: E731
    label()
    before = crash.tree(labeled, transient=SQLITE_RUNTIME)
    with clipdata.review_serve(labeled), clipdata.review_serve(labeled):
        for flags in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(OutputError, match="another clipdata run is writing into this folder.*review server"):
                label(**flags)
        assert crash.tree(labeled, transient=SQLITE_RUNTIME) == before
    assert not (labeled / LOCK_NAME).exists()  # the last server out removes it
    with locked(labeled):  # a label run at work in the folder
        with pytest.raises(ClipdataError) as e:
            clipdata.review_serve(labeled)
        assert "a clipdata run is writing into this folder" in str(e.value) and "\n" not in str(e.value)
    # review apply, killed while a server held the folder, resumes once it is gone: the server's
    # lock file is no source file (it was taken for a changed source)
    from clipdata.commands import convert as cv
    with clipdata.review_serve(labeled), pytest.MonkeyPatch.context() as m:
        m.setattr(cv, "_finish", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            clipdata.review_apply(labeled, tmp_path / "applied", workers=1)
    assert clipdata.review_apply(labeled, tmp_path / "applied", workers=1, resume=True).layout.resumed == 3
    label(overwrite=True)  # with no server, the folder is label's again
