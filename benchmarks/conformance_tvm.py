"""ONNX conformance on `--target tvm`, against the host target's: the pass rate of the TVM module
backend on the cases that pass on the host (issue 13's bar: >= 98%).

    python -m benchmarks.conformance_tvm [--host-json benchmarks/results/conformance.json]
                                         [--json benchmarks/results/conformance_tvm.json] [-k conv]

Same cases and comparison (rtol 1e-3, atol 1e-5, NaN == NaN, exact dtype and shape) as
`tests/test_conformance.py`; each case is compiled with `nnc.compile(target="tvm")` in a forked
child. The host's results are read from --host-json when it exists (what `make conformance`
writes), else the host is run here too, in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tests import test_conformance as tc


def run_tvm(model: onnx.ModelProto, feeds: dict[str, np.ndarray], workdir: Path) -> dict[str, Any]:
    import nnc

    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    return nnc.compile(model, target="tvm", input_shapes=shapes, output_dir=workdir).run(feeds)


tc.BACKENDS["tvm"] = (run_tvm, True)


def host_passes(path: Path, cases: list[Any], workers: int) -> tuple[set[str], str]:
    names = {c.name for c in cases}
    if path.exists():
        data = json.loads(path.read_text())
        failed = {f["case"] for f in data["failures"]}
        return names - failed, f"{path} ({data['passed']}/{data['total']})"
    summary = tc.run_conformance(cases, "nnc", workers=workers, progress=True)
    return names - {n for n, _ in summary.failures}, summary.line() + " (this run)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.conformance_tvm")
    p.add_argument("--json", type=Path, default=tc.ROOT / "benchmarks/results/conformance_tvm.json")
    p.add_argument("--host-json", type=Path, default=tc.DEFAULT_JSON)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("-k", dest="filter", default="", help="only cases whose name contains this")
    p.add_argument("--every", type=int, default=1,
                   help="a sample: every N-th selected case (in name order), for a quick figure")
    args = p.parse_args(argv)
    import tvm  # noqa: F401 - imported once here, so the forked children do not pay for it

    cases = sorted((c for c in tc.select_cases() if args.filter in c.name), key=lambda c: c.name)
    cases = cases[::max(args.every, 1)]
    summary = tc.run_conformance(cases, "tvm", workers=args.workers, progress=True)
    tvm_failed = {n for n, _ in summary.failures}
    host, source = host_passes(args.host_json, cases, args.workers)
    both = host - tvm_failed
    rate = len(both) / len(host) if host else 0.0
    if summary.failures:
        print(summary.table())
    print(summary.line() + f" in {summary.seconds:.0f} s")
    print(f"host: {source}")
    print(f"tvm passes {len(both)}/{len(host)} of the cases the host passes ({rate:.1%})")
    summary.write_json(args.json)
    data = json.loads(args.json.read_text())
    data.update(every=args.every, host_source=source, host_passed=len(host),
                tvm_of_host_passed=len(both), rate_of_host=round(rate, 4))
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(f"summary written to {args.json}")
    return 0 if rate >= 0.98 else 1


if __name__ == "__main__":
    sys.exit(main())
