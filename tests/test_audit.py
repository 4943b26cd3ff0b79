"""clipdata audit on the tiny shapes CLIP: planted label flips come first, the JSON lines and
the page say what they promise, the layout is untouched, bad input stops in one line."""
import json
import random
import shutil

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")

import clipdata.cli.learn  # noqa: E402,F401  (registers prompts and audit)
from clipdata.cli import app  # noqa: E402
from clipdata.commands.audit import audit  # noqa: E402
from clipdata.errors import LayoutError, OptionError, OutputError  # noqa: E402
from helpers import SHAPES_MODEL as MODEL, needs_shapes_model, shapes_spec, tree_bytes, world  # noqa: E402

pytestmark = needs_shapes_model
spec = pytest.fixture(scope="module", name="spec")(shapes_spec)


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """16 classes x 10 images, 10% of them moved into a wrong class folder (renamed flip_*)."""
    root = tmp_path_factory.mktemp("audit") / "layout"
    world.write_layout(root, {"train": 10}, seed=3001)
    rnd = random.Random(7)
    files = sorted(root.glob("train/*/*.jpg"))
    flips = rnd.sample(files, len(files) // 10)
    for f in flips:
        other = rnd.choice([c for c in world.classes() if c != f.parent.name])
        f.rename(root / "train" / other / f"flip_{f.name}")
    return root, len(flips)


def test_planted_flips_come_first(spec, flipped, tmp_path):
    root, n_flipped = flipped
    before = tree_bytes(root)
    jl, page = tmp_path / "suspects.jsonl", tmp_path / "suspects.html"
    r = audit(root, spec=spec, cache_dir=tmp_path / "cache", jsonl=jl, html_path=page)
    top = r.rows[:n_flipped]
    precision = sum(row["path"].split("/")[-1].startswith("flip_") for row in top) / n_flipped
    assert precision >= 0.8
    rows = [json.loads(line) for line in jl.read_text().splitlines()]
    assert rows == r.rows and len(rows) == r.images == 160
    assert sorted(row["path"] for row in rows) == sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert all(row["label"] == row["path"].split("/")[1] and row["suggested"] != row["label"] for row in rows)
    flags = [row["flagged"] for row in rows]
    assert flags == sorted(flags, reverse=True) and sum(flags) == r.flagged
    scores = [row["score"] for row in rows if row["flagged"]]
    assert scores == sorted(scores, reverse=True)
    html = page.read_text()
    first = rows[0]["path"].split("/")[-1]
    assert first in html and html.count("<figure>") > r.flagged
    assert tree_bytes(root) == before


def test_a_clean_layout_has_few_flags(spec, tmp_path):
    root = tmp_path / "clean"
    world.write_layout(root, {"train": 10}, seed=3002)
    r = audit(root, spec=spec, cache_dir=tmp_path / "cache")
    assert r.flagged < 0.05 * r.images


def test_a_class_with_one_image_is_scored_zero_shot(spec, flipped, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(flipped[0], root)
    for p in sorted((root / "train" / "red star").iterdir())[1:]:
        p.unlink()
    r = audit(root, spec=spec, cache_dir=tmp_path / "cache")
    assert any("'red star' has 1 image" in n and "zero-shot" in n for n in r.notes)
    assert len(r.rows) == r.images


@pytest.mark.parametrize("mend, kwargs, error, words", [
    ("one_class", {}, LayoutError, "needs at least two"),
    ("misaligned", {}, LayoutError, "caption line(s) for 16 class folder(s)"),
    (None, {"splits": ["nope"]}, OptionError, "--split 'nope'"),
    (None, {"jsonl": "inside"}, OutputError, "inside the layout"),
])
def test_bad_input(spec, flipped, tmp_path, mend, kwargs, error, words):
    root = tmp_path / "copy"
    shutil.copytree(flipped[0], root)
    if mend == "one_class":
        for d in sorted(d for d in (root / "train").iterdir() if d.is_dir())[1:]:
            shutil.rmtree(d)
        (root / "train" / "_tokenization.txt").write_text("a photo of a blue circle")
    elif mend == "misaligned":
        (root / "train" / "_tokenization.txt").write_text("a photo of a blue circle\n")
    if kwargs.get("jsonl") == "inside":
        kwargs = {"jsonl": root / "suspects.jsonl"}
    with pytest.raises(error) as e:
        audit(root, spec=spec, cache_dir=tmp_path / "cache", **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_cli(flipped, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["audit", str(flipped[0]), "--model", str(MODEL), "--dtype", "float32",
                              "--cache-dir", str(tmp_path / "c"), "--top", "5"])
    assert res.exit_code == 0, res.output
    assert "flagged" in res.output and "flip_" in res.output
    res = runner.invoke(app, ["audit", str(tmp_path / "missing"), "--model", str(MODEL)])
    assert res.exit_code == 1 and "Traceback" not in res.output
