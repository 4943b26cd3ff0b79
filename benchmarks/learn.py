"""Benchmark the commands that learn from labels, on the shapes world with the shipped tiny
CLIP (samples/models/shapes-clip). Prints, in one run:

  (a) prompts: held-out top-1 of the chosen ontology against the best prompt set on the test
      split and the layout's own captions, from candidates that include misleading wordings;
      and its time against one eval run, both with a cold image cache
  (b) few-shot: label --train-from on classes renamed k01..k16 (zero-shot at chance), with 4
      and 16 labeled images per class, against a plain logistic probe on the same embeddings;
      and with the real names, the chosen scorer against zero-shot
  (c) audit: top-K precision with 10% of the labels flipped, and the flagged share when none is
  (d) the loop: corrections a simulated reviewer makes (top 50 per round) until 99% of 1,000
      labels are right, in review order against file order
  (e) fit time of the probe with its cross-validation on 4,000 random 512-d embeddings, 16 classes

    pip install -e ".[clip]" && python benchmarks/learn.py
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "samples"))
import shapes_world as world  # noqa: E402

from clipdata import probe  # noqa: E402
from clipdata.commands.audit import audit  # noqa: E402
from clipdata.commands.evaluate import evaluate  # noqa: E402
from clipdata.commands.label import label, review_ranks  # noqa: E402
from clipdata.commands.prompts import prompts  # noqa: E402
from clipdata.embedding import EngineSpec, embed_paths, embed_texts, model_scalars  # noqa: E402

MODEL = ROOT / "samples" / "models" / "shapes-clip"
SPEC = EngineSpec(model=str(MODEL), dtype="float32", batch_size=64)


def candidates_file(path: Path) -> Path:
    """Per class: the colourless caption (misleading, ~12.5% alone) beside wordings that name both."""
    lines = ["classes:"]
    for c in world.classes():
        colour, shape = c.split()
        lines += [f"  {c}:", "    captions:", f"      - a photo of a {shape}", f"      - a {shape} shape",
                  f"      - a {c}", f"      - a drawing of a {colour} {shape}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_prompts(tmp: Path) -> None:
    lay = tmp / "prompts_layout"
    world.write_layout(lay, {"train": 20, "test": 25}, seed=11)
    cands = candidates_file(tmp / "candidates.yaml")
    r = prompts(lay, tmp / "best.yaml", ontologies=[cands], spec=SPEC, cache_dir=tmp / "c_prompts")
    best = max(r.sets, key=lambda s: s.heldout_top1)
    print(f"(a) prompts on {r.images} train / {r.heldout_images} test images, {len(r.sets)} prompt sets "
          f"(mode {r.mode}, cross-validated {r.cv_top1:.3f})")
    print(f"    chosen: test top-1 {r.heldout_top1:.3f}; best prompt set on test ({best.name}) {best.heldout_top1:.3f} "
          f"(gap {best.heldout_top1 - r.heldout_top1:+.3f}); layout captions {r.layout_set.heldout_top1:.3f}")
    cf = next(s for s in r.sets if s.name == cands.name)
    print(f"    the candidate file ensembled as one set: {cf.heldout_top1:.3f}")
    big = tmp / "cost_layout"
    world.write_layout(big, {"test": 32}, seed=12)  # 512 images
    t0 = time.perf_counter()
    evaluate(big, spec=SPEC, cache_dir=tmp / "c_eval")
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = prompts(big, tmp / "best_cost.yaml", spec=SPEC, cache_dir=tmp / "c_cost")
    t_prompts = time.perf_counter() - t0
    print(f"    cost, {p.images} images x {len(p.sets) - 1} templates/ensembles: eval {t_eval:.1f}s, "
          f"prompts {t_prompts:.1f}s, ratio {t_prompts / t_eval:.2f} (both with a cold image cache)")


def _fewshot_layout(src: Path, dst: Path, per_class: int, names: dict[str, str]) -> Path:
    (dst / "train").mkdir(parents=True)
    for c in world.classes():
        files = sorted((src / "train" / c).iterdir())[:per_class]
        (dst / "train" / names[c]).mkdir()
        for f in files:
            shutil.copy(f, dst / "train" / names[c] / f.name)
    (dst / "train" / "_tokenization.txt").write_text("\n".join(f"a photo of a {names[c]}" for c in world.classes()))
    return dst


def bench_fewshot(tmp: Path) -> None:
    src = tmp / "fewshot_src"
    world.write_layout(src, {"train": 16}, seed=21)
    truth = world.write_unlabeled(tmp / "fewshot_unlabeled", 400, seed=22)
    codes = {c: f"k{i + 1:02}" for i, c in enumerate(world.classes())}
    same = {c: c for c in world.classes()}
    print("(b) few-shot, 400 unlabeled images")
    for names, tag in ((codes, "codes k01..k16"), (same, "real names")):
        for per_class in (4, 16):
            lay = _fewshot_layout(src, tmp / f"fs_{tag[:4]}_{per_class}", per_class, names)
            out = tmp / f"fs_out_{tag[:4]}_{per_class}"
            t0 = time.perf_counter()
            r = label(tmp / "fewshot_unlabeled", out, train_from=lay, spec=SPEC, cache_dir=tmp / "c_fs")
            secs = time.perf_counter() - t0
            rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
            acc = np.mean([x["top_k"][0]["class"] == names[truth[x["path"]]] for x in rows])
            label(tmp / "fewshot_unlabeled", tmp / f"zs_{tag[:4]}_{per_class}", from_layout=lay / "train",
                       spec=SPEC, cache_dir=tmp / "c_fs")
            zrows = [json.loads(x) for x in (tmp / f"zs_{tag[:4]}_{per_class}" / "predictions.jsonl").read_text().splitlines()]
            zacc = np.mean([x["top_k"][0]["class"] == names[truth[x["path"]]] for x in zrows])
            plain = _plain_probe(lay, tmp / "fewshot_unlabeled", truth, names, tmp / "c_fs")
            print(f"    {tag}, {per_class:2d}/class: --train-from {acc:.3f} ({r.scorer}, {secs:.1f}s), "
                  f"zero-shot {zacc:.3f}, plain probe {plain:.3f} (gap {acc - plain:+.3f}); "
                  f"cv {json.dumps({k: round(v, 3) for k, v in r.cv_accuracies.items()})}")


def _plain_probe(lay: Path, unlabeled: Path, truth: dict, names: dict[str, str], cache: Path) -> float:
    """The same fit with a zero text initialisation: ordinary L2 logistic regression, strength by CV."""
    classes = sorted(names.values())
    train = sorted(lay.glob("train/*/*.jpg"))
    test = sorted(unlabeled.glob("*.jpg"))
    with embed_paths(SPEC, train + test, cache) as emb:
        _, scale, _ = model_scalars(emb.engine, emb.cache)
        x = emb.matrix.astype(np.float64)
    y = np.array([classes.index(p.parent.name) for p in train])
    grid = [10.0 ** e for e in range(1, -8, -1)]
    p = probe.fit_probe(x[:len(train)], y, np.zeros((len(classes), x.shape[1])), scale, strengths=grid,
                        blend_weights=(1.0,))
    want = np.array([classes.index(names[truth[t.name]]) for t in test])
    return float((p.proba(x[len(train):]).argmax(axis=1) == want).mean())


def bench_audit(tmp: Path) -> None:
    lay = tmp / "audit_layout"
    world.write_layout(lay, {"train": 20}, seed=31)
    clean = audit(lay, spec=SPEC, cache_dir=tmp / "c_audit")
    rnd = random.Random(32)
    files = sorted(lay.glob("train/*/*.jpg"))
    flips = rnd.sample(files, len(files) // 10)
    for f in flips:
        other = rnd.choice([c for c in world.classes() if c != f.parent.name])
        f.rename(lay / "train" / other / f"flip_{f.name}")
    r = audit(lay, spec=SPEC, cache_dir=tmp / "c_audit")
    k = len(flips)
    hit = sum(x["path"].rsplit("/", 1)[-1].startswith("flip_") for x in r.rows[:k])
    print(f"(c) audit, {r.images} images, {k} flipped: top-{k} precision {hit / k:.3f}, flagged {r.flagged} "
          f"(scorer {r.scorer}); unflipped layout: {clean.flagged} flagged ({clean.flagged / clean.images:.1%})")


def bench_loop(tmp: Path, n: int, per_round: int) -> None:
    truth = world.write_unlabeled(tmp / "loop", n, seed=41)
    classes = world.classes()
    paths = sorted((tmp / "loop").glob("*.jpg"))
    y = np.array([classes.index(truth[p.name]) for p in paths])
    rels = [p.name for p in paths]
    with embed_paths(SPEC, paths, tmp / "c_loop") as emb:
        _, scale, _ = model_scalars(emb.engine, emb.cache)
        text = embed_texts(emb.engine, [f"a photo of a {c}" for c in classes], emb.cache).astype(np.float64)
        x = emb.matrix.astype(np.float64)
    for order in ("review order", "file order"):
        reviewed = np.zeros(n, bool)
        corrections, rounds = 0, 0
        probs = probe.zero_shot_proba(x, text, scale)
        while True:
            labels = np.where(reviewed, y, probs.argmax(axis=1))
            if (labels == y).mean() >= 0.99 or reviewed.all():
                break
            todo = np.flatnonzero(~reviewed)
            if order == "review order":
                ranks = review_ranks(probs[todo], [rels[i] for i in todo])
                batch = todo[np.argsort(ranks, kind="stable")[:per_round]]
            else:
                batch = todo[:per_round]
            corrections += int((labels[batch] != y[batch]).sum())
            reviewed[batch] = True
            rounds += 1
            fit = probe.fit_probe(x[reviewed], y[reviewed], text, scale)  # label --train-from the reviewed layout
            probs = fit.proba(x)
        print(f"    {order}: {corrections} corrections, {reviewed.sum()} images reviewed in {rounds} rounds, "
              f"final accuracy {(labels == y).mean():.3f}")


def bench_fit(n: int = 4000, d: int = 512, k: int = 16) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(k), n // k)
    x = centres[y] + 1.5 * rng.normal(size=(len(y), d)) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    text = rng.normal(size=(k, d))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    probe.fit_probe(x[:32], y[:32], text, 100.0)  # imports torch
    t0 = time.perf_counter()
    p = probe.fit_probe(x, y, text, 100.0)
    print(f"(e) fit_probe on {n} x {d}, {k} classes, 5 folds x {len(probe.STRENGTHS)} strengths + the final fit: "
          f"{time.perf_counter() - t0:.1f}s ({p.scorer}, cv {p.cv_accuracy:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["prompts", "fewshot", "audit", "loop", "fit"], action="append")
    ap.add_argument("--loop-images", type=int, default=1000)
    args = ap.parse_args()
    only = set(args.only or ["prompts", "fewshot", "audit", "loop", "fit"])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "prompts" in only:
            bench_prompts(tmp)
        if "fewshot" in only:
            bench_fewshot(tmp)
        if "audit" in only:
            bench_audit(tmp)
        if "loop" in only:
            print(f"(d) the loop, {args.loop_images} unlabeled images, 50 reviewed per round, until 99% right")
            bench_loop(tmp, args.loop_images, 50)
        if "fit" in only:
            bench_fit()


if __name__ == "__main__":
    main()
