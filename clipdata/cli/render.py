"""Rich tables and summaries for each command's report: how results look on a terminal."""
from __future__ import annotations

from rich.table import Table

from rich.text import Text

from .app import err_console, out_console, styled


def _table(title: str, columns: tuple[str, ...], right: tuple[str, ...] = (), **kwargs) -> Table:
    table = Table(title=title, **kwargs)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    return table


def say(text: str | Text) -> None:
    out_console.print(text)


def skipped_line(by_reason: dict[str, int]) -> str:
    return "skipped: " + ", ".join(f"{r} {n}" for r, n in by_reason.items())


def notes(items: list[str]) -> None:
    for note in items:
        say(styled(("note:", "yellow"), f" {note}"))


def convert_report(report) -> None:
    table = _table(f"{report.out}", ("split", "class", "images", "caption"), ("images",))
    for split, classes in report.counts.items():
        for cls, n in classes.items():
            table.add_row(split, cls, str(n), report.captions[cls])
    out_console.print(table)
    say(styled((str(report.crops), "bold"), " crops, ", (str(report.images), "bold"), " whole images, ",
               (str(len(report.classes)), "bold"), f" classes in {len(report.counts)} split(s)"))
    if report.exported:
        say("hand-off files: " + ", ".join(report.exported))
    resumed(report)
    if report.skipped:
        say(skipped_line(report.skipped_by_reason) + f" (details in {report.out / 'clipdata.json'})")
    notes(report.notes)


def resumed(report) -> None:
    """What a --resume kept, and what it found damaged on disk and made again."""
    if report.resumed or report.redone:
        say(f"resumed: {report.resumed} image(s) kept from the interrupted run"
            + (f", {report.redone} made again (their files were missing or damaged on disk)" if report.redone else ""))


def inspect_report(report, quiet: bool) -> None:
    if not quiet:
        table = _table(str(report.root), ("split", "class", "images", "caption"), ("images",))
        for row in report.rows:
            table.add_row(row.split, row.name, str(row.images), row.caption if row.caption is not None else styled(("(none)", "red")))
        out_console.print(table)
    for w in report.warnings:
        say(styled(("warning:", "yellow"), f" {w}"))
    for e in report.errors:
        err_console.print(styled(("error:", "bold red"), f" {e}"))
    if report.ok and not quiet:
        out_console.print(styled(("layout OK", "green")))


def label_report(report) -> None:
    table = _table(f"{report.out}", ("class", "images"), ("images",))
    for cls, n in report.counts.items():
        table.add_row(cls, str(n))
    table.add_row(styled(("uncertain", "yellow")), str(report.uncertain))
    out_console.print(table)
    say(f"{report.images} images in {report.seconds:.1f} s ({report.images_per_second:.1f} images/s), "
        f"{report.engine}, cache hits {report.cache_hits}"
        + (f"; {report.plan.describe()}" if report.plan is not None else ""))
    if report.cv_accuracies:
        say(f"decided by: {report.scorer} (cross-validated top-1 on the --train-from layout: "
            + ", ".join(f"{k} {v:.1%}" for k, v in report.cv_accuracies.items() if v is not None) + ")")
    if report.unreadable:
        say(styled(("unreadable:", "yellow"), f" {len(report.unreadable)} (listed in {report.out / 'label.json'})"))
    if report.failed:
        say(styled(("failed:", "red"), f" {len(report.failed)} image(s) whose distributed task failed past its retries "
                   f"(listed in {report.out / 'label.json'}; run again to embed them)"))
    say(f"review: move files between the folders of {report.out / 'review'}, or open "
        f"{report.out / 'index.html'}; then: clipdata review apply {report.out} LAYOUT")


def review_report(result) -> None:
    table = _table("reviewer's corrections", ("proposed class", "kept", "changed", "not reviewed"),
                   ("kept", "changed", "not reviewed"))
    for cls, c in result.changes.items():
        table.add_row(cls, str(c["kept"]), str(c["changed"]), str(c["unreviewed"]))
    out_console.print(table)
    acc = result.accuracy
    chosen = result.reviewed - result.moved
    say(f"{result.layout.images} images into {result.layout.out} ({len(result.layout.classes)} classes)"
        + (f"; on the {chosen} you reviewed, the pre-labels were {acc:.1%} right" if acc is not None else ""))
    if result.moved:
        say(f"{result.moved} changed by moving files in the review tree")
    if result.unreviewed:
        say(f"{'nothing was reviewed: ' if not result.reviewed else ''}{result.unreviewed} applied as label "
            "proposed, with no record of a review")
    if result.layout.skipped:
        say(skipped_line(result.layout.skipped_by_reason))
    notes(result.layout.notes)


def footer(report) -> None:
    plan = getattr(report, "plan", None)  # how the run used the machine, where the command records it
    say(f"{report.images} images, {report.engine}, cache hits {report.cache_hits}"
        + (f"; {plan.describe()}" if plan is not None else ""))
    if report.unreadable:
        say(styled(("unreadable:", "yellow"), f" {len(report.unreadable)}: " + ", ".join(list(report.unreadable)[:3])))


def eval_report(r, quiet: bool) -> None:
    table = _table(f"{r.layout} ({', '.join(r.splits)}): {r.images} images, {len(r.classes)} classes",
                   ("prompt set", "top-1", "top-5", "mean per-class recall"), ("top-1", "top-5", "mean per-class recall"))
    best = r.best
    for ps in r.sets:
        name = styled((ps.name, "bold")) if ps is best else ps.name
        table.add_row(name, f"{ps.top1:.1%}", f"{ps.top5:.1%}" if ps.top5 is not None else "—",
                      f"{ps.mean_per_class_recall:.1%}")
    out_console.print(table)
    if quiet:
        return
    recall = _table(f"per-class recall, {best.name}", ("class", "recall"), ("recall",))
    for cls, v in best.per_class_recall.items():
        recall.add_row(cls, f"{v:.1%}")
    out_console.print(recall)
    if r.flipped:
        worst = min(r.sets, key=lambda s: (s.top1, s.mean_per_class_recall))
        say(f"{len(r.flipped)} image(s) change prediction between {worst.name!r} and {best.name!r}, e.g.:")
        for f in r.flipped[:10]:
            say(f"  {f['path']}: {f[worst.name]} -> {f[best.name]} (true: {f['class']})")
    footer(r)


def search_report(r) -> None:
    table = _table(f"{r.root}", ("query", "rank", "score", "path"), ("rank", "score"))
    for h in r.hits:
        table.add_row(h.query, str(h.rank), f"{h.score:.3f}", str(h.path))
    out_console.print(table)
    footer(r)


def unique_report(r, top: int) -> None:
    table = _table(f"{r.root}: most unique first", ("rank", "uniqueness", "path"), ("rank", "uniqueness"))
    for n, (p, v) in enumerate(r.scores[:top], 1):
        table.add_row(str(n), f"{v:.4f}", str(p))
    out_console.print(table)
    footer(r)


def duplicates_report(r, quiet: bool) -> None:
    for g in r.groups:  # no table: full paths, whatever the terminal's width
        out_console.file.write("\t".join([g["kind"], *map(str, g["paths"])]) + "\n")
    if not quiet:
        err_console.print(f"{len(r.groups)} group(s) among {r.images} images; {r.engine}")
        if r.unreadable:  # on stderr: stdout is the groups, for scripts
            err_console.print(styled(("unreadable:", "yellow"), f" {len(r.unreadable)}: "
                                     + ", ".join(list(r.unreadable)[:3])))
