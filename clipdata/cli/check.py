"""check on the command line: the health report of a layout, and the gate a CI job runs."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from .app import app, err_console, errors, out_console, styled
from .rank import Embeddings
from .options import at_least, engine_options
from .render import _table, notes, say

CHECK_HELP = """A dataset health report of a CLIP layout, and a gate for CI.

Finds leakage between splits (exact and near copies), near-duplicates within a split, bad
images (undecodable, tiny, dark, light, low information, blurry, grayscale, odd aspect ratio,
odd size), labels that look wrong, outliers, classes CLIP confuses, and thin classes.
Without --fail-on it exits 0 whatever it finds; with it, 1 when a finding of those kinds
exists (with --baseline: one that the earlier report did not have).

Examples:

\b
  clipdata check layout/ --html report.html --json report.json
  clipdata check layout/ --fail-on leakage,label --baseline main-report.json
"""


@contextmanager
def phases(quiet: bool) -> Iterator:
    """A progress callback `update(phase, done, total)`: one bar per phase, or None when quiet."""
    if quiet or not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err_console, transient=True, auto_refresh=False)
    with bar:
        tasks: dict[str, int] = {}
        last = [0.0]

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)
            now = time.monotonic()
            if done >= total or now - last[0] > 0.1:
                bar.refresh()
                last[0] = now

        yield update


@app.command(help=CHECK_HELP, no_args_is_help=True)
@engine_options()
def check(
    layout: Path = typer.Argument(..., help="A CLIP layout."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="The report as one self-contained page."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Every finding as JSON (formats/check.md)."),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Exit 1 when a finding of these kinds exists, "
                                          "e.g. leakage,label (or all)."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="With --fail-on: an earlier --json report; "
                                            "only findings it does not have fail."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Check only these kinds (default: all; with "
                                        "--embeddings, all but quality)."),
    threshold: List[str] = typer.Option([], "--threshold", help="NAME=VALUE, e.g. near=0.97 (repeatable; "
                                        "formats/check.md lists them)."),
    embeddings: Embeddings = None,
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds of the label check."),
    top: int = typer.Option(10, "--top", help="Findings listed per kind on the terminal."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; only the summary."),
    spec=None, cache=None,
) -> None:
    from ..commands.check import check as api_check

    with errors(), phases(quiet) as update:
        at_least(top=(top, 1))
        r = api_check(layout, kinds=kinds, spec=spec, cache_dir=cache, embeddings=embeddings, json_path=json_path,
                      html_path=html_out, fail_on=fail_on, baseline=baseline, thresholds=threshold, folds=folds,
                      progress=update)
    counts = r.by_kind
    table = _table(f"{r.layout}: {r.images} images, {len(r.classes)} classes, {len(r.splits)} split(s)",
                   ("kind", "findings", "first"), ("findings",))
    for kind in r.kinds:
        first = next((f["message"] for f in r.findings if f["kind"] == kind), "")
        table.add_row(kind, str(counts.get(kind, 0)), first)
    out_console.print(table)
    if not quiet:
        for kind in r.kinds:
            listed = [f for f in r.findings if f["kind"] == kind][:top]
            for f in listed[1:]:
                say(f"  {kind}: {f['message']}")
    notes(r.notes)
    say(f"{r.images} images, {r.engine}, cache hits {r.cache_hits}, {r.seconds:.1f} s"
        + (f"; wrote {html_out}" if html_out else "") + (f"; wrote {json_path}" if json_path else ""))
    if r.gate.get("fail_on"):
        n = len(r.gate["failing"])
        verdict = styled(("gate failed", "red"), f": {n} {'new ' if r.gate['baseline'] else ''}finding(s) of "
                         f"{', '.join(r.gate['fail_on'])}") if r.failed else \
            styled(("gate passed", "green"), f": no {'new ' if r.gate['baseline'] else ''}finding of {', '.join(r.gate['fail_on'])}")
        say(verdict)
        if r.failed:
            raise typer.Exit(1)
