"""Odd places to write: an output that lies inside an input, a file system that refuses the
write (read-only, full), an embedding cache that cannot be written. Each run stops before its
work in one clear line naming the real file (never a temporary one, never a traceback) and
changes no input; a cache that only could not be written is never taken for a damaged one."""
from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clipdata
from clipdata.errors import OutputError
from helpers import make_image


def snapshot(root: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every entry under root: a file's bytes and mtime, a folder as None (a new empty folder counts)."""
    out: dict[str, tuple[bytes, int] | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
    return out


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    for i in range(4):
        make_image(tmp_path / "photos" / f"p{i}.jpg", (32 + i, 30), color=(60 * i, 90, 30))
    return tmp_path / "photos"


# ---- an output inside (or over) an input ------------------------------------------------------

def _cases(photos: Path, layout: Path, emb: Path, onto: Path):
    """(name, call(spec), the refused path): each writes a report or a folder into an input."""
    return [
        ("search --jsonl in the images", lambda s: clipdata.search(photos, ["a"], spec=s, jsonl=photos / "hits.jsonl"),
         photos / "hits.jsonl"),
        ("search --jsonl over an image", lambda s: clipdata.search(photos, ["a"], spec=s, jsonl=photos / "p0.jpg"),
         photos / "p0.jpg"),
        ("search --copy-to in the images", lambda s: clipdata.search(photos, ["a"], spec=s, copy_to=photos / "hits"),
         photos / "hits"),
        ("search --html over --image", lambda s: clipdata.search(layout / "train", image=photos / "p1.jpg", spec=s,
                                                                 html_path=photos / "p1.jpg"), photos / "p1.jpg"),
        ("unique --html in --per-class", lambda s: clipdata.unique(per_class=layout / "train", spec=s,
                                                                   html_path=layout / "train" / "u.html"),
         layout / "train" / "u.html"),
        ("duplicates --jsonl in --embeddings", lambda s: clipdata.duplicates(None, embeddings=emb, spec=s,
                                                                            jsonl=emb / "d.jsonl"), emb / "d.jsonl"),
        ("unique --jsonl in --embeddings", lambda s: clipdata.unique(embeddings=emb, spec=s, jsonl=emb / "u.jsonl"),
         emb / "u.jsonl"),
        ("eval --json over clipdata.json", lambda s: clipdata.evaluate(layout, spec=s, json_path=layout / "clipdata.json"),
         layout / "clipdata.json"),
        ("eval --json over --ontology", lambda s: clipdata.evaluate(layout, spec=s, ontologies=[onto], json_path=onto),
         onto),
        ("check --json in --embeddings", lambda s: clipdata.check(layout, embeddings=emb, spec=s, json_path=emb / "c.json"),
         emb / "c.json"),
        ("embed --out in the images", lambda s: clipdata.embed(photos, photos / "emb", spec=s), photos / "emb"),
        ("embed --out around the images", lambda s: clipdata.embed(photos, photos.parent, spec=s), photos.parent),
    ]


def test_an_output_inside_an_input_is_refused_before_any_work(tmp_path: Path, photos: Path, layout: Path, spec,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow")
    emb = tmp_path / "emb"
    clipdata.embed(photos, emb, spec=spec)
    onto = tmp_path / "onto.yaml"
    onto.write_text("grass: a photo of grass\n")
    inputs = [photos, layout, emb, onto]
    before = [snapshot(p) if p.is_dir() else p.read_bytes() for p in inputs]
    from clipdata.embedding import engine

    def no_model(*a, **k):
        raise AssertionError("the refusal comes before the model is loaded")

    monkeypatch.setattr(engine.Engine, "__init__", no_model)
    for name, call, refused in _cases(photos, layout, emb, onto):
        with pytest.raises(OutputError) as e:
            call(spec)
        msg = str(e.value)
        assert "\n" not in msg and str(refused) in msg and ("inside" in msg or "overwrite" in msg or "overlap" in msg), (name, msg)
    assert [snapshot(p) if p.is_dir() else p.read_bytes() for p in inputs] == before


def test_the_cli_refuses_a_report_inside_the_images_in_one_line(tmp_path: Path, photos: Path, tiny) -> None:
    before = snapshot(photos)
    p = subprocess.run([sys.executable, "-m", "clipdata.cli", "duplicates", str(photos), "--model", str(tiny),
                        "--jsonl", str(photos / "p0.jpg")], capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "would be written inside the image folder" in p.stderr
    assert snapshot(photos) == before


# ---- a write the file system refuses -----------------------------------------------------------

def test_a_read_only_folder_names_the_output_not_its_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a read-only file system even removing the (absent) temporary file fails with EROFS;
    that second error used to replace the first, naming `.clipdata-tmp-…`."""
    from clipdata import fsutil

    def erofs(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(fsutil, "_open_new", erofs)
    monkeypatch.setattr(Path, "unlink", erofs)
    monkeypatch.setattr(os, "link", lambda src, dst: erofs(dst))
    target = tmp_path / "report.jsonl"
    for write in (lambda: fsutil.write_text(target, "x"), lambda: fsutil.link_or_copy(tmp_path, target)):
        with pytest.raises(OSError) as e:
            write()
        assert e.value.errno == errno.EROFS and e.value.filename == str(target), e.value


def _cache(tmp_path: Path):
    from clipdata.embedding.cache import EmbeddingCache
    cache = EmbeddingCache(tmp_path / "cache", "model@x")
    cache.put("text", {"a": np.ones(8, dtype="<f4")})
    return cache


def test_a_full_disk_under_the_cache_stops_and_keeps_the_cache(tmp_path: Path) -> None:
    """SQLITE_FULL used to be taken for damage: the good cache was moved to .corrupt, and the
    retry failed with the catch-all 'this is a bug' line."""
    from clipdata.embedding.cache import FILE
    cache = _cache(tmp_path)
    pages = cache.db.execute("PRAGMA page_count").fetchone()[0]
    cache.db.execute(f"PRAGMA max_page_count={pages}")  # what a full disk answers: SQLITE_FULL
    with pytest.raises(OutputError, match="no space left on the device while writing the embedding cache") as e:
        cache.put("text", {f"k{i}": np.ones(4096, dtype="<f4") for i in range(8)})
    assert "--cache-dir" in str(e.value) and "--no-cache" in str(e.value) and "\n" not in str(e.value)
    cache.close()
    assert not (tmp_path / "cache" / (FILE + ".corrupt")).exists() and not cache.notes
    from clipdata.embedding.cache import EmbeddingCache
    again = EmbeddingCache(tmp_path / "cache", "model@x")
    assert set(again.get("text", ["a"])) == {"a"}  # the rows it held are all there
    again.close()


def test_a_cache_that_cannot_be_written_is_one_line_not_a_rebuild(tmp_path: Path, monkeypatch) -> None:
    from clipdata.embedding.cache import FILE, EmbeddingCache
    _cache(tmp_path).close()
    real = sqlite3.connect

    def readonly(path, *a, **k):  # what a cache on a read-only mount (or a read-only file) answers
        return real(f"file:{path}?mode=ro", uri=True)

    monkeypatch.setattr(sqlite3, "connect", readonly)
    with pytest.raises(OutputError, match="the embedding cache cannot be written") as e:
        EmbeddingCache(tmp_path / "cache", "model@x").put("text", {"b": np.ones(8, dtype="<f4")})
    assert "--no-cache" in str(e.value)
    assert not (tmp_path / "cache" / (FILE + ".corrupt")).exists()
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    with pytest.raises(OutputError, match=r"cache folder cannot be made \(Read-only file system\).*--no-cache"):
        EmbeddingCache(tmp_path / "home" / ".cache" / "clipdata", "model@x")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not sys.platform.startswith("linux"),
                    reason="mounts a small tmpfs (root on Linux)")
def test_label_onto_a_full_disk_and_unique_with_a_read_only_home(tmp_path: Path, photos: Path, tiny) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)]).returncode:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        (disk / "fill").write_bytes(b"\0" * 150_000)
        env = dict(os.environ)
        p = subprocess.run([sys.executable, "-m", "clipdata.cli", "label", str(photos), "--model", str(tiny),
                            "--classes", "a,b", "--out", str(disk / "lab"), "--copy", "-q"], capture_output=True,
                           text=True, env=env)
        assert p.returncode == 1 and p.stderr.count("\n") == 1 and "no space left" in p.stderr, p.stderr
        assert "please report" not in p.stderr and not list(disk.rglob("*.corrupt"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("CLIPDATA_CACHE", "XDG_CACHE_HOME")}
        env["HOME"] = str(disk)
        p = subprocess.run([sys.executable, "-m", "clipdata.cli", "unique", str(photos), "--model", str(tiny), "-q"],
                           capture_output=True, text=True, env=env)
        assert p.returncode == 1 and p.stderr.count("\n") == 1 and "--no-cache" in p.stderr, p.stderr
    finally:
        subprocess.run(["umount", str(disk)])


# ---- nothing left in the temporary folder ---------------------------------------------------

def test_the_backend_keeps_a_scratch_folder_only_while_it_fetches(tmp_path: Path, spec, monkeypatch) -> None:
    """It used to make /tmp/clipdata-backend-* when it started and remove it at a clean stop:
    a killed server (or one never closed) left one behind for good."""
    import io
    import tempfile

    from PIL import Image

    from clipdata.scoring import Classes
    from clipdata.server import learner as lm

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "JPEG")
    seen: list[list[str]] = []

    def fetch(url: str) -> bytes:
        seen.append(os.listdir(scratch))
        return buf.getvalue()

    monkeypatch.setattr(lm, "fetch_remote", fetch)
    learner = lm.Learner(Classes(["red", "blue"], [["red"], ["blue"]]), spec, cache_dir=tmp_path / "cache",
                         allow_remote=True)
    assert os.listdir(scratch) == []  # started: nothing a kill could leave
    rows, errors = learner.embed([{"id": 1, "data": {"image": "https://example.org/a.jpg"}}], "image")
    assert not errors and rows.shape[0] == 1 and np.isfinite(rows).all()
    assert len(seen) == 1 and len(seen[0]) == 1  # a scratch folder while fetching ...
    assert os.listdir(scratch) == []  # ... gone when the request is answered
    learner.close()


# ---- two runs into one folder ------------------------------------------------------------------

def test_search_copy_to_is_locked_and_a_used_folder_is_refused_before_embedding(tmp_path: Path, photos: Path, spec,
                                                                                 monkeypatch) -> None:
    """Two searches into one --copy-to folder used to mix their hits (each saw it empty, then
    both linked `001_….jpg`); the second now refuses at once, and a non-empty folder (a killed
    search's) is refused before the images are embedded."""
    from clipdata import embedding
    from clipdata.fsutil import LOCK_NAME, locked

    monkeypatch.setattr(embedding, "embed_paths", lambda *a, **k: (_ for _ in ()).throw(AssertionError("embedded")))
    dest = tmp_path / "hits"
    dest.mkdir()
    with locked(dest):  # another run holds it
        with pytest.raises(OutputError, match="another clipdata run is writing into this folder"):
            clipdata.search(photos, ["red"], spec=spec, copy_to=dest)
        assert sorted(p.name for p in dest.iterdir()) == [LOCK_NAME]  # the holder's lock left in place
    (dest / ".clipdata-tmp-4242-001_p0.jpg").write_bytes(b"half")  # what a killed run leaves
    with pytest.raises(OutputError, match="--copy-to: the folder is not empty"):
        clipdata.search(photos, ["red"], spec=spec, copy_to=dest)
    assert sorted(p.name for p in dest.iterdir()) == [".clipdata-tmp-4242-001_p0.jpg"]
    monkeypatch.undo()
    fresh = tmp_path / "fresh"
    clipdata.search(photos, ["red"], top=2, spec=spec, copy_to=fresh)
    assert sorted(p.name[:4] for p in fresh.iterdir()) == ["001_", "002_"]  # no lock file left


def test_a_layout_inside_the_label_folder_or_the_images_is_refused(tmp_path: Path, photos: Path, spec) -> None:
    """review apply wrote its layout inside the label folder it read (where a later `label
    --overwrite` deletes it), and convert its crops inside --images (read as images by the
    next label or embed of that folder)."""
    from helpers import write_coco
    lab = tmp_path / "lab"
    clipdata.label(photos, lab, classes="red,blue", spec=spec)
    before = snapshot(lab), snapshot(photos)
    for reviewed in (lab, lab / "predictions.csv"):
        with pytest.raises(OutputError, match="the output folder is inside the label folder"):
            clipdata.review_apply(reviewed, lab / "layout")
    ann = write_coco(tmp_path / "ann" / "coco.json", [{"id": 1, "file_name": "p0.jpg", "width": 32, "height": 30}],
                     [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]}], [{"id": 1, "name": "red"}])
    with pytest.raises(OutputError, match="the output folder is inside the --images folder"):
        clipdata.convert(ann, photos / "layout", images=photos)
    assert (snapshot(lab), snapshot(photos)) == before
    clipdata.review_apply(lab / "predictions.csv", tmp_path / "beside")  # beside it: fine


# ---- report files: pipes, devices, links, a kill --------------------------------------------

def test_a_report_into_a_pipe_is_written_through_not_replaced(tmp_path: Path, photos: Path, spec) -> None:
    """`--jsonl /dev/stdout` or `--json >(jq .)`: the atomic rename replaced the pipe (as root,
    /dev/stdout's own entry) with a regular file, and the reader got nothing."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the reader is there first (a report fits the pipe's buffer)
    try:
        report = clipdata.duplicates(photos, spec=spec, jsonl=fifo, threshold=2.0)
        got = b""
        while chunk := os.read(fd, 1 << 16):
            got += chunk
    except BlockingIOError:  # nothing was ever written into the pipe
        got = b""
    finally:
        os.close(fd)
    assert fifo.is_fifo() and got.count(b"\n") == len(report.groups) >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "pipe"]  # no temporary beside it


def test_a_killed_plot_leaves_no_half_png(tmp_path: Path, layout: Path, spec, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    real = Figure.savefig

    def killed(self, fname, *a, **k):
        real(self, fname, *a, **k)
        if hasattr(fname, "write"):
            fname.truncate(100)
        else:
            with open(fname, "r+b") as f:
                f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        clipdata.evaluate(layout, spec=spec, plot_path=tmp_path / "confusion.png")
    assert list(tmp_path.glob("*.png")) == [] and not [p for p in tmp_path.iterdir() if p.name.startswith(".clipdata")]


def test_an_output_folder_that_is_a_dangling_link_is_named(tmp_path: Path, layout: Path) -> None:
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone" / "out")
    with pytest.raises(OutputError, match=r"is a link to .*gone/out, which does not exist") as e:
        clipdata.convert(layout, out, format="folder")  # it said 'File exists'
    assert "\n" not in str(e.value) and not (tmp_path / "gone").exists()
    (tmp_path / "gone" / "out").mkdir(parents=True)
    clipdata.convert(layout, out, format="folder")  # a link to a folder is an output folder
    assert (tmp_path / "gone" / "out" / "clipdata.json").is_file()


def test_check_json_is_the_same_bytes_cold_cache_or_warm(tmp_path: Path, layout: Path, spec) -> None:
    cache = tmp_path / "cache"
    for name in ("cold.json", "warm.json"):
        clipdata.check(layout, spec=spec, cache_dir=cache, json_path=tmp_path / name, kinds="quality,duplicates")
    assert (tmp_path / "cold.json").read_bytes() == (tmp_path / "warm.json").read_bytes()


def test_a_cache_folder_inside_an_input_is_refused(tmp_path: Path, photos: Path, layout: Path, spec,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`--cache-dir layout/train/cache` made `cache` a class folder of the layout (inspect then
    called it broken); inside IMAGES it changed the image folder. Refused before the model loads."""
    from clipdata.embedding import engine
    monkeypatch.setattr(engine.Engine, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    calls = {
        "check": lambda: clipdata.check(layout, spec=spec, cache_dir=layout / "train" / "cache"),
        "prompts": lambda: clipdata.prompts(layout, tmp_path / "p.yaml", spec=spec, cache_dir=layout / "cache"),
        "audit": lambda: clipdata.audit(layout, spec=spec, cache_dir=layout / "cache"),
        "eval": lambda: clipdata.evaluate(layout, spec=spec, cache_dir=layout / "train" / "cache"),
        "search": lambda: clipdata.search(photos, ["a"], spec=spec, cache_dir=photos / ".cache"),
        "unique": lambda: clipdata.unique(photos, spec=spec, cache_dir=photos / "cache"),
        "duplicates": lambda: clipdata.duplicates(photos, spec=spec, cache_dir=photos / "cache"),
        "label": lambda: clipdata.label(photos, tmp_path / "lab", classes="a,b", spec=spec, cache_dir=photos / "c"),
        "embed": lambda: clipdata.embed(photos, tmp_path / "emb", spec=spec, cache_dir=photos / "c"),
    }
    before = snapshot(layout), snapshot(photos)
    for name, call in calls.items():
        with pytest.raises(OutputError, match="would be written inside (the layout|the image folder)"):
            call()
    assert (snapshot(layout), snapshot(photos)) == before
    assert not (tmp_path / "lab").exists() and not (tmp_path / "emb").exists()
