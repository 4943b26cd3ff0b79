"""The crash-consistency harness's long mode: every kill point of every scenario, each with
every damage (or a larger seeded sample), instead of the test suite's short fixed sample.

    python fuzz/crash.py                 # every case of every scenario
    python fuzz/crash.py --cases 200 --seed 7 -k label

The scenarios are the tests in tests/test_crash.py (the harness: tests/crash.py); each prints
one summary line: the events an uninterrupted run passes, the cases run by outcome (ok,
finished, refused) and in how many the resume found damage and repaired it; then one per
power-cut mode (syncfs, fsync per file): the points traced and the copies resumed. Any
failing case is printed with what was done to OUT and how the result differs, and the exit
status is 1. The test suite's per-test time limit is lifted: every case of a scenario takes
longer than the suite allows one test.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="all", help="cases per scenario: a number, or 'all' (default)")
    ap.add_argument("--seed", type=int, default=0, help="which sample, when --cases is a number")
    ap.add_argument("-k", default="", help="only the scenarios whose test name matches (pytest -k)")
    args = ap.parse_args()
    env = {**os.environ, "CLIPDATA_CRASH_CASES": str(args.cases), "CLIPDATA_CRASH_SEED": str(args.seed),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_crash.py"), "-s", "-q", "-p", "no:cacheprovider",
           "-m", "not nothing", "-o", "timeout=0"] + (["-k", args.k] if args.k else [])
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
