"""The cache's file record: a warm run reads only the files that changed, and a changed file
is never served its old embedding, whatever its size and modification time say."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from clipdata.embedding import cache as cache_module
from clipdata.embedding.cache import EmbeddingCache


def _counting():
    read: list[str] = []

    def hash_file(p: str) -> str:
        read.append(p)
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()

    return read, hash_file


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    names = ["a.jpg", "b.jpg", os.fsdecode(b"caf\xe9.jpg")]  # a Latin-1 name: not UTF-8
    paths = []
    for i, name in enumerate(names):
        p = tmp_path / "img" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(bytes([i]) * 1000)
        paths.append(str(p))
    return paths


def test_only_changed_files_are_read_again(tmp_path: Path, files: list[str], monkeypatch) -> None:
    monkeypatch.setattr(cache_module, "RACY_NS", 0)  # the files were written just now
    cache = EmbeddingCache(tmp_path / "c", "m")
    read, hash_file = _counting()
    first = cache.file_hashes(files, hash_file)
    assert read == files and first[files[0]] == hashlib.sha256(b"\0" * 1000).hexdigest()
    read.clear()
    assert cache.file_hashes(files, hash_file) == first and read == []  # warm: nothing read
    # same size, modification time put back: the change time still tells
    st = os.stat(files[1])
    Path(files[1]).write_bytes(b"\7" * 1000)
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    again = cache.file_hashes(files + [str(tmp_path / "gone.jpg")], hash_file)
    assert read == [files[1]] and again[files[1]] == hashlib.sha256(b"\7" * 1000).hexdigest()
    assert str(tmp_path / "gone.jpg") not in again  # cannot be read: left out, not an error
    # a file moved into the place of another is another inode
    os.replace(files[0], files[2])
    read.clear()
    assert cache.file_hashes(files[1:], hash_file)[files[2]] == first[files[0]] and read == [files[2]]
    cache.close()


def test_a_file_written_just_before_it_was_recorded_is_read_again(tmp_path: Path, files: list[str]) -> None:
    """git's racy-file rule: a write within the same clock tick as the record could keep the
    size and the times, so such a record is not trusted until the file is older."""
    cache = EmbeddingCache(tmp_path / "c", "m")
    read, hash_file = _counting()
    cache.file_hashes(files, hash_file)
    read.clear()
    cache.file_hashes(files, hash_file)
    assert read == files
    cache.close()


def test_bfloat16_engine_stores_matmul_weights_without_changing_a_bit(tiny) -> None:
    """bfloat16 on a CPU: the Linear and Conv2d weights are kept in bfloat16 (autocast casts
    them at every call otherwise); embeddings stay bit for bit autocast's, so the cache
    identity is unchanged."""
    import numpy as np
    import torch
    from transformers import AutoModel

    from clipdata.embedding import Engine, EngineSpec

    engine = Engine(EngineSpec(model=str(tiny), dtype="bfloat16", device="cpu"))
    linear = next(m for m in engine.model.modules() if isinstance(m, torch.nn.Linear))
    assert linear.weight.dtype == torch.bfloat16 and engine.identity.endswith(":bfloat16")
    reference = AutoModel.from_pretrained(tiny).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = reference.get_image_features(pixel_values=x)
        expected = getattr(out, "pooler_output", out).float()
    expected = (expected / expected.norm(dim=-1, keepdim=True)).numpy()
    assert np.array_equal(engine.embed_pixels(x), expected)
