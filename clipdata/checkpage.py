"""The check report as one self-contained page: thumbnails and plots inline (data: URIs),
no script, nothing fetched, so it opens from disk, from a CI artifact or from an email.

Plots are matplotlib, rendered to PNG: it is already clipdata's plotting library (`eval
--plot`), its output is static and byte-stable (no timestamps), and it needs no JavaScript
runtime in the page (a Vega-Lite spec would need vega, vega-lite and vega-embed inlined, about
1 MB, or fetched from a CDN, which a self-contained report must not do). The map's flagged
points are HTML anchors placed with matplotlib's own data-to-pixel transform, so hovering
one shows its thumbnail with plain CSS.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import OptionError
from .fsutil import write_report

INSTALL_HINT = "pip install 'clipdata[check]'"
SHOWN_PER_KIND = 60  # findings drawn per kind; the JSON has them all
THUMB_SIDE = 160
ORDER = ("leakage", "quality", "label", "duplicates", "captions", "balance", "outlier")  # what to fix first
WHY = {
    "leakage": "test or validation images also in train: scores on them are not held out",
    "quality": "images that are broken, dark, light, blurry, nearly empty or oddly sized",
    "label": "labels the other images' evidence disagrees with (confident learning, out of fold)",
    "duplicates": "copies within a split: they weigh twice",
    "captions": "classes zero-shot confuses with the layout's captions",
    "balance": "classes with too few images, or missing from a split",
    "outlier": "images unlike the rest of their class",
}
DPI = 100


def require() -> None:
    """Fail early, before any embedding, when the page cannot be drawn."""
    _plt()


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OptionError("--html needs matplotlib", hint=INSTALL_HINT) from None
    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(path: Path) -> str | None:
    """A small JPEG of the image as a data: URI; None when it cannot be decoded."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
    except Exception:  # undecodable images are findings themselves: drawn as a placeholder
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


class _Thumbs:
    def __init__(self, by_rel: dict[str, Path], root: Path) -> None:
        self.by_rel, self.root, self.done = by_rel, root, {}

    def img(self, rel: str, caption: str = "") -> str:
        if rel not in self.done:
            self.done[rel] = _thumb(self.by_rel.get(rel, self.root / rel))
        uri = self.done[rel]
        pic = (f'<img src="{uri}" alt="">' if uri else '<div class="nopic">undecodable</div>')
        return (f'<figure>{pic}<figcaption>{html.escape(rel)}'
                + (f"<br><small>{html.escape(caption)}</small>" if caption else "") + "</figcaption></figure>")


def _heatmap(report) -> str | None:
    zs = report.zero_shot
    if not zs.get("confusion_matrix"):
        return None
    plt = _plt()
    conf = np.array(zs["confusion_matrix"], dtype=float)
    k = len(conf)
    rows = conf.sum(axis=1, keepdims=True)
    share = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.2, 3.9))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    names = report.classes
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=70, ha="right", fontsize=6 if k > 12 else 8)
        ax.set_yticks(range(k), names, fontsize=6 if k > 12 else 8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("zero-shot prediction", fontsize=8)
    ax.set_ylabel("label", fontsize=8)
    ax.set_title(f"confusion (row share), top-1 {zs['top1']:.1%}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def _bars(report) -> str | None:
    per = {c: v for c, v in report.zero_shot.get("per_class_accuracy", {}).items() if v is not None}
    if not per:
        return None
    plt = _plt()
    items = sorted(per.items(), key=lambda kv: (kv[1], kv[0]))[:40][::-1]  # the worst 40, the worst on top
    fig, ax = plt.subplots(figsize=(4.6, max(2.0, 0.19 * len(items) + 0.8)))
    ys = np.arange(len(items))
    vals = [v for _, v in items]
    ax.barh(ys, vals, color=["#d62728" if v < 0.5 else "#1f77b4" for v in vals])
    for y, v in zip(ys, vals):  # the value beside its bar: a class at 0 has no bar to see
        ax.text(v + 0.01 if v < 0.85 else v - 0.01, y, f"{v:.2f}", va="center", ha="left" if v < 0.85 else "right",
                fontsize=6, color="#222" if v < 0.85 else "white")
    ax.set_yticks(ys, [c for c, _ in items], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("zero-shot accuracy with the layout's captions (red: below 0.5)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("per-class accuracy" + (" (the worst 40)" if len(per) > 40 else ""), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _map(report, thumbs: _Thumbs) -> str:
    pts = report.map.get("points") or []
    if not pts:
        return "<p>too few images for a map</p>"
    plt = _plt()
    classes = sorted({p["label"] for p in pts})
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    xy = np.array([[p["x"], p["y"]] for p in pts])
    flagged = np.array([bool(p["flagged"]) for p in pts])
    w_in, h_in = 4.6, 3.9
    fig, ax = plt.subplots(figsize=(w_in, h_in))
    ax.scatter(xy[~flagged, 0], xy[~flagged, 1], s=9, c=[colour[p["label"]] for p, f in zip(pts, flagged) if not f],
               linewidths=0)
    if flagged.any():
        ax.scatter(xy[flagged, 0], xy[flagged, 1], s=34, c=[colour[p["label"]] for p, f in zip(pts, flagged) if f],
                   edgecolors="black", linewidths=1.1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"embeddings, {report.map['method']} ({report.map['shown']} of {report.map['of']}); "
                 "ringed: flagged", fontsize=8)
    if len(classes) <= 16:
        for c in classes:
            ax.scatter([], [], s=12, c=[colour[c]], label=c)
        # below the axes: inside, "best" still lands on points (and on the marks over them)
        ax.legend(fontsize=5.5, loc="upper center", bbox_to_anchor=(0.5, -0.01), frameon=False,
                  ncol=min(len(classes), 4), handletextpad=0.1, columnspacing=0.8)
    fig.tight_layout()
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    disp = ax.transData.transform(xy)
    uri = _png(fig)
    marks = []
    for (x, y), p, f in zip(disp, pts, flagged):
        if not f:
            continue
        left, top = 100 * x / width, 100 * (1 - y / height)
        tip = f"{p['path']} ({p['split']}): {', '.join(p['flagged'])}"
        marks.append(f'<a class="mark" style="left:{left:.2f}%;top:{top:.2f}%" href="#{html.escape(p["path"], quote=True)}">'
                     f'<span class="tip">{thumbs.img(p["path"], ", ".join(p["flagged"]))}</span>'
                     f'<span class="sr">{html.escape(tip)}</span></a>')
    return f'<div class="map"><img src="{uri}" alt="map of the embeddings">{"".join(marks)}</div>'


def _summary(report) -> str:
    by = report.by_kind
    rows = []
    # kinds with findings first, each group in ORDER: a kind with none is nothing to fix first
    for kind in sorted((k for k in ORDER if k in report.kinds), key=lambda k: not by.get(k, 0)):
        n = by.get(kind, 0)
        cls = "bad" if n and kind in ("leakage", "quality", "label") else ("warn" if n else "ok")
        rows.append(f'<li class="{cls}"><a href="#kind-{kind}"><b>{n}</b> {kind}</a> <small>{html.escape(WHY[kind])}'
                    "</small></li>")
    gate = ""
    if report.gate.get("fail_on"):
        verdict = "failed" if report.failed else "passed"
        gate = (f'<p class="gate {verdict}">gate {verdict}: {len(report.gate["failing"])} '
                f'{"new " if report.gate.get("baseline") else ""}finding(s) of {", ".join(report.gate["fail_on"])}</p>')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    return (f'<section class="summary"><h2>What to fix first</h2>{gate}<ol>{"".join(rows)}</ol>'
            + (f'<details><summary>{len(report.notes)} note(s)</summary><ul>{notes}</ul></details>' if notes else "")
            + "</section>")


def _counts(report) -> str:
    splits = list(report.counts)
    head = "".join(f"<th>{html.escape(s)}</th>" for s in splits)
    body = []
    for c in report.classes:
        cells = "".join(f"<td>{report.counts[s].get(c, 0) or '<b class=bad>0</b>'}</td>" for s in splits)
        total = sum(report.counts[s].get(c, 0) for s in splits)
        body.append(f"<tr><td>{html.escape(c)}</td>{cells}<td>{total}</td></tr>")
    return (f'<table class="counts"><tr><th>class</th>{head}<th>total</th></tr>{"".join(body)}</table>')


def _finding_html(f: dict, thumbs: _Thumbs) -> str:
    kind = f["kind"]
    if kind == "leakage" or kind == "duplicates":
        figs = "".join(thumbs.img(p, s) for p, s in zip(f["paths"], f.get("splits", [""] * len(f["paths"]))))
        detail = f"pixel similarity {f['pixel_similarity']:.3f}, CLIP cosine {f['clip_cosine']:.3f}"
    elif kind == "captions" or kind == "balance":
        figs, detail = "", ""
    else:
        extra = {"quality": f"{f['type'].replace('_', ' ')}", "label": f"labeled {f.get('label')}, "
                 f"looks like {f.get('suggested')}", "outlier": f"z {f.get('z')}"}[kind]
        figs, detail = thumbs.img(f["paths"][0], extra), ""
    anchor = f' id="{html.escape(f["paths"][0], quote=True)}"' if f["paths"] else ""
    return (f'<div class="finding"{anchor}><p><b>{html.escape(f["type"])}</b> {html.escape(f["message"])}'
            + (f" <small>({html.escape(detail)})</small>" if detail else "") + f'</p><div class="row">{figs}</div></div>')


def _findings(report, thumbs: _Thumbs) -> str:
    parts = []
    for kind in ORDER:
        if kind not in report.kinds:
            continue
        items = [f for f in report.findings if f["kind"] == kind]
        shown = items[:SHOWN_PER_KIND]
        more = f"<p>… and {len(items) - len(shown)} more in the JSON report.</p>" if len(items) > len(shown) else ""
        body = "".join(_finding_html(f, thumbs) for f in shown) or "<p>none found</p>"
        parts.append(f'<section id="kind-{kind}"><h2>{kind} ({len(items)})</h2><p class="why">{html.escape(WHY[kind])}'
                     f"</p>{body}{more}</section>")
    return "".join(parts)


def _closest(report) -> str:
    rows = report.zero_shot.get("closest_captions") or []
    if not rows:
        return ""
    body = "".join(f"<tr><td>{r['cosine']:.3f}</td><td>{html.escape(r['captions'][0])}</td>"
                   f"<td>{html.escape(r['captions'][1])}</td></tr>" for r in rows[:10])
    return (f'<h2>Closest captions</h2><table class="counts captions"><tr><th>text cosine</th><th colspan=2>caption pair'
            f'</th></tr>{body}</table>')


CSS = """
body { font-family: system-ui, sans-serif; margin: 12px 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 2px; } h2 { font-size: 15px; margin: 4px 0; }
.meta { color: #555; font-size: 12px; margin: 0 0 8px; }
.top { display: grid; grid-template-columns: 330px 420px 460px; gap: 12px; align-items: start; }
.summary ol { padding-left: 18px; margin: 4px 0; } .summary li { margin: 3px 0; font-size: 13px; }
.summary small { color: #666; display: block; } .summary a { color: inherit; text-decoration: none; }
li.bad b, b.bad { color: #c00; } li.warn b { color: #b60; } li.ok b { color: #393; }
.gate { font-weight: bold; padding: 4px 8px; border-radius: 4px; } .gate.failed { background: #fdd; } .gate.passed { background: #dfd; }
.top img { max-width: 100%; display: block; }
.map { position: relative; } .map > img { width: 100%; }
.mark { position: absolute; width: 12px; height: 12px; margin: -6px 0 0 -6px; border-radius: 6px; }
.mark .tip { display: none; position: absolute; left: 14px; top: -20px; background: #fff; border: 1px solid #888;
  padding: 4px; z-index: 5; } .mark:hover .tip, .mark:focus .tip { display: block; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
.second { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; margin-top: 10px; }
table.counts { border-collapse: collapse; font-size: 12px; } .counts td, .counts th { border: 1px solid #ddd; padding: 2px 6px; }
.counts td:not(:first-child) { text-align: right; } .captions td:not(:first-child) { text-align: left; }
.scroll { max-height: 420px; overflow: auto; }
.finding { border-top: 1px solid #eee; padding: 4px 0; } .finding p { margin: 2px 0; font-size: 13px; }
.row { display: flex; gap: 8px; flex-wrap: wrap; }
figure { margin: 0; width: 170px; } figure img { width: 160px; height: 120px; object-fit: contain; background: #eee; }
figcaption { font-size: 11px; overflow-wrap: anywhere; }
.nopic { width: 160px; height: 120px; background: repeating-linear-gradient(45deg, #eee, #eee 6px, #ddd 6px, #ddd 12px);
  display: flex; align-items: center; justify-content: center; font-size: 12px; color: #a00; }
.why { color: #666; font-size: 12px; margin: 0 0 4px; }
"""


def write_page(path: Path, report, paths: Sequence[Path] = (), rel: Sequence[str] = ()) -> None:
    """Write the page: summary, heatmap and map on the first screen, then per-class accuracy,
    counts and the closest captions, then every kind's findings with their images. An image's
    file is `paths[k]` for `rel[k]` when given, else the layout / its path."""
    thumbs = _Thumbs(dict(zip(rel, paths)), report.layout)
    heat, bars = _heatmap(report), _bars(report)
    heat_html = f'<img src="{heat}" alt="confusion matrix">' if heat else "<p>no zero-shot (label and captions not checked)</p>"
    title = f"check of {report.layout.name or report.layout}"
    meta = (f"{report.images} images · {len(report.classes)} classes · {', '.join(report.splits)} · {report.engine}"
            f" · kinds: {', '.join(report.kinds)}")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clipdata: {html.escape(title)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1><p class="meta">{html.escape(meta)}</p>
<div class="top">{_summary(report)}<section><h2>Which classes zero-shot confuses</h2>{heat_html}</section>
<section><h2>The map</h2>{_map(report, thumbs)}</section></div>
<div class="second">{f'<section><img src="{bars}" alt="per-class accuracy"></section>' if bars else ''}
<section><h2>Images per class and split</h2><div class="scroll">{_counts(report)}</div></section>
<section>{_closest(report)}</section></div>
{_findings(report, thumbs)}
</body></html>
"""
    write_report(path, page)
