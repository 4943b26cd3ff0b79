"""`clipdata check` on planted problems, the false findings on clean layouts, and the
agreement of its `label` kind with `clipdata audit` (the figures of formats/check.md).

    pip install -e ".[clip,check,test]" && python benchmarks/check_planted.py [--seeds 3] [--train 4 --valid 2 --test 3]
                                                                               [--audit-scale 300] [--keep DIR]

For each seed: a shapes-world layout (16 classes; --train/--valid/--test images per class
and split), checked clean, then with the problems tests/test_check.py plants (the same
function): five copies of test images in train (exact, JPEG quality 70, half size,
mirrored, centre crop 90%), a dark, a blurred and a constant image, a truncated file, two
flipped labels, a class left with 2 images. Counted: each planted problem found or not (as
the kind and type it should be); every other finding (one that names no planted image or
class) is a false finding, by kind. `audit` runs on the same layout with the same model and
cache: its flagged images beside check's `label` findings (both / only check / only audit).
With --audit-scale N (images per class in train), one more layout, large enough that check
cross-validates its probe on a sample (above LABEL_BUDGET image-classes) while audit
cross-validates on every image: the agreement where the two part ways by design.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import shapes_spec, world  # noqa: E402
from test_check import _plant  # noqa: E402  (the test's own plants)

import clipdata  # noqa: E402


def _about_planted(f: dict, what: dict) -> bool:
    paths = {p for pair in what["copies"].values() for p in pair} | set(what["quality"].values())
    paths |= set(what["flips"]) | {what["undecodable"]}
    return bool(paths & set(f["paths"])) or what["thin"] in f.get("classes", ())


def _found(r, what: dict) -> dict[str, tuple[int, int]]:
    """Planted problem -> (found, planted)."""
    of = lambda kind: [f for f in r.findings if f["kind"] == kind]  # noqa: E731
    out = {}
    for name, (test_img, copy) in what["copies"].items():
        want = "exact" if name == "exact" else "near"
        out[f"leakage {name}"] = (int(any(test_img in f["paths"] and copy in f["paths"] and f["type"] == want
                                          for f in of("leakage"))), 1)
    quality = {(f["type"], f["paths"][0]) for f in of("quality")}
    for name, type_ in (("dark", "dark"), ("blurry", "blurry"), ("constant", "low_information")):
        out[f"quality {name}"] = (int((type_, what["quality"][name]) in quality), 1)
    out["quality undecodable"] = (int(("undecodable", what["undecodable"]) in quality), 1)
    suspects = {f["paths"][0] for f in of("label")}
    out["label flipped"] = (len(set(what["flips"]) & suspects), len(what["flips"]))
    thin = {f["type"] for f in of("balance") if f["classes"] == [what["thin"]]}
    out["balance too_few"] = (int("too_few" in thin), 1)
    return out


def _agreement(r, layout: Path, spec, cache: Path) -> tuple[int, int, int, float]:
    """(both, only check, only audit, audit seconds)."""
    t0 = time.perf_counter()
    a = clipdata.audit(layout, spec=spec, cache_dir=cache)
    secs = time.perf_counter() - t0
    theirs = {row["path"] for row in a.rows if row["flagged"]}
    mine = {f["paths"][0] for f in r.findings if f["kind"] == "label"}
    return len(mine & theirs), len(mine - theirs), len(theirs - mine), secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train", type=int, default=4)
    ap.add_argument("--valid", type=int, default=2)
    ap.add_argument("--test", type=int, default=3)
    ap.add_argument("--audit-scale", type=int, default=0, help="images per class in train of the sampled-probe layout")
    ap.add_argument("--keep", type=Path, help="build here and keep it (the planted report is r.html)")
    args = ap.parse_args()
    spec = shapes_spec()
    per = {"train": args.train, "valid": args.valid, "test": args.test}
    found: Counter = Counter()
    planted: Counter = Counter()
    false_planted: Counter = Counter()
    false_clean: Counter = Counter()
    images = {"planted": 0, "clean": 0}
    agree = Counter()
    cpu0, load0 = os.times(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for s in range(args.seeds):
            seed = 4101 + s
            work = base / f"seed{seed}"
            clean = work / "clean"
            world.write_layout(clean, per, seed=seed)
            rc = clipdata.check(clean, spec=spec, cache_dir=work / "cache")
            images["clean"] += rc.images
            false_clean.update(f["kind"] for f in rc.findings)
            lay = work / "layout"
            world.write_layout(lay, per, seed=seed)
            what = _plant(lay)
            r = clipdata.check(lay, spec=spec, cache_dir=work / "cache", json_path=work / "r.json",
                               html_path=work / "r.html")
            images["planted"] += r.images
            for k, (f, n) in _found(r, what).items():
                found[k] += f
                planted[k] += n
            false_planted.update(f["kind"] for f in r.findings if not _about_planted(f, what))
            for name, layout, rep in (("clean", clean, rc), ("planted", lay, r)):
                both, mine, theirs, _ = _agreement(rep, layout, spec, work / "cache")
                agree[f"{name} both"] += both
                agree[f"{name} only check"] += mine
                agree[f"{name} only audit"] += theirs
            print(f"seed {seed}: clean {dict(rc.by_kind)}; planted {dict(r.by_kind)}", flush=True)
        big = None
        if args.audit_scale:
            lay = base / "scale"
            world.write_layout(lay, {"train": args.audit_scale, "test": max(1, args.audit_scale // 10)}, seed=4200)
            t0 = time.perf_counter()
            r = clipdata.check(lay, kinds="label", spec=spec, cache_dir=base / "scale-cache")
            secs = time.perf_counter() - t0
            both, mine, theirs, asecs = _agreement(r, lay, spec, base / "scale-cache")
            big = {"images": r.images, "check label": both + mine, "audit": both + theirs, "both": both,
                   "only check": mine, "only audit": theirs, "scorer": r.label_scorer, "notes": r.notes,
                   "check s (embeds the images)": round(secs, 1), "audit s (cache warm)": round(asecs, 1)}
    cpu1 = os.times()
    out = {"layout per class": per, "seeds": args.seeds, "images": images,
           "planted found": {k: f"{found[k]}/{planted[k]}" for k in planted},
           "false findings, planted layouts": dict(false_planted), "false findings, clean layouts": dict(false_clean),
           "label vs audit (images)": dict(agree), "sampled probe vs audit": big,
           "cpu_seconds": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
           "load_average": [round(load0, 1), round(os.getloadavg()[0], 1)]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
