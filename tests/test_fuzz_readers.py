"""Every registered reader, fuzzed with structure-aware generated datasets (tests/readerfuzz.py):
no traceback, one line on failure, conservation on every finished OUT, nothing written
outside OUT. A fixed, small sample per format (the same cases every run, a few seconds each);
`python fuzz/readers.py` is the long mode."""
from __future__ import annotations

import pytest

import readerfuzz
from clipdata.formats import REGISTRY

EXAMPLES = 12  # per format: the CI budget (~5 s a format on an idle 2-core machine)


def test_every_reader_has_a_generator():
    assert sorted(REGISTRY) == sorted(readerfuzz.GENERATORS), "a reader without a fuzz generator (tests/readerfuzz.py)"


@pytest.mark.parametrize("fmt", sorted(REGISTRY))
def test_reader_keeps_its_promises_on_generated_datasets(fmt):
    codes = readerfuzz.run(fmt, EXAMPLES)
    assert sum(codes.values()) >= EXAMPLES // 2  # the generator draws real cases, not only rejects
