"""Thumbnail pages: self-contained HTML that works opened from disk, with no server and no
network. label, search, unique and duplicates write them."""
from __future__ import annotations

import html
import os
from pathlib import Path

from .fsutil import write_report


def write_html(path: Path, title: str, sections: list[tuple[str, list[tuple[Path, str]]]],
               intro: str = "") -> None:
    """A self-contained page of thumbnails; images are linked by paths relative to the page,
    so it works opened from disk, with no server and no network. A caption's lines are
    separated by newlines."""
    parts = []
    for name, items in sections:
        cards = []
        for p, caption in items:
            rel = html.escape(os.path.relpath(Path(p).resolve(), path.resolve().parent).replace(os.sep, "/"), quote=True)
            lines = "<br>".join(html.escape(line) for line in caption.split("\n"))
            cards.append(f'<figure><a href="{rel}"><img src="{rel}" loading="lazy" alt=""></a>'
                         f'<figcaption>{html.escape(Path(p).name)}<br><small>{lines}</small></figcaption></figure>')
        parts.append(f"<h2>{html.escape(name)} ({len(items)})</h2><div class=\"grid\">{''.join(cards)}</div>")
    write_report(path, f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clipdata: {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ width: 170px; margin: 0; }}
img {{ width: 170px; height: 130px; object-fit: cover; background: #eee; border-radius: 4px; }}
figcaption {{ font-size: 12px; overflow-wrap: anywhere; }}
</style></head><body><h1>{html.escape(title)}</h1>
{intro}
{''.join(parts)}
</body></html>
""")
