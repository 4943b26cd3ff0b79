"""clipdata `embed` and `label` against their peers, at three photo sizes, in one run.

Every tool runs as a whole command in its own process (Python start, imports and model load
included, as a user times it), on the same photos, with the full-size ViT-B/32 architecture
(random weights: speed does not depend on weight values). The tools alternate within each
round, and the order rotates from round to round, so each pair shares the machine's load:

  clipdata embed, clipdata label         defaults (`--dtype auto`: bfloat16 only on a CPU
                                         with native bfloat16), cold cache
  clipdata embed --dtype float32         where auto picks bfloat16: like for like with the loop
  plain loop float32                     benchmarks/plain_loop.py: CLIPProcessor +
                                         get_image_features, batch 32 (what most scripts do)
  plain loop bfloat16                    the same with bfloat16 weights, where native
  clip-retrieval inference               hf_clip, batch 16, in its own environment
                                         (CLIP_RETRIEVAL, default /work/venvs/clipretrieval/bin)
  transformers pipeline                  zero-shot-image-classification, called per image
                                         (on --pipeline-images of the photos)

For each run: images/s (whole command), CPU seconds per image (user + system of the command's
process tree), and the 1-minute load average at its start and end. Ratios are the median of
the per-round ratios (two runs of one round are minutes apart at most). Also, per size and
round, in this process: the model alone on ready tensors and the fast decode path on one
core, the CPU limit 1 / (t_model + t_decode / cores), and clipdata's rate from its first
batch to its last (the part the limit describes); and a warm cache against a cold run.

    pip install -e ".[clip,embed,test]"
    python benchmarks/peers.py                    # about 15 minutes on a quiet 2-core machine
    python benchmarks/peers.py --quick            # a smoke run
    python benchmarks/peers.py --profile          # where the time goes, per image and stage
    python benchmarks/peers.py --json out.json    # also write every figure
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CLASSES = "circle,square,triangle,star,blob"
SIZES = {"320x240": (320, 240), "640x480": (640, 480), "1920x1080": (1920, 1080)}


def load() -> float:
    return os.getloadavg()[0]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_command(argv: list[str], images: int, env: dict) -> dict:
    """One whole command: wall seconds, CPU seconds of its process tree, the load around it."""
    before, cpu, t = load(), children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} {' '.join(argv[1:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"images": images, "wall": wall, "cpu": cpu, "images_per_s": images / wall, "cpu_ms_per_image":
            cpu / images * 1e3, "load": (before, load())}


def clip_retrieval_rate(out: Path) -> float | None:
    """clip-retrieval's own samples/s from its stats files (what it prints is always 0)."""
    counts, first, last = 0, None, None
    for f in out.glob("stats/*.json"):
        s = json.loads(f.read_text())
        counts += s.get("sample_count", 0)
        first = min(first or s["start_time"], s["start_time"]) if "start_time" in s else first
        last = max(last or s["end_time"], s["end_time"]) if "end_time" in s else last
    return counts / (last - first) if counts and first and last and last > first else None


def pipeline_main(images: str, model: str, n: int) -> None:
    """The transformers pipeline peer (run in its own process): one call per image."""
    from PIL import Image
    from transformers import pipeline

    clf = pipeline("zero-shot-image-classification", model=model, device="cpu")
    for p in sorted(Path(images).glob("*.jpg"))[:n]:
        clf(Image.open(p), candidate_labels=CLASSES.split(","))


def tools(model: Path, photos: Path, tmp: Path, native: bool, cr_bin: Path | None, pipeline_n: int) -> dict:
    """name -> (argv for a fresh output folder, images it embeds, folder to read stats from)."""
    py = sys.executable
    n = len(list(photos.glob("*.jpg")))

    def fresh(name: str) -> Path:
        d = tmp / "runs" / name
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(d.with_name(d.name + "-cache"), ignore_errors=True)
        d.parent.mkdir(parents=True, exist_ok=True)
        return d

    out: dict = {
        "clipdata embed": lambda: ([py, "-m", "clipdata.cli", "embed", str(photos), "--out", str(fresh("e")),
                                    "--model", str(model), "--cache-dir", str(tmp / "runs" / "e-cache"), "-q"], n),
        "clipdata label": lambda: ([py, "-m", "clipdata.cli", "label", str(photos), "--out", str(fresh("l")),
                                    "--classes", CLASSES, "--model", str(model), "-q"], n),
        "plain loop float32": lambda: ([py, str(ROOT / "benchmarks" / "plain_loop.py"), str(photos), str(model),
                                        str(fresh("p") ) + ".npy"], n),
    }
    if native:
        out["clipdata embed float32"] = lambda: (
            [py, "-m", "clipdata.cli", "embed", str(photos), "--out", str(fresh("e32")), "--model", str(model),
             "--dtype", "float32", "--cache-dir", str(tmp / "runs" / "e32-cache"), "-q"], n)
        out["plain loop bfloat16"] = lambda: ([py, str(ROOT / "benchmarks" / "plain_loop.py"), str(photos), str(model),
                                               str(fresh("pb")) + ".npy", "--dtype", "bfloat16"], n)
    if cr_bin is not None:
        out["clip-retrieval"] = lambda: ([str(cr_bin / "clip-retrieval"), "inference", "--input_dataset", str(photos),
                                          "--output_folder", str(fresh("cr")), "--clip_model", f"hf_clip:{model}",
                                          "--enable_text", "False", "--enable_metadata", "False",
                                          "--batch_size", "16", "--num_prepro_workers", "1"], n)
    if pipeline_n:
        out["transformers pipeline"] = lambda: ([py, __file__, "--pipeline-peer", str(photos), str(model),
                                                 str(pipeline_n)], min(n, pipeline_n))
    return out


def limit_and_steady(model: Path, photos: Path, tmp: Path) -> dict:
    """In this process: the model alone, the fast decode path on one core, the CPU limit, and
    clipdata's rate from the end of its first batch to its last image."""
    import torch

    import clipdata
    from clipdata.embedding import Engine, EngineSpec
    from clipdata.embedding.local import plan_for
    from clipdata.embedding.preprocess import FastPreprocess
    from clipdata.machine import default_workers

    spec = EngineSpec(model=str(model))
    engine = Engine(spec)
    plan = plan_for(engine.device, spec)
    threads = torch.get_num_threads()
    fast = FastPreprocess.from_processor(engine.processor.image_processor)
    paths = sorted(photos.glob("*.jpg"))[:24]
    torch.set_num_threads(1)
    t = time.thread_time()
    for p in paths:
        fast(p)
    t_decode = (time.thread_time() - t) / len(paths)
    torch.set_num_threads(plan.model_threads)
    x = torch.randn(plan.batch_size, 3, 224, 224)
    engine.embed_pixels(x)
    k, t = 0, time.perf_counter()
    while time.perf_counter() - t < 3.0:
        engine.embed_pixels(x)
        k += plan.batch_size
    t_model = (time.perf_counter() - t) / k
    torch.set_num_threads(threads)
    cores = default_workers()
    limit = 1 / (t_model + t_decode / cores)
    marks: list[tuple[int, float]] = []
    out = tmp / "runs" / "steady"
    shutil.rmtree(out, ignore_errors=True)
    clipdata.embed(photos, out, spec=spec, cache_dir=False,
                   progress=lambda done, total: marks.append((done, time.perf_counter())))
    first = next((d, t) for d, t in marks if d >= plan.batch_size)
    steady = (marks[-1][0] - first[0]) / (marks[-1][1] - first[1])
    return {"model_images_per_s": 1 / t_model, "decode_ms": t_decode * 1e3, "limit": limit, "steady": steady,
            "dtype": engine.dtype, "plan": plan.describe(), "load": load()}


def warm_against_cold(model: Path, photos: Path, tmp: Path, env: dict) -> dict:
    """clipdata label with a cold cache, then again with it warm: in this process (the API)
    and as whole commands (Python start and imports included)."""
    import clipdata
    from clipdata.embedding import EngineSpec

    spec = EngineSpec(model=str(model))
    out = tmp / "runs" / "warm"
    shutil.rmtree(out, ignore_errors=True)
    cold = clipdata.label(photos, out, classes=CLASSES, spec=spec).seconds
    warm = min(clipdata.label(photos, out, classes=CLASSES, spec=spec, overwrite=True).seconds for _ in range(3))
    argv = [sys.executable, "-m", "clipdata.cli", "label", str(photos), "--out", str(out), "--classes", CLASSES,
            "--model", str(model), "-q", "--overwrite"]
    shutil.rmtree(out, ignore_errors=True)
    n = len(list(photos.glob("*.jpg")))
    cold_cmd = run_command(argv, n, env)
    warm_cmd = min((run_command(argv, n, env) for _ in range(3)), key=lambda r: r["wall"])
    return {"api_cold_s": cold, "api_warm_s": warm, "api_ratio": cold / warm, "cmd_cold_s": cold_cmd["wall"],
            "cmd_warm_s": warm_cmd["wall"], "cmd_ratio": cold_cmd["wall"] / warm_cmd["wall"], "load": load()}


def profile(model: Path, photos: Path, tmp: Path, command: str) -> dict:
    """CPU milliseconds per image and stage of one clipdata run with everything on one thread
    (decode and model), so each stage's thread time is all the CPU it costs."""
    import cProfile
    import pstats

    import torch

    import clipdata
    import clipdata.embedding.local as local
    from clipdata.embedding import EngineSpec

    real = local.default_workers
    local.default_workers = lambda: 1  # the plan for one core: decode and model in this thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp / "runs" / f"profile-{command}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + "-cache"), ignore_errors=True)
    spec = EngineSpec(model=str(model))
    n = len(list(photos.glob("*.jpg")))
    prof = cProfile.Profile(time.thread_time)
    t = time.perf_counter()
    try:
        prof.enable()
        if command == "embed":
            clipdata.embed(photos, out, spec=spec, cache_dir=out.with_name(out.name + "-cache"))
        else:
            clipdata.label(photos, out, classes=CLASSES, spec=spec, cache_dir=out.with_name(out.name + "-cache"))
        prof.disable()
    finally:
        local.default_workers = real
        torch.set_num_threads(threads)
    wall = time.perf_counter() - t
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def cum(*keys: tuple[str, str]) -> float:
        return sum(ct for (f, _, fn), (_, _, _, ct, _) in stats.items()
                   if any(f.endswith(kf) and fn == kfn and "clipdata" in f for kf, kfn in keys))

    total = cum(("commands/embed.py", "embed")) if command == "embed" else cum(("commands/label.py", "label"))
    model_load = cum(("engine.py", "_load"))
    stages = {
        "engine set-up (torch and transformers imports, weights fingerprint)": cum(("engine.py", "__init__")),
        "model load (weights, processor)": model_load,
        "caption embeddings (model load excluded)": max(0.0, cum(("embedding/__init__.py", "embed_texts")) - model_load)
        if command == "label" else 0.0,
        "scan the folder": cum(("embedding/__init__.py", "scan_images")),
        "hashing (stat record, SHA-256)": cum(("cache.py", "file_hashes")) + cum(("commands/embed.py", "_hashes")),
        "cache lookup and writes": cum(("cache.py", "get"), ("cache.py", "put")),
        "decode + preprocess": cum(("local.py", "__getitem__")),
        "batching (collate)": cum(("local.py", "_collate")),
        "model (image tower)": cum(("engine.py", "embed_pixels")),
        "result writing": (cum(("embeddings.py", "write_part"), ("embeddings.py", "write_info"),
                                ("commands/embed.py", "_kept"), ("imagefiles.py", "displayed_size"))
                           if command == "embed" else
                           cum(("review.py", "write_predictions"), ("review.py", "write_review"),
                               ("review.py", "write_labelstudio"), ("commands/label.py", "_write_html"),
                               ("imagefiles.py", "displayed_size"), ("fsutil.py", "write_text"))),
    }
    if command == "label":  # zero-shot scoring is part of label's result
        stages["scoring"] = cum(("scoring.py", "zero_shot"))
    stages["other"] = max(0.0, total - sum(stages.values()))
    return {"images": n, "wall": wall, "cpu": total, "ms_per_image": {k: v / n * 1e3 for k, v in stages.items()},
            "load": load()}


def median_ratio(a: list[dict], b: list[dict], key: str) -> float:
    return statistics.median(x[key] / y[key] for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: " + ", ".join(SIZES))
    ap.add_argument("--images", type=int, default=192, help="photos per size (half at 1920x1080)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pipeline-images", type=int, default=32, help="photos the per-image pipeline embeds (0: skip)")
    ap.add_argument("--only", default="", help="comma-separated tool names to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="24 photos, one round")
    ap.add_argument("--profile", action="store_true", help="only the per-stage breakdown")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--pipeline-peer", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pipeline_peer:
        return pipeline_main(args.pipeline_peer[0], args.pipeline_peer[1], int(args.pipeline_peer[2]))
    if args.quick:
        args.images, args.rounds, args.pipeline_images = 24, 1, 8

    from label import make_photos
    from tiny_clip import VIT_B32_TEXT_FULL_VOCAB, VIT_B32_VISION, make_tiny_clip

    import torch
    import transformers

    from clipdata.machine import cpu_flags, cpu_model, default_workers, native_bf16

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cr = Path(os.environ.get("CLIP_RETRIEVAL", "/work/venvs/clipretrieval/bin"))
    cr_bin = cr if (cr / "clip-retrieval").exists() else None
    machine = {"cpu": cpu_model(), "cpus": default_workers(), "native_bfloat16": native_bf16(),
               "avx512": "avx512f" in cpu_flags(), "amx": "amx_bf16" in cpu_flags(), "torch": torch.__version__,
               "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"# {machine['cpu']}, {machine['cpus']} CPUs, native bfloat16: {machine['native_bfloat16']}, "
          f"torch {machine['torch']}, transformers {machine['transformers']}, {machine['date']}, load {load():.1f}")
    if cr_bin is None:
        print(f"# clip-retrieval not found in {cr} (set CLIP_RETRIEVAL to its bin folder): left out")
    tmp = Path(tempfile.mkdtemp(prefix="clipdata-peers-"))
    results: dict = {"machine": machine, "sizes": {}}
    try:
        model = make_tiny_clip(tmp / "vit-b32", text=VIT_B32_TEXT_FULL_VOCAB, vision=VIT_B32_VISION, projection_dim=512)
        for size_name in args.sizes.split(","):
            size = SIZES[size_name]
            n = args.images // 2 if size[0] >= 1920 else args.images
            photos = tmp / f"photos_{size_name}"
            make_photos(photos, n, size)
            kb = sum(p.stat().st_size for p in photos.glob("*.jpg")) // n // 1024
            print(f"\n## {size_name}: {n} JPEGs, {kb} KB each")
            if args.profile:
                for command in ("embed", "label"):
                    p = profile(model, photos, tmp, command)
                    results["sizes"].setdefault(size_name, {})[f"profile {command}"] = p
                    print(f"{command}, one thread, {p['images']} images: {p['cpu'] / p['images'] * 1e3:.1f} CPU-ms "
                          f"per image (load {p['load']:.1f})")
                    for stage, ms in p["ms_per_image"].items():
                        print(f"  {stage:70s} {ms:7.2f} ms")
                continue
            run = tools(model, photos, tmp, machine["native_bfloat16"], cr_bin, args.pipeline_images)
            if args.only:
                run = {k: v for k, v in run.items() if k in args.only.split(",")}
            names = list(run)
            got: dict[str, list[dict]] = {k: [] for k in names}
            side: list[dict] = []
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    argv, count = run[name]()
                    res = run_command(argv, count, env)
                    if name == "clip-retrieval":
                        res["own_rate"] = clip_retrieval_rate(tmp / "runs" / "cr")
                    got[name].append(res)
                    print(f"  round {r + 1} {name:24s} {res['images_per_s']:7.2f} images/s {res['cpu_ms_per_image']:8.1f} "
                          f"CPU-ms/image  load {res['load'][0]:.1f}-{res['load'][1]:.1f}", flush=True)
                if not args.only:
                    side.append(limit_and_steady(model, photos, tmp))
                    s = side[-1]
                    print(f"  round {r + 1} limit: model alone {s['model_images_per_s']:.1f} images/s, decode "
                          f"{s['decode_ms']:.1f} ms on one core -> {s['limit']:.1f} images/s; clipdata first batch "
                          f"to last {s['steady']:.1f} = {s['steady'] / s['limit']:.2f}x the limit ({s['plan']}, "
                          f"{s['dtype']}; load {s['load']:.1f})", flush=True)
            entry = {"images": n, "kb": kb, "runs": got, "limit": side}
            print(f"\n| {size_name} | images/s (best) | CPU-ms per image (median) | load |")
            print("|---|---|---|---|")
            for name in names:
                rs = got[name]
                print(f"| {name} | {max(x['images_per_s'] for x in rs):.2f} | "
                      f"{statistics.median(x['cpu_ms_per_image'] for x in rs):.1f} | "
                      f"{min(x['load'][0] for x in rs):.1f}-{max(x['load'][1] for x in rs):.1f} |")
            ratios = {}
            for mine in ("clipdata embed", "clipdata label", "clipdata embed float32"):
                for peer in names:
                    if mine in got and not peer.startswith("clipdata"):
                        ratios[f"{mine} / {peer}"] = {
                            "speed": median_ratio(got[mine], got[peer], "images_per_s"),
                            "cpu_per_image": median_ratio(got[mine], got[peer], "cpu_ms_per_image")}
            if ratios:
                print("\n| ratio (median of rounds) | speed | CPU per image |\n|---|---|---|")
                for k, v in ratios.items():
                    print(f"| {k} | {v['speed']:.2f}x | {v['cpu_per_image']:.2f}x |")
            if side:
                print(f"\nclipdata (first batch to last) / CPU limit, median: "
                      f"{statistics.median(s['steady'] / s['limit'] for s in side):.2f}x")
            entry["ratios"] = ratios
            if size_name == "640x480" and not args.only:
                w = warm_against_cold(model, photos, tmp, env)
                entry["warm"] = w
                print(f"warm cache: label in this process {w['api_cold_s']:.2f} s cold, {w['api_warm_s']:.3f} s warm "
                      f"({w['api_ratio']:.0f}x); as whole commands {w['cmd_cold_s']:.1f} s against "
                      f"{w['cmd_warm_s']:.1f} s ({w['cmd_ratio']:.1f}x); load {w['load']:.1f}")
            results["sizes"][size_name] = entry
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
