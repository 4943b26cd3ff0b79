"""The reader fuzzer's long mode: many generated datasets per registered reader, instead of the
test suite's fixed sample of 12 (tests/test_fuzz_readers.py; the generators and checks are
tests/readerfuzz.py).

    python fuzz/readers.py                       # 300 cases of every format, a fresh sample
    python fuzz/readers.py --cases 2000 -f yolo -f coco --seed 7

Prints, per format, the cases run and how they ended (exit 0 / 1 / 2), then each class of
problem found (a broken promise: a traceback, a failure of more than one line, conservation,
a write outside OUT, a hang) with its count and the first case's files, to reproduce. Exit
status 1 when anything was found.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    import readerfuzz
    from clipdata.formats import REGISTRY

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=300, help="cases per format (default 300)")
    ap.add_argument("--seed", type=int, default=None, help="a fixed sample (default: a fresh one each run)")
    ap.add_argument("--twice", action="store_true", help="also run each case again: the same bytes?")
    ap.add_argument("-f", "--format", action="append", choices=sorted(REGISTRY), help="only these formats")
    args = ap.parse_args()
    found_any = False
    for fmt in args.format or sorted(REGISTRY):
        found: dict[str, list] = defaultdict(list)

        def report(dataset, outcome):
            for p in outcome.problems:  # a class: the problem with its paths and numbers blurred
                found[re.sub(r"(/tmp/\S+|\d+)", "…", p)[:90]].append((dataset, outcome, p))

        t0 = time.perf_counter()
        codes = readerfuzz.run(fmt, args.cases, derandomize=False, seed=args.seed,
                               twice=args.twice, report=report)
        print(f"{fmt}: {sum(codes.values())} cases in {time.perf_counter() - t0:.0f} s, "
              f"exit codes {dict(sorted(codes.items()))}, {len(found)} class(es) of problem", flush=True)
        for key, hits in found.items():
            found_any = True
            dataset, outcome, problem = hits[0]
            print(f"  {len(hits)} x {key}\n    {problem[:600]}\n    {dataset.describe()}\n{dataset.listing()[:3000]}")
    return 1 if found_any else 0


if __name__ == "__main__":
    sys.exit(main())
