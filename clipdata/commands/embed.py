"""clipdata embed: a folder of images -> clip-retrieval's embeddings folder (formats/embeddings.md).

It runs on the shared embedding path (cache lookup, then the local or Ray distributor), so a
second run over the same images runs no model. Images are taken in the walk's sorted order and
cut into parts of `part_size`; a part already on disk for exactly the same files (path and
content) is kept, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .._version import __version__
from ..embedding.spec import EngineSpec
from ..errors import OptionError, OutputError, SourceError
from ..formats import embeddings as ef
from ..fsutil import LOCK_NAME, file_digest, is_within, locked, refuse_inside
from ..pipeline.journal import JOURNAL, Journal, read_journal, whole


@dataclass
class EmbedReport:
    out: Path
    images: int  # image files found
    written: int  # rows in the folder
    parts: int
    parts_kept: int  # finished parts reused from an earlier run
    redone: int = 0  # parts a killed run finished whose files were missing or damaged: written again
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason: found, not embedded
    engine: str = ""
    cache_hits: int = 0
    seconds: float = 0.0
    plan: object = None  # embedding.local.Plan: batch size, loaders and threads chosen for the machine


def _hashes(paths: list[str], cache) -> dict[str, str]:
    """Each readable file's SHA-256: through the cache's stat record where there is a cache
    (only changed files are read), else read."""
    from ..imagefiles import sha256_file

    if cache is not None:
        return cache.file_hashes(paths, sha256_file)
    out = {}
    for p in paths:
        try:
            out[p] = sha256_file(p)
        except OSError:
            continue
    return out


def _kept(out: Path, i: int, paths: list[str], cache) -> bool:
    """Part i on disk is finished and holds exactly these files, with today's contents."""
    if ef.part_rows(out, i) != len(paths):
        return False
    _, pq = ef._pyarrow()
    table = pq.read_table(ef.parquet_path(out, i), columns=["image_path", "sha256"])
    if table.column("image_path").to_pylist() != paths:
        return False
    hashes = _hashes(paths, cache)
    return table.column("sha256").to_pylist() == [hashes.get(p) for p in paths]


def _mode(spec: EngineSpec) -> str:
    """The preprocessing mode, as the embedding cache keys it."""
    from ..embedding import cache_mode

    return cache_mode(spec)


def _check_out(out: Path, identity: str, mode: str, part_size: int, resuming: bool) -> None:
    """OUT is new, empty, or an embeddings folder of the same model, mode and part size
    (`resuming`: a killed run's journal with this run's fingerprint says so, whatever a crash
    left of embed.json)."""
    if not out.exists() or resuming:
        return
    if not out.is_dir():
        raise OutputError("exists and is not a folder", file=out)
    if not (out / ef.INFO_FILE).exists():
        if any(p.name not in (LOCK_NAME, JOURNAL) for p in out.iterdir()):
            raise OutputError("the folder is not empty and is not an embeddings folder", file=out,
                              hint="choose a new or empty --out folder")
        return
    info = ef.read_info(out)
    if (info.identity, info.mode, info.part_size) != (identity, mode, part_size):
        raise OutputError(f"holds embeddings of {info.identity} ({info.mode}, parts of {info.part_size}); "
                          f"this run makes {identity} ({mode}, parts of {part_size})", file=out,
                          hint="choose another --out folder, or delete this one")


SLICE = 65_536  # images per embedding call: memory stays one part's matrix, not a copy of it


def _write_part(out: Path, i: int, chunk: list[str], engine, cache, spec: EngineSpec, report: EmbedReport,
                dim: int, tick: Callable[[int], None]) -> tuple[int, int]:
    """Embed one part's images slice by slice into one preallocated matrix, then write the
    part. Unreadable images are left out and named in the report. Returns (rows, dim)."""
    from ..embedding import embed_images
    from ..imagefiles import displayed_size

    part: np.ndarray | None = None
    keep: list[str] = []
    sizes: list[tuple[int, int]] = []
    hashes: dict[str, str] = {}
    for a in range(0, len(chunk), SLICE):
        paths = chunk[a:a + SLICE]
        matrix, stats = embed_images(engine, paths, cache, lambda k, _total, a=a: tick(a + k), spec)
        hashes.update(stats.sha256)
        report.cache_hits += stats.cache_hits
        bad = {**stats.unreadable, **stats.failed}
        if part is None and matrix.shape[1]:
            dim = dim or int(matrix.shape[1])
            part = np.empty((len(chunk), dim), np.float32)
        for r, p in enumerate(paths):
            if p in bad:
                continue
            try:
                sizes.append(displayed_size(Path(p)))
            except Exception as e:  # decoded by the model's loader, but its header is odd
                bad[p] = f"size unreadable: {e}"
                continue
            part[len(keep)] = matrix[r]
            keep.append(p)
        report.unreadable.update(bad)
    vectors = part[:len(keep)] if part is not None else np.zeros((0, dim), np.float32)
    missing = [p for p in keep if p not in hashes]  # runs without a cache hash here, once
    hashes.update(_hashes(missing, None))
    keep_hashed = [p for p in keep if p in hashes]  # a file that vanished since it was embedded
    if len(keep_hashed) != len(keep):
        rows = [j for j, p in enumerate(keep) if p in hashes]
        report.unreadable.update({p: "cannot be read" for p in keep if p not in hashes})
        vectors, sizes, keep = vectors[rows], [sizes[j] for j in rows], keep_hashed
    ef.write_part(out, i, vectors, keep, [w for w, _ in sizes], [h for _, h in sizes], [hashes[p] for p in keep])
    return len(keep), dim


def embed(images: str | Path, out: str | Path, *, spec: EngineSpec = EngineSpec(), part_size: int = 1_000_000,
          cache_dir: str | Path | None | bool = None,
          progress: Callable[[int, int], None] | None = None) -> EmbedReport:
    """Embed every image under `images` into the embeddings folder `out`."""
    from ..embedding import Engine, open_cache, scan_images
    from ..embedding.local import plan_for

    if part_size < 1:
        raise OptionError(f"--part-size {part_size} must be at least 1")
    t0 = time.perf_counter()
    out = Path(out)
    if is_within(out, Path(images)) or is_within(Path(images), out):
        raise OutputError("the embeddings folder and the image folder overlap", file=out,
                          hint="the image folder stays untouched; choose an --out folder outside it")
    refuse_inside((cache_dir,), [("the image folder", images)])
    paths = [str(p.resolve()) for p in scan_images(Path(images))]
    engine = Engine(spec.check())
    mode = _mode(spec)
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", file=out)
    chunks = [paths[a:a + part_size] for a in range(0, len(paths), part_size)]
    report = EmbedReport(out, len(paths), 0, len(chunks), 0, engine=engine.describe(),
                         plan=plan_for(engine.device, spec))
    fingerprint = hashlib.sha256(json.dumps([__version__, engine.identity, mode, part_size]).encode()).hexdigest()
    with locked(out), open_cache(engine, cache_dir) as cache:
        # A killed run's journal: each finished part's files by size and SHA-256, checked
        # before the part is kept (None: no journal, a finished or new folder).
        try:
            lines = read_journal(out, fingerprint)
        except OutputError:
            raise OutputError("holds a killed embed run of another model, preprocessing mode or part size",
                              file=out, hint="repeat that run's command to finish it, or choose another --out folder") from None
        _check_out(out, engine.identity, mode, part_size, resuming=lines is not None)
        journaled = {row.get("part"): row.get("files") for row in lines or []}
        journal = Journal(out, fingerprint, fresh=lines is None)
        dim = 0
        info = ef.EmbedInfo(spec.model, engine.identity, engine.dtype, mode, 0, 0, len(chunks), part_size,
                            complete=False)
        ef.write_info(out, info)  # marks the folder unfinished until the last part is written
        done = 0
        for i, chunk in enumerate(chunks):
            trusted = lines is None or whole(out, journaled.get(i))
            if i in journaled and not trusted:
                report.redone += 1
            if trusted and _kept(out, i, chunk, cache):
                report.parts_kept += 1
                dim = dim or int(np.load(ef.npy_path(out, i), mmap_mode="r").shape[1])
                rows = len(chunk)
            else:
                rows, dim = _write_part(out, i, chunk, engine, cache, spec, report, dim,
                                        lambda k, base=done: progress(base + k, len(paths)) if progress else None)
                files = [ef.npy_path(out, i), ef.parquet_path(out, i)]
                journal.record_line({"part": i, "files": {f.relative_to(out).as_posix(): list(file_digest(f))
                                                          for f in files}}, files)
                journal.commit()
            report.written += rows
            done += len(chunk)
            if progress:
                progress(done, len(paths))
        if report.written == 0:
            raise SourceError("no image could be embedded", file=images,
                              hint=f"e.g. {next(iter(report.unreadable.items()), ('', ''))[1]}")
        for stale in sorted((out / ef.EMB_DIR).glob("img_emb_*.npy")):  # parts of a larger earlier run
            m = ef._PART.fullmatch(stale.name)
            if m and int(m.group(1)) >= len(chunks):
                stale.unlink()
                ef.parquet_path(out, int(m.group(1))).unlink(missing_ok=True)
        ef.write_info(out, ef.EmbedInfo(spec.model, engine.identity, engine.dtype, mode, dim, report.written,
                                        len(chunks), part_size, unreadable=len(report.unreadable),
                                        run=report.plan.record()))
        journal.close()
        journal.finish([out / ef.INFO_FILE])
    report.seconds = time.perf_counter() - t0
    return report
