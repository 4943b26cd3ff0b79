"""Benchmark `--export webdataset`: samples/s written as tar shards against the plain layout
(`clipdata convert` alone), and against webdataset's own `TarWriter` writing the same samples.
Prints ratios measured in one run (never part of the tests).

    python benchmarks/webdataset.py            # 1,000 source images, ~5,700 crops, 5 rounds
    python benchmarks/webdataset.py --quick    # a smaller smoke run
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This script's folder goes last on the path: first, this file would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
from convert import make_images  # noqa: E402  (the same synthetic photos and boxes)

import clipdata  # noqa: E402
from clipdata.formats.exports import ExportOptions  # noqa: E402
from clipdata.formats.exports import webdataset as wds_export  # noqa: E402


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def peer_tarwriter(out: Path, rows: list[dict], classes: list[str], shard_size: int, dest: Path) -> None:
    """webdataset's ShardWriter on the same samples (its default member metadata)."""
    import webdataset as wds
    index = {c: i for i, c in enumerate(classes)}
    dest.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(dest / "peer-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for n, r in enumerate(rows):
            sink.write({"__key__": f"{r['split']}_{n:09d}", "jpg": (out / r["path"]).read_bytes(),
                        "txt": r["caption"], "cls": index[r["class"]], "json": r})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--tmp", default=None)
    a = ap.parse_args()
    n_images, rounds = (100, 2) if a.quick else (a.images, a.rounds)
    tmp = Path(tempfile.mkdtemp(prefix="clipdata-wds-bench-", dir=a.tmp))
    try:
        ann = make_images(tmp / "src" / "images", n_images)
        times: dict[str, list[float]] = {"layout": [], "export": [], "peer": [], "layout+export": []}
        samples = 0
        for r in range(rounds):
            plain, both = tmp / f"plain{r}", tmp / f"both{r}"
            times["layout"].append(timed(lambda: clipdata.convert(ann, plain, format="coco")))
            rows = rows_of(plain)
            samples = len(rows)
            classes = sorted({row["class"] for row in rows})
            opts = ExportOptions(shard_size=a.shard_size, classes=tuple(classes))
            times["export"].append(timed(lambda: wds_export.export(plain, rows, opts)))
            times["peer"].append(timed(lambda: peer_tarwriter(plain, rows, classes, a.shard_size, tmp / f"peer{r}")))
            times["layout+export"].append(timed(lambda: clipdata.convert(
                ann, both, format="coco", export="webdataset", shard_size=a.shard_size)))
            shutil.rmtree(plain), shutil.rmtree(both), shutil.rmtree(tmp / f"peer{r}")
        print(f"{n_images} source images, {samples} crops, shards of {a.shard_size}, {rounds} rounds")
        for name, ts in times.items():
            print(f"  {name:14} best {min(ts):6.2f} s  {samples / min(ts):9,.0f} samples/s")
        paired = lambda x, y: statistics.median(p / q for p, q in zip(times[x], times[y]))  # noqa: E731
        print(f"  export alone vs the layout: {paired('layout', 'export'):.1f}x the samples/s (median of rounds)")
        print(f"  export vs webdataset.ShardWriter: {paired('peer', 'export'):.2f}x the samples/s")
        print(f"  the export adds {100 * statistics.median(e / l for e, l in zip(times['export'], times['layout'])):.0f}%"
              f" to a plain convert's time; convert --export webdataset took {paired('layout+export', 'layout'):.2f}x it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
