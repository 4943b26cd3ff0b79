"""The HTTP API fuzzer of `review serve` and `review backend`, long mode: many more generated
requests than the test suite's fixed sample (400 and 200, and 20 damaged label outputs
served), from a seed of your choice.

    python fuzz/serve_api.py                     # 20,000 requests to each server, seed 0
    python fuzz/serve_api.py --cases 100000 --seed 7
    python fuzz/serve_api.py --survey            # go on past failures: each kind listed once
    python fuzz/serve_api.py --only backend      # one server (serve or backend)

The fuzzer is tests/test_serve_fuzz.py (requests built from each server's schemas, and
Label Studio-shaped bodies for the backend; invariants: no 5xx, a one-line reason on every
4xx, no traceback or "bug" line in the server log, a valid decisions.jsonl, nothing written
outside OUT, no fit failing with an exception). It prints a summary line per server: the
cases run, by status and by endpoint. A failing case is printed, shrunk to a small example,
and the exit status is 1; with --survey the run goes on, and every kind of failure is listed
with its count and one example. Every request has a 60 s limit and the run 10 hours.
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
    ap.add_argument("--cases", type=int, default=20_000, help="requests to generate (default 20000)")
    ap.add_argument("--seed", type=int, default=0, help="which sample (default 0)")
    ap.add_argument("--survey", action="store_true", help="go on past failures and list each kind once")
    ap.add_argument("--only", choices=["serve", "backend"], help="fuzz one server (default both)")
    args = ap.parse_args()
    env = {**os.environ, "CLIPDATA_API_FUZZ_CASES": str(args.cases), "CLIPDATA_API_FUZZ_SEED": str(args.seed),
           "CLIPDATA_API_FUZZ_DAMAGE_CASES": str(max(20, args.cases // 50)),  # each starts a server
           "CLIPDATA_API_FUZZ_SURVEY": "1" if args.survey else "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_serve_fuzz.py"), "-s", "-q",
           "-p", "no:cacheprovider", "-o", "timeout=36000"]
    if args.only:
        cmd += ["-k", "backend" if args.only == "backend" else "not backend"]
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
