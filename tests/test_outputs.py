"""Outputs: one run per OUT (lock), names that fit the file system, nothing written outside
its folder, and write errors that name the real file."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipdata.errors import OutputError
from clipdata.fsutil import (LOCK_NAME, NAME_MAX, TMP_PREFIX, check_name, inside, locked, name_bytes,
                             safe_name, write_bytes, write_text)

ROOT = Path(__file__).parent.parent


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# ---- the OUT lock ----------------------------------------------------------------------

def test_second_lock_on_one_folder_fails_at_once_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with locked(out) as lock:
        assert lock == out / LOCK_NAME and lock.is_file()
        with pytest.raises(OutputError) as e:
            with locked(out):
                pass
        assert "another clipdata run" in str(e.value) and str(out) in str(e.value)
        assert "\n" not in str(e.value)
    assert not (out / LOCK_NAME).exists()
    with locked(out):  # free again once released
        pass


def test_lock_held_by_another_process_blocks_until_it_dies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = _python("""
        import sys, time
        from pathlib import Path
        from clipdata.fsutil import locked
        with locked(Path(sys.argv[1])):
            print("held", flush=True)
            time.sleep(60)
    """, str(out))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match="another clipdata run"):
            with locked(out):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # SIGKILL leaves the file behind but not the lock: the next run proceeds.
    assert (out / LOCK_NAME).exists()
    with locked(out):
        pass


def test_lock_outlives_a_killed_parent_in_its_forked_children(tmp_path: Path) -> None:
    """Workers forked while the lock is held hold it too: after the parent is killed, a rerun
    cannot start while a worker may still be writing."""
    out = tmp_path / "out"
    parent = _python("""
        import os, sys, time
        from pathlib import Path
        from clipdata.fsutil import locked
        with locked(Path(sys.argv[1])):
            child = os.fork()
            if child == 0:
                time.sleep(60)
                os._exit(0)
            print(child, flush=True)
            os._exit(0)  # dies without releasing, as under SIGKILL
    """, str(out))
    child = int(parent.stdout.readline())
    parent.wait(timeout=30)
    try:
        with pytest.raises(OutputError, match="another clipdata run"):
            with locked(out):
                pass
    finally:
        os.kill(child, 9)
    for _ in range(100):  # the child is reparented, not ours to reap: wait until it is gone
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        import time
        time.sleep(0.1)
    with locked(out):
        pass


@pytest.mark.parametrize("case", ["file", "created_and_failed"])
def test_lock_edges(tmp_path: Path, case: str) -> None:
    if case == "file":
        (tmp_path / "f").write_text("x")
        with pytest.raises(OutputError, match="not a folder"):
            with locked(tmp_path / "f"):
                pass
    else:  # a run that fails before writing leaves no empty folder it created
        with pytest.raises(RuntimeError):
            with locked(tmp_path / "new" / "out"):
                raise RuntimeError
        assert not (tmp_path / "new" / "out").exists()


# ---- name lengths ---------------------------------------------------------------------

@pytest.mark.parametrize("name, ok", [
    ("a" * 255, True),
    ("a" * 256, False),
    ("é" * 127, True),      # 254 bytes
    ("é" * 128, False),     # 256 bytes: characters are not bytes
    ("猫" * 85, True),      # 255 bytes
    ("猫" * 86, False),
    ("x" * 251 + ".jpg", True),
    ("x" * 252 + ".jpg", False),  # the suffix counts
])
def test_check_name_counts_bytes_after_the_suffix(name: str, ok: bool) -> None:
    if ok:
        assert check_name(name, what="class 'x'") == name
    else:
        with pytest.raises(OutputError) as e:
            check_name(name, what="annotation id 7 of 'a.jpg'", file="ann.json")
        text = str(e.value)
        assert "annotation id 7 of 'a.jpg'" in text and f"{name_bytes(name)} bytes" in text
        assert text.startswith("ann.json") and "\n" not in text and TMP_PREFIX not in text


def test_a_name_at_the_limit_is_writable(tmp_path: Path) -> None:
    """The temporary name is longer than the final one; it must not make a legal name fail."""
    for name in ("a" * 255, "é" * 127 + "a", "x" * 251 + ".jpg"):
        write_text(tmp_path / name, "ok")
        assert (tmp_path / name).read_text() == "ok"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_too_long_name_error_names_the_file_not_the_temporary(tmp_path: Path) -> None:
    with pytest.raises(OSError) as e:
        write_text(tmp_path / ("a" * 300), "x")
    assert e.value.filename == str(tmp_path / ("a" * 300))
    assert not list(tmp_path.iterdir())


# ---- names from free text ---------------------------------------------------------------

@pytest.mark.parametrize("text", ["..", ".", "", "../../etc/passwd", "a/b", "a\\b", "\x00\n\t", ".hidden",
                                  "q" * 400, "é" * 300, "a photo of a cat"])
def test_safe_name_table(tmp_path: Path, text: str) -> None:
    name = safe_name(text, suffix=".jpg")
    assert name_bytes(name) <= NAME_MAX and "/" not in name and "\\" not in name
    assert not name.startswith(".") and name not in (".", "..")
    assert inside(tmp_path, name).parent == tmp_path


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(text=st.text(min_size=0, max_size=400), suffix=st.sampled_from(["", ".jpg", ".webp"]))
def test_safe_name_always_stays_in_its_folder(tmp_path: Path, text: str, suffix: str) -> None:
    name = safe_name(text, suffix=suffix)
    assert name_bytes(name) <= NAME_MAX and name.endswith(suffix)
    path = inside(tmp_path, name)
    assert path.parent == tmp_path and path.name == name


def test_safe_name_keeps_long_texts_apart() -> None:
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert safe_name(a) != safe_name(b)
    assert safe_name("cat") == "cat"  # short names are kept as they are


@pytest.mark.parametrize("rel, ok", [
    ("a.jpg", True), ("train/cat/a.jpg", True), ("..", False), ("../x", False),
    ("a/../../x", False), ("/etc/passwd", False), ("", False), (".", False), ("link/x", False),
])
def test_inside_table(tmp_path: Path, rel: str, ok: bool) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)  # a symlink out of the folder does not count as inside
    if ok:
        assert inside(out, rel) == out / rel
    else:
        with pytest.raises(OutputError, match="outside the output folder"):
            inside(out, rel)


# ---- write errors ---------------------------------------------------------------------

def test_file_size_limit_names_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    """A real EFBIG from the kernel (RLIMIT_FSIZE), the same path as a full disk."""
    target = tmp_path / "train" / "cat" / "big.jpg"
    proc = _python("""
        import resource, signal, sys
        from pathlib import Path
        from clipdata.errors import OutputError
        from clipdata.fsutil import write_bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            write_bytes(Path(sys.argv[1]), b"x" * 100_000)
        except OutputError as e:
            print(e)
    """, str(target))
    out, err = proc.communicate(timeout=60)
    assert err == "" and out.count("\n") == 1
    assert out.startswith(str(target)) and "file too large" in out and "--resume" in out
    assert not [p for p in target.parent.iterdir()]


def test_full_disk_is_named(tmp_path: Path) -> None:
    """ENOSPC raised by a write (as /dev/full does) names the final file."""
    def fill(f) -> None:
        with open("/dev/full", "wb") as full:
            full.write(b"x")
            full.flush()

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    from clipdata.fsutil import write_with
    with pytest.raises(OutputError) as e:
        write_with(tmp_path / "a.jpg", fill)
    assert str(e.value).startswith(str(tmp_path / "a.jpg")) and "no space left" in str(e.value)
    assert not list(tmp_path.iterdir())


def test_other_write_errors_pass_through(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        if os.access(tmp_path / "ro", os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(PermissionError) as e:
            write_bytes(tmp_path / "ro" / "a.jpg", b"x")
        assert e.value.filename == str(tmp_path / "ro" / "a.jpg")
    finally:
        os.chmod(tmp_path / "ro", 0o700)


# ---- conversions: conservation, lengths, inputs never deleted -----------------------------

import json  # noqa: E402

import clipdata  # noqa: E402
from clipdata.errors import ClipdataError  # noqa: E402

from conftest import FIXTURES, make_image, manifest, tree_bytes, write_coco  # noqa: E402

READER_FIXTURES = [
    ("coco", "sahi/terrain_all_coco.json", {"skip_missing": True}),
    ("coco", "datumaro/coco_dataset/mmdet_coco", {}),
    ("coco", "datumaro/roboflow_coco", {}),
    ("coco", "datumaro/coco_dataset/coco/annotations/instances_val.json", {}),
    ("yolo", "datumaro/roboflow_yolo", {}),
    ("yolo", "road-signs-classifier/dataset_split/data.yaml", {}),
    ("yolo", "datumaro/yolo_dataset/strict", {}),
    ("voc", "datumaro/voc_dataset/voc_dataset1", {}),
    ("voc", "datumaro/roboflow_voc", {}),
    ("folder", "datumaro/imagenet_dataset", {}),
]


def _convert_or_refuse(fmt: str, path: Path, out: Path, **kw):
    try:
        return clipdata.convert(path, out, format=fmt, **kw)
    except ClipdataError as e:  # a fixture a reader refuses as a whole is not this test's subject
        pytest.skip(f"refused: {e}")


@pytest.mark.parametrize("mode", ["crops", "scenes"])
@pytest.mark.parametrize("fmt, rel, kw", READER_FIXTURES)
def test_conservation_on_every_readers_fixtures(tmp_path: Path, fmt: str, rel: str, kw: dict, mode: str) -> None:
    out = tmp_path / "out"
    report = _convert_or_refuse(fmt, FIXTURES / rel, out, mode=mode, **kw)
    prov = json.loads((out / "clipdata.json").read_text())
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for key in ("boxes", "images"):
        t = prov[key]
        assert t["read"] == t["written"] + sum(t["skipped"].values()), (key, t)
    assert prov["images"]["written"] == len({(r["split"], r["source_image"]) for r in rows})
    if mode == "crops":
        assert prov["boxes"]["written"] == len(rows)
    else:
        assert prov["images"]["written"] == len(rows)
    skipped = (out / "skipped.jsonl").read_text().splitlines() if (out / "skipped.jsonl").exists() else []
    assert len(skipped) == len(report.skipped) == sum(prov["skipped"].values())
    assert len(prov["skipped_items"]) <= 20 * len(prov["skipped"])
    if fmt == "coco" and rel.endswith(".json"):  # counted independently of the reader
        data = json.loads((FIXTURES / rel).read_text())
        assert prov["boxes"]["read"] == len(data["annotations"])
        assert prov["images"]["read"] == len(data["images"])


def test_boxes_lost_with_missing_images_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_image(root / "a.jpg")
    ann = write_coco(root / "ann.json",
                     [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                      {"id": 2, "file_name": "gone.jpg", "width": 64, "height": 48}],
                     [{"id": i, "image_id": 1 if i < 3 else 2, "category_id": 1, "bbox": [1, 1, 10, 10]}
                      for i in range(1, 8)],
                     [{"id": 1, "name": "cat"}])
    clipdata.convert(ann, tmp_path / "out", skip_missing=True)
    prov = json.loads((tmp_path / "out" / "clipdata.json").read_text())
    assert prov["boxes"] == {"read": 7, "written": 2, "skipped": {"missing_image": 5}}
    assert prov["images"] == {"read": 2, "written": 1, "skipped": {"missing_image": 1}}


def test_skipped_items_are_bounded_in_clipdata_json_and_complete_in_skipped_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_image(root / "a.jpg")
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 1} for i in range(1, 60)]
    anns.append({"id": 100, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]})
    ann = write_coco(root / "ann.json", [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}], anns,
                     [{"id": 1, "name": "cat"}])
    clipdata.convert(ann, tmp_path / "out")
    prov = json.loads((tmp_path / "out" / "clipdata.json").read_text())
    full = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert prov["skipped"] == {"crowd": 59} and len(full) == 59 and len(prov["skipped_items"]) == 20
    assert prov["skipped_items"] == full[:20]
    assert sorted(r["annotation_id"] for r in full) == list(range(1, 60))


LONG = [  # a class folder is named by its caption's class: too long, it is refused, not cut
    ("class", lambda: {"cats": [{"id": 1, "name": "c" * 300}]}, "class 'ccc"),
]


@pytest.mark.parametrize("what, make, said", LONG, ids=[c[0] for c in LONG])
def test_too_long_names_are_one_clear_line_before_writing(tmp_path: Path, what: str, make, said: str) -> None:
    spec = make()
    root = tmp_path / "src"
    file = spec.get("file", "a.jpg")
    try:
        make_image(root / file)
    except OSError:
        pytest.skip("this file system refuses the long source name itself")
    ann = {"id": spec.get("aid", 1), "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}
    path = write_coco(root / "ann.json", [{"id": 1, "file_name": file, "width": 64, "height": 48}], [ann],
                      spec.get("cats", [{"id": 1, "name": "cat"}]))
    out = tmp_path / "out"
    with pytest.raises(ClipdataError) as e:
        clipdata.convert(path, out, format="coco")
    text = str(e.value)
    assert said in text and "255" in text and "\n" not in text and ".clipdata-tmp" not in text
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.parametrize("fmt", ["folder", "coco"])
def test_long_file_names_are_shortened_not_refused(tmp_path: Path, fmt: str) -> None:
    """Two 250-byte source names in one class (and a 260-digit annotation id): each output
    name is cut to fit with a hash of the whole name — distinct, the same on every run — and
    the manifest keeps the full source name."""
    root = tmp_path / "src"
    names = ["i" * 246 + "a.png", "i" * 246 + "b.png", "short.png"]
    try:
        for n in names:
            make_image(root / "cat" / n)
    except OSError:
        pytest.skip("this file system refuses the long source name itself")
    if fmt == "folder":
        source = root
    else:
        images = [{"id": i + 1, "file_name": f"cat/{n}", "width": 64, "height": 48} for i, n in enumerate(names)]
        anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 10, 10]} for i in range(3)]
        anns.append({"id": "7" * 260, "image_id": 3, "category_id": 1, "bbox": [2, 2, 10, 10]})
        source = write_coco(root / "ann.json", images, anns, [{"id": 1, "name": "cat"}])
    outs = []
    for run in ("a", "b"):
        report = clipdata.convert(source, tmp_path / run, format=fmt)
        assert report.crops + report.images == (3 if fmt == "folder" else 4)
        outs.append(tree_bytes(tmp_path / run))
    assert outs[0] == outs[1]
    files = [p for p in (tmp_path / "a" / "train" / "cat").iterdir()]
    assert len({p.name for p in files}) == len(files) and all(name_bytes(p.name) <= NAME_MAX for p in files)
    rows = manifest(tmp_path / "a")
    assert sorted({r["source_image"].split("/")[-1] for r in rows}) == sorted(names)


@pytest.mark.parametrize("name, fmt, written", [
    ("scan.txt", "JPEG", "scan.txt.jpg"),  # a COCO file_name that is not an image's: found by fuzzing
    ("IMG_1", "PNG", "IMG_1.png"),
    ("a.b.c", "JPEG", "a.b.c.jpg"),
    ("photo.PNG", "PNG", "photo.PNG"),  # an image extension is kept as it is
    ("cut.jpg", "PNG", "cut.jpg"),  # the name is not checked against the content when it is an image's
])
def test_whole_image_without_an_image_extension_gets_its_contents(tmp_path: Path, name: str, fmt: str, written: str) -> None:
    """Whole images are copied under their names; one not ending in an image extension got no
    extension, and loaders that go by extension (ImageFolder) passed over it silently."""
    root = tmp_path / "src"
    make_image(root / name, fmt=fmt)
    path = write_coco(root / "ann.json", [{"id": 1, "file_name": name}],
                      [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}], [{"id": 1, "name": "cat"}])
    clipdata.convert(path, tmp_path / "out", format="coco", mode="scenes")
    rows = manifest(tmp_path / "out")
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == [written] and rows[0]["source_image"] == name
    assert (tmp_path / "out" / rows[0]["path"]).read_bytes() == (root / name).read_bytes()


def test_long_scene_folder_is_named(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_image(root / "a.jpg")
    cats = [{"id": i, "name": f"class-number-{i:03d}-" + "x" * 20} for i in range(1, 12)]
    anns = [{"id": i, "image_id": 1, "category_id": i, "bbox": [1, 1, 10, 10]} for i in range(1, 12)]
    path = write_coco(root / "ann.json", [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}], anns, cats)
    with pytest.raises(ClipdataError, match="the scene folder of image 'a.jpg'"):
        clipdata.convert(path, tmp_path / "out", format="coco", mode="scenes")


def test_overwrite_never_deletes_an_input(tmp_path: Path, coco_set: Path) -> None:
    out = tmp_path / "out"
    clipdata.convert(coco_set, out)
    onto = out / "ontology.yaml"
    onto.write_text("classes:\n  cat: {caption: a photo of a cat}\n")
    with pytest.raises(ClipdataError, match="--overwrite would delete"):
        clipdata.convert(coco_set, out, ontology=onto, overwrite=True)
    assert onto.is_file() and (out / "clipdata.json").is_file()


def _interrupted(source: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after its last image, before clipdata.json: the journal is left behind."""
    from clipdata.pipeline.journal import JOURNAL, Journal
    with monkeypatch.context() as m:
        m.setattr(Journal, "finish", lambda self, files=(): None)
        clipdata.convert(source, out, overwrite=True)
    (out / "clipdata.json").unlink()
    assert (out / JOURNAL).is_file()


def test_resume_refuses_a_changed_source(tmp_path: Path, coco_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    _interrupted(coco_set, out, monkeypatch)
    clipdata.convert(coco_set, out, resume=True)  # unchanged: it resumes
    before = (out / "manifest.jsonl").read_bytes()
    _interrupted(coco_set, out, monkeypatch)
    data = json.loads(coco_set.read_text())
    data["annotations"][0]["bbox"] = [5, 5, 20, 10]  # same size and names: only the content differs
    coco_set.write_text(json.dumps(data))
    with pytest.raises(ClipdataError) as e:
        clipdata.convert(coco_set, out, resume=True)
    assert "the source changed" in str(e.value) and str(coco_set) in str(e.value)
    assert "\n" not in str(e.value)
    assert (out / "manifest.jsonl").read_bytes() == before  # nothing was mixed in


def test_resume_refuses_changed_images(tmp_path: Path, coco_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    _interrupted(coco_set, out, monkeypatch)
    make_image(coco_set.parent / "a.jpg", (64, 48), color=(0, 0, 0))
    os.utime(coco_set.parent / "a.jpg", ns=(1, 1))
    with pytest.raises(ClipdataError, match="image or other files"):
        clipdata.convert(coco_set, out, resume=True)


# ---- the command line: one unwrapped line, a last resort, usage errors ---------------------

def test_run_summary_shows_the_conservation_rule(tmp_path: Path, coco_set: Path) -> None:
    from typer.testing import CliRunner

    from clipdata.cli import app
    r = CliRunner().invoke(app, ["convert", "coco", str(coco_set), str(tmp_path / "out")])
    assert r.exit_code == 0
    assert "boxes: 4 read = 3 written + 1 skipped; images: 2 read = 2 written + 0 skipped" in r.output


def test_a_bug_is_one_line_asking_for_a_report(tmp_path: Path, coco_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import clipdata.commands.convert as cmd
    from clipdata.cli import app

    def broken(*a, **k):
        raise ValueError("a bug\nover two lines")

    monkeypatch.setattr(cmd, "convert", broken)
    monkeypatch.delenv("CLIPDATA_DEBUG", raising=False)
    r = CliRunner().invoke(app, ["convert", "coco", str(coco_set), str(tmp_path / "out")])
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "ValueError: a bug over two lines" in r.output and "please report this" in r.output
    monkeypatch.setenv("CLIPDATA_DEBUG", "1")
    r = CliRunner().invoke(app, ["convert", "coco", str(coco_set), str(tmp_path / "out")])
    assert isinstance(r.exception, ValueError)  # the traceback, for the report


def test_piped_errors_are_never_wrapped(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / ("and-another-one-" * 6) / "missing.json"
    proc = subprocess.run([sys.executable, "-m", "clipdata.cli", "convert", "coco", str(deep), str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and str(deep) in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- a damaged embedding cache is rebuilt, with a note --------------------------------------

def _damage(kind: str, raw: bytes) -> bytes:
    return {
        "not a database": b"clipdata? no." * 100,
        "cut inside the header": raw[:50],
        "cut after the first page": raw[:4096 + 100],
        "pages overwritten": raw[:4096] + b"\xff" * (len(raw) - 4096),
    }[kind]


@pytest.mark.parametrize("kind", ["not a database", "cut inside the header", "cut after the first page",
                                  "pages overwritten"])
def test_damaged_cache_is_rebuilt_with_a_note(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture) -> None:
    import numpy as np

    from clipdata.embedding.cache import FILE, EmbeddingCache
    cache = EmbeddingCache(tmp_path, "model@x")
    cache.put("text", {f"k{i}": np.full(512, i, dtype="<f4") for i in range(64)})  # several pages
    cache.close()
    raw = (tmp_path / FILE).read_bytes()
    assert len(raw) > 3 * 4096
    (tmp_path / FILE).write_bytes(_damage(kind, raw))
    for extra in ("-wal", "-shm"):
        (tmp_path / (FILE + extra)).unlink(missing_ok=True)
    cache = EmbeddingCache(tmp_path, "model@x")
    assert cache.get("text", [f"k{i}" for i in range(64)]) == {}  # nothing wrong is served
    cache.put("text", {"new": np.ones(512, dtype="<f4")})  # usable again
    assert set(cache.get("text", ["new"])) == {"new"}
    cache.close()
    err = capsys.readouterr().err  # it said so, once, in one line, and kept the file
    assert len(cache.notes) == 1 and err.count("\n") == 1 and "rebuilt" in err and str(tmp_path) in err
    assert (tmp_path / (FILE + ".corrupt")).read_bytes() == _damage(kind, raw)


# ---- everything written resolves inside its folder (property tests) --------------------------

def _files_under(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for f in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _assert_contained(base: Path, out: Path, before: dict[str, tuple[int, int]]) -> None:
    """Every entry under `out` resolves inside it; nothing else under `base` appeared or changed."""
    real_out = out.resolve()
    for rel in _files_under(out) if out.exists() else {}:
        assert real_out in (out / rel).resolve().parents, rel
    after = {k: v for k, v in _files_under(base).items() if not (base / k).resolve().is_relative_to(real_out)}
    assert after == before


NAME_TEXT = st.one_of(st.sampled_from(["..", ".", "../x", "a/b", "a\\b", "/abs", "~", "\u2028", "", " x ",
                                       "c" * 300, "é" * 140, "CON", "x\x00y", ".hidden"]),
                      st.text(min_size=0, max_size=30))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(classes=st.lists(NAME_TEXT, min_size=1, max_size=3), ids=st.lists(st.one_of(NAME_TEXT, st.integers()), min_size=1, max_size=3),
       file_name=NAME_TEXT, template=st.sampled_from(["a photo of a {}", "{}\u2028", "../{}", "{} /etc"]),
       mode=st.sampled_from(["crops", "scenes"]))
def test_convert_writes_only_inside_out(tmp_path_factory: pytest.TempPathFactory, classes: list, ids: list,
                                        file_name: str, template: str, mode: str) -> None:
    base = tmp_path_factory.mktemp("prop")
    root = base / "data" / "src"
    make_image(root / "img.jpg")
    images = [{"id": 1, "file_name": "img.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": file_name, "width": 64, "height": 48}]
    anns = [{"id": aid, "image_id": 1 + i % 2, "category_id": 1 + i % len(classes), "bbox": [1, 1, 20, 20]}
            for i, aid in enumerate(ids)]
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]
    ann = write_coco(root / "ann.json", images, anns, cats)
    out = base / "data" / "out"
    before = _files_under(base)
    try:
        clipdata.convert(ann, out, template=template, mode=mode, skip_missing=True)
    except ClipdataError as e:
        assert "\n" not in str(e)
    except OSError as e:  # the CLI's one line names the file (a name too long to look up)
        assert e.filename
    _assert_contained(base, out, before)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory):
    """A tiny CLIP, a folder of photos with awkward names, and its `clipdata label` output."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_clip import make_tiny_clip

    from clipdata.embedding import EngineSpec
    base = tmp_path_factory.mktemp("labeled")
    spec = EngineSpec(model=str(make_tiny_clip(base / "model")), dtype="float32", batch_size=4, workers=0)
    photos = base / "photos"
    for i, name in enumerate(["a.jpg", "a__b.jpg", "sub/b.jpg", "..x.jpg", "é" * 100 + ".jpg", "sp ace.jpg"]):
        make_image(photos / name, color=(i * 40, 10, 200))
    (photos / "dangling.jpg").symlink_to(base / "nowhere.jpg")
    before = _files_under(base)
    out = base / "label-out"
    clipdata.label(photos, out, classes=["red thing", "blue thing", "CON"], spec=spec, threshold=0.0,
                   margin=0.0, cache_dir=base / "cache")
    return base, spec, photos, out, before


def test_label_and_review_apply_write_only_inside_their_folders(labeled) -> None:
    base, spec, photos, out, before = labeled
    written = {k for k in _files_under(base) if k not in before}
    for rel in written:  # the label output and the cache, nothing else
        top = Path(rel).parts[0]
        assert top in ("label-out", "cache"), rel
        assert (base / top).resolve() in (base / rel).resolve().parents
    for f in sorted((out / "review" / "_uncertain").rglob("*")):  # the reviewer decides the rest
        if f.is_file():
            (out / "review" / "red thing").mkdir(exist_ok=True)
            f.rename(out / "review" / "red thing" / f.name)
    layout = base / "layout"
    snap = _files_under(base)
    clipdata.review_apply(out, layout)
    _assert_contained(base, layout, snap)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queries=st.lists(NAME_TEXT.filter(lambda q: q.strip() != "" and "\x00" not in q and len(q) <= 30),
                        min_size=1, max_size=3))
def test_search_copy_to_writes_only_inside_its_folder(labeled, tmp_path_factory: pytest.TempPathFactory,
                                                      queries: list[str]) -> None:
    base, spec, photos, _, _ = labeled
    dest_base = tmp_path_factory.mktemp("hits")
    dest = dest_base / "hits"
    before = _files_under(dest_base)
    try:
        clipdata.search(photos, queries, top=3, spec=spec, cache_dir=base / "cache", copy_to=dest)
    except ClipdataError as e:
        assert "\n" not in str(e)
    _assert_contained(dest_base, dest, before)


@pytest.mark.parametrize("cut", ["mid-row", "mid-character", "garbage line"])
def test_truncated_predictions_are_one_clear_line(labeled, tmp_path: Path, cut: str) -> None:
    import shutil
    _, _, _, out, _ = labeled
    copy = tmp_path / "label-out"
    shutil.copytree(out, copy, symlinks=True)
    raw = (copy / "predictions.jsonl").read_bytes()
    first_end = raw.index(b"\n") + 1
    damaged = {"mid-row": raw[:first_end + 25],
               "mid-character": raw[:first_end] + "{\"path\": \"é".encode()[:-1],
               "garbage line": raw[:first_end] + b"not json at all\n" + raw[first_end:]}[cut]
    (copy / "predictions.jsonl").write_bytes(damaged)
    with pytest.raises(ClipdataError) as e:
        clipdata.review_apply(copy, tmp_path / "layout")
    text = str(e.value)
    assert "predictions.jsonl" in text and "line 2" in text and "\n" not in text
    assert not (tmp_path / "layout").exists()


def _yolo_flat(root: Path, extra) -> Path:
    """A flat YOLO folder: classes.txt, a.jpg with two boxes, and what `extra` adds."""
    make_image(root / "a.jpg")
    (root / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.1 0.1\n")
    (root / "classes.txt").write_text("cat\n")
    extra(root)
    return root


def _voc_listed_missing(root: Path) -> Path:
    make_image(root / "JPEGImages" / "a.jpg")
    obj = "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
    for stem in ("a", "b"):
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename>{obj * (1 if stem == 'a' else 3)}</annotation>")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    return root


READ_TIME_LOSSES = [
    # (name, format, build, the reason, boxes that went with the image)
    ("yolo: a label file without its image", "yolo",
     lambda r: _yolo_flat(r, lambda d: (d / "gone.txt").write_text("0 .5 .5 .1 .1\n0 .5 .5 .2 .2\n\n0 .1 .1 .1 .1\n")),
     "missing_image", 3),
    ("yolo: an image that does not decode", "yolo",
     lambda r: _yolo_flat(r, lambda d: ((d / "bad.jpg").write_bytes(b"not a jpeg"),
                                        (d / "bad.txt").write_text("0 .5 .5 .1 .1\n0 .5 .5 .2 .2\n"))),
     "unreadable_image", 2),
    ("voc: an ImageSets id whose image is missing", "voc", _voc_listed_missing, "missing_image", 3),
]


@pytest.mark.parametrize("name, fmt, build, reason, lost", READ_TIME_LOSSES, ids=[c[0] for c in READ_TIME_LOSSES])
def test_boxes_of_images_left_out_by_a_reader_are_counted(tmp_path: Path, name, fmt, build, reason, lost) -> None:
    src = build(tmp_path / "src")
    report = clipdata.convert(src, tmp_path / "out", format=fmt, skip_missing=True)
    prov = json.loads((tmp_path / "out" / "clipdata.json").read_text())
    boxes = prov["boxes"]
    assert boxes["skipped"].get(reason) == lost, boxes
    assert boxes["read"] == boxes["written"] + sum(boxes["skipped"].values())
    assert boxes["written"] == report.crops


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", ["notes.json", "labels.txt", "data.yaml"])
def test_a_pipe_beside_the_annotations_never_blocks_a_run(tmp_path: Path, coco_set: Path, name: str) -> None:
    """The resume fingerprint walks the source's folder: a FIFO there is stamped, never read."""
    os.mkfifo(coco_set.parent / name)
    r = subprocess.run([sys.executable, "-m", "clipdata.cli", "convert", "coco", str(coco_set), str(tmp_path / "out"),
                        "-q", "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "clipdata.json").read_text())["totals"]["crops"] >= 1
