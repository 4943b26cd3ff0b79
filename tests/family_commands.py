"""Every command that embeds, run once with a given model: eval, label, search (over images and
over an embeddings folder), prompts, audit, embed, and the review app's text search and
look-alikes. Shared by the family tests (transformers families, open_clip)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import clipdata
from helpers import SAMPLES


def run_every_command(spec, tmp: Path) -> None:
    import httpx

    from clipdata import review_serve

    layout = tmp / "layout"
    clipdata.convert(SAMPLES / "folder", layout, format="folder", template="a photo of {}")
    photos = tmp / "photos"
    photos.mkdir()
    for p in sorted((SAMPLES / "folder").rglob("*.jpg"))[:6]:
        shutil.copy(p, photos / p.name)
    cache = tmp / "cache"  # shared: each image is embedded once per model

    ev = clipdata.evaluate(layout, templates=["a picture of {}"], spec=spec, cache_dir=cache)
    assert ev.best is not None and 0 <= ev.best.top1 <= 1
    out = tmp / "labeled"
    labeled = clipdata.label(photos, out, classes="grass,gravel,brick wall", spec=spec)  # its cache: OUT/cache
    assert labeled.images == 6
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(0 <= r["top_k"][0]["score"] <= 1 for r in rows)
    hits = clipdata.search(photos, ["gravel"], top=6, spec=spec, cache_dir=cache).hits
    assert len(hits) == 6
    best = clipdata.prompts(layout, tmp / "best.yaml", templates=["a {}"], library=False, spec=spec, cache_dir=cache)
    assert best.chosen
    suspects = clipdata.audit(layout, spec=spec, cache_dir=cache, folds=2)
    assert len(suspects.rows) == 12
    clipdata.embed(photos, tmp / "emb", spec=spec, cache_dir=cache)
    again = clipdata.search(None, ["gravel"], top=6, embeddings=tmp / "emb", spec=spec, cache_dir=cache).hits
    scores = {Path(h.path).name: h.score for h in hits}  # random towers: near-equal scores, order may differ
    assert all(abs(scores[Path(h.path).name] - h.score) < 1e-5 for h in again) and len(again) == 6
    with review_serve(out) as srv, httpx.Client(base_url=f"http://127.0.0.1:{srv.port}",
                                                headers={"x-clipdata-token": srv.token}, timeout=60) as c:
        first = c.get("/api/items").json()["items"][0]["path"]
        found = c.post("/api/search", json={"text": "gravel"})
        assert found.status_code == 200, found.text
        alike = c.post("/api/similar", json={"path": first})
        assert alike.status_code == 200 and alike.json()["missing"] == 0, alike.text
