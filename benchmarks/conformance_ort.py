"""onnxruntime's pass rate on nnc's conformance selection, for comparison with nnc's own.

    python -m benchmarks.conformance_ort [--json benchmarks/results/conformance_ort.json]

Same cases, same comparison (rtol 1e-3, atol 1e-5, NaN == NaN, exact dtype and shape) as
`tests/test_conformance.py`; onnxruntime gets the original models (no inputs frozen).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.test_conformance import ROOT, run_conformance, select_cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.conformance_ort")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/conformance_ort.json")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--table", action="store_true", help="print every failure")
    args = p.parse_args(argv)
    summary = run_conformance(select_cases(), "ort", workers=args.workers)
    if args.table and summary.failures:
        print(summary.table())
    print(summary.line())
    summary.write_json(args.json)
    print(f"summary written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
