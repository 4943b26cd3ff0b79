"""Conversion at scale and under faults: streaming parse, workers, kill and resume."""
import json
import signal
import subprocess
import sys
import time

import pytest

import clipdata
from clipdata.errors import OutputError, SourceError
from clipdata.formats import coco
from PIL import Image

from helpers import FIXTURES, make_image, tree_bytes


def big_set(tmp_path, n=60, boxes=4):
    """n noisy 400x300 photos (slow enough to encode that a run can be killed half-way)."""
    (tmp_path / "src" / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        Image.effect_noise((400, 300), 40 + i % 50).convert("RGB").save(tmp_path / "src" / "images" / f"{i:04}.jpg")
        images.append({"id": i + 1, "file_name": f"{i:04}.jpg", "width": 400, "height": 300})
        for k in range(boxes):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + k % 3,
                         "bbox": [k * 30, k * 20, 250, 200], "iscrowd": int(k == 3 and i % 5 == 0)})
    # annotations first: the order of the keys in a COCO file is not guaranteed
    path = tmp_path / "src" / "annotations.json"
    path.write_text(json.dumps({"annotations": anns, "categories": [
        {"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}], "images": images}))
    return path


@pytest.mark.parametrize("rel", [
    "sahi/combined_coco.json", "sahi/terrain_all_coco.json", "sahi/visdrone2019-det-train-first50image.json",
    "datumaro/coco_dataset/coco/annotations/instances_val.json",
])
def test_streamed_parse_equals_whole_file_parse(monkeypatch, rel):
    whole = coco.read(FIXTURES / rel)
    monkeypatch.setattr(coco, "STREAM_BYTES", 0)
    streamed = coco.read(FIXTURES / rel)
    assert streamed.samples == whole.samples and streamed.classes == whole.classes
    assert streamed.skipped == whole.skipped and streamed.notes == whole.notes


@pytest.mark.parametrize("text, fragment", [
    ('{"categories": [], "images": [1, 2,\n {"a": }]}', "malformed JSON"),
    ('[1, 2]', 'no "categories" list'),
    # streamed, a non-list "annotations" holds no items: caught as an empty conversion
    ('{"categories": [], "images": [{"id": 1, "file_name": "a.jpg"}], "annotations": {}}', "nothing to convert"),
])
def test_streamed_parse_errors(monkeypatch, tmp_path, text, fragment):
    monkeypatch.setattr(coco, "STREAM_BYTES", 0)
    f = tmp_path / "x.json"
    f.write_text(text)
    make_image(tmp_path / "a.jpg")  # on disk: the image is found, only its labels are absent
    with pytest.raises(SourceError, match=fragment):
        clipdata.convert(f, tmp_path / "out", format="coco")
    assert not (tmp_path / "out").exists()


def test_any_worker_count_gives_the_same_bytes(tmp_path):
    f = big_set(tmp_path)
    one = clipdata.convert(f, tmp_path / "one", format="coco", workers=1)
    two = clipdata.convert(f, tmp_path / "two", format="coco", workers=2)
    assert one.crops == two.crops == 228 and tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "clipdata.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kw)


def test_killed_run_resumes_to_identical_output(tmp_path):
    f = big_set(tmp_path, n=300, boxes=4)
    reference = tmp_path / "reference"
    clipdata.convert(f, reference, format="coco", workers=1)

    out = tmp_path / "out"
    args = ["convert", "coco", str(f), str(out), "--workers", "1", "-q"]
    proc = _run(args)
    journal = out / ".clipdata-journal.jsonl"

    def crops() -> int:  # crops on disk: the journal is written in batches a second or more apart,
        # and on a fast machine the first batch held all 300 images (nothing left to resume)
        return sum(1 for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))

    deadline = time.time() + 60
    while time.time() < deadline:  # wait until a part of the images is done, then kill
        if out.is_dir() and crops() >= 40:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "clipdata.json").exists() and not (out / "manifest.jsonl").exists()
    assert journal.is_file() and 40 <= crops() < 1200  # killed mid-run

    r = subprocess.run([sys.executable, "-m", "clipdata.cli", *args], capture_output=True, text=True)
    assert r.returncode == 1 and "--resume" in r.stderr  # plain re-run refuses
    r = subprocess.run([sys.executable, "-m", "clipdata.cli", *args, "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert tree_bytes(out) == tree_bytes(reference)


def test_resume_checks_the_command(tmp_path):
    f = big_set(tmp_path, n=4)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".clipdata-journal.jsonl").write_text('{"clipdata_journal": 1, "fingerprint": "other"}\n')
    with pytest.raises(OutputError, match="other options"):
        clipdata.convert(f, out, format="coco", resume=True)
    clipdata.convert(f, out, format="coco", overwrite=True)
    with pytest.raises(OutputError, match="nothing to resume"):
        clipdata.convert(f, out, format="coco", resume=True)


def test_resume_with_nothing_started_runs_normally(tmp_path):
    f = big_set(tmp_path, n=4)
    report = clipdata.convert(f, tmp_path / "fresh", format="coco", resume=True)
    assert report.crops == 15 and not (tmp_path / "fresh" / ".clipdata-journal.jsonl").exists()
