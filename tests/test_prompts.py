"""clipdata prompts on the tiny shapes CLIP: the written ontology is what eval scores it at,
misleading candidates are not chosen, the inputs stay untouched, bad input stops in one line."""
import json
import shutil

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")

import clipdata.cli.learn  # noqa: E402,F401  (registers prompts and audit)
from clipdata.captions import load_ontology  # noqa: E402
from clipdata.cli import app  # noqa: E402
from clipdata.commands.evaluate import evaluate  # noqa: E402
from clipdata.commands.prompts import prompts  # noqa: E402
from clipdata.errors import LayoutError, OptionError, OutputError  # noqa: E402
from helpers import SHAPES_MODEL as MODEL, needs_shapes_model, shapes_spec, tree_bytes, world  # noqa: E402

pytestmark = needs_shapes_model
spec = pytest.fixture(scope="module", name="spec")(shapes_spec)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts") / "layout"
    world.write_layout(root, {"train": 6, "test": 4}, seed=2001)
    return root


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """Per class: the colourless caption (misleading) and two that name colour and shape."""
    f = tmp_path_factory.mktemp("cands") / "candidates.yaml"
    lines = ["classes:"]
    for c in world.classes():
        colour, shape = c.split()
        lines += [f"  {c}:", "    captions:", f"      - a photo of a {shape}", f"      - a {c}",
                  f"      - a picture of a {colour} {shape}"]
    f.write_text("\n".join(lines) + "\n")
    return f


def test_chosen_ontology_scores_on_eval_as_reported(spec, layout, candidates, tmp_path):
    before = tree_bytes(layout)
    cand_bytes = candidates.read_bytes()
    out, js = tmp_path / "best.yaml", tmp_path / "prompts.json"
    r = prompts(layout, out, ontologies=[candidates], templates=["{}"], library=False, spec=spec,
                cache_dir=tmp_path / "cache", json_path=js)
    assert r.search_splits == ["train"] and r.heldout_split == "test"
    onto = load_ontology(out)  # the existing schema, readable as it is
    assert sorted(onto.captions) == world.classes()
    ev = evaluate(layout, split="test", ontologies=[out], use_layout=False, spec=spec, cache_dir=tmp_path / "cache")
    assert ev.sets[0].top1 == pytest.approx(r.heldout_top1)
    # the colourless wording scores near chance; it is never the choice for a class
    for cls, cand in r.chosen.items():
        assert cand.captions != [f"a photo of a {cls.split()[1]}"]
    colourless = next(s for s in r.sets if s.name == "candidates.yaml")
    assert r.heldout_top1 >= r.layout_set.heldout_top1 - 0.05
    data = json.loads(js.read_text())
    # per class: the layout caption, "{}", the file's three captions and their ensemble
    assert {c: len(v) for c, v in data["candidates"].items()} == {c: 6 for c in world.classes()}
    assert all(0 <= o["top1_if_chosen"] <= 1 for v in data["candidates"].values() for o in v)
    assert data["cv_top1"] == r.cv_top1 and data["mode"] in ("set", "class")
    assert colourless.top1 == data["prompt_sets"][-1]["top1"]
    assert tree_bytes(layout) == before and candidates.read_bytes() == cand_bytes


def test_the_template_library_is_searched(spec, layout, tmp_path):
    r = prompts(layout, tmp_path / "best.yaml", spec=spec, cache_dir=tmp_path / "cache")
    names = [s.name for s in r.sets]
    assert len(names) == 1 + 80 + 2 and "imagenet-80" in names and "clip-7" in names
    assert r.best_template.name in names and r.best_template.top1 == max(
        s.top1 for s in r.sets if "{" in s.name)


def _copy(layout, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(layout, dst)
    return dst


def _one_class(lay):
    for d in sorted(d for d in (lay / "train").iterdir() if d.is_dir())[1:]:
        shutil.rmtree(d)
    (lay / "train" / "_tokenization.txt").write_text("a photo of a blue circle")
    shutil.rmtree(lay / "test")


def _misaligned(lay):
    (lay / "train" / "_tokenization.txt").write_text("a photo of a blue circle\n")


def _single_image(lay):
    folder = lay / "train" / "blue circle"
    for p in sorted(folder.iterdir())[1:]:
        p.unlink()


@pytest.mark.parametrize("mend, error, words", [
    (_one_class, LayoutError, "needs at least two"),
    (_misaligned, LayoutError, "caption line(s) for 16 class folder(s)"),
    (_single_image, None, "has 1 image(s) in train"),
])
def test_bad_layouts(spec, layout, tmp_path, mend, error, words):
    lay = _copy(layout, tmp_path)
    mend(lay)
    if error is None:
        r = prompts(lay, tmp_path / "best.yaml", library=False, templates=["a {}"], spec=spec,
                    cache_dir=tmp_path / "cache")
        assert any(words in n for n in r.notes)
        assert "blue circle" in load_ontology(tmp_path / "best.yaml").captions
        return
    with pytest.raises(error) as e:
        prompts(lay, tmp_path / "best.yaml", library=False, spec=spec, cache_dir=tmp_path / "cache")
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "best.yaml").exists()


def test_bad_options(spec, layout, candidates, tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text("classes:\n  blue circle: a blue circle\n")
    cases = [
        (dict(out_yaml=tmp_path / "b.yaml", ontologies=[partial]), OptionError, "no candidate caption for class(es)"),
        (dict(out_yaml=layout / "best.yaml"), OutputError, "inside the layout"),
        (dict(out_yaml=candidates, ontologies=[candidates]), OutputError, "also a candidate file"),
        (dict(out_yaml=tmp_path / "b.yaml", split="nope"), OptionError, "--split 'nope'"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error) as e:
            prompts(layout, library=False, spec=spec, cache_dir=tmp_path / "cache", **kwargs)
        assert words in str(e.value), kwargs
    assert not (layout / "best.yaml").exists()


def test_cli(spec, layout, tmp_path):
    runner = CliRunner()
    out = tmp_path / "best.yaml"
    res = runner.invoke(app, ["prompts", str(layout), "--out", str(out), "--no-library", "--template", "a {}",
                              "--model", str(MODEL), "--dtype", "float32", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "chosen" in res.output and out.is_file()
    res = runner.invoke(app, ["prompts", str(tmp_path / "missing"), "--out", str(out), "--model", str(MODEL)])
    assert res.exit_code == 1 and "Traceback" not in res.output
