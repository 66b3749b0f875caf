"""ONNX node conformance on `--target opencl`, against the host target's passing cases.

    python -m benchmarks.conformance_opencl [-k conv] [--every N [--offset I]] [--limit N]
        [--device pocl]
        [--json benchmarks/results/conformance_opencl.json]

The cases, the frozen shape operands and the comparison (rtol 1e-3, atol 1e-5, NaN == NaN,
exact dtype and shape) are `tests/test_conformance.py`'s. Every selected case runs twice in
the same run, compiled for the host (C) and for OpenCL (the default device: PoCL's CPU device
here), each in a forked child (so the parent must not have touched OpenCL: PoCL's threads do
not survive a fork). The figure is the issue's bar: of the cases the host passes, the
share OpenCL passes too (bar: >= 98%). Prints the cases the host passes and OpenCL fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tests import test_conformance as conf

BAR = 0.98
DEVICE: str | None = None


def run_opencl(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
               workdir: Path) -> dict[str, Any]:
    import nnc

    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    kwargs = {k: v for k, v in conf._compile_kwargs().items() if k != "bench"}
    compiled = nnc.compile(model, target="opencl", input_shapes=shapes, output_dir=workdir,
                           device=DEVICE, **kwargs)
    return compiled.run(feeds)


conf.BACKENDS["opencl"] = (run_opencl, True)  # forked children inherit it


def compare_targets(cases: list[Any], workers: int = 2, progress: bool = False
                    ) -> dict[str, Any]:
    """Host and OpenCL summaries of `cases` and the OpenCL pass rate on the host's passes."""
    host = conf.run_conformance(cases, "nnc", workers=workers)
    cl = conf.run_conformance(cases, "opencl", workers=workers, progress=progress)
    host_failed = dict(host.failures)
    cl_failed = dict(cl.failures)
    host_passed = [c.name for c in cases if c.name not in host_failed]
    lost = {n: cl_failed[n] for n in host_passed if n in cl_failed}
    both = len(host_passed) - len(lost)
    return {
        "cases": len(cases), "host_passed": len(host_passed), "opencl_passed": cl.passed,
        "both_passed": both, "rate": round(both / len(host_passed), 4) if host_passed else 0.0,
        "host_seconds": host.seconds, "opencl_seconds": cl.seconds,
        "opencl_only_failures": [{"case": n, "reason": r} for n, r in sorted(lost.items())],
        "opencl_failures": [{"case": n, "reason": r} for n, r in sorted(cl_failed.items())],
    }


def main(argv: list[str] | None = None) -> int:
    global DEVICE
    p = argparse.ArgumentParser(prog="python -m benchmarks.conformance_opencl",
                                description=__doc__.splitlines()[0])
    p.add_argument("-k", dest="filter", default="", help="only cases whose name contains this")
    p.add_argument("--limit", type=int, default=0, help="only the first N selected cases")
    p.add_argument("--every", type=int, default=1,
                   help="every Nth selected case only (a sample across all ops)")
    p.add_argument("--offset", type=int, default=0,
                   help="with --every: start the sample at this case (another slice)")
    p.add_argument("--cases", default="", help="only these cases (comma-separated names)")
    p.add_argument("--device", default=None, help="OpenCL device (as nnc compile --device)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    DEVICE = args.device
    cases = [c for c in conf.select_cases() if args.filter in c.name]
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.name in wanted]
        if len(cases) != len(wanted):
            missing = sorted(wanted - {c.name for c in cases})
            print(f"not in the selection: {', '.join(missing)}", file=sys.stderr)
            return 2
    cases = cases[args.offset::max(args.every, 1)]
    if args.limit:
        cases = cases[:args.limit]
    print(f"{len(cases)} cases, host then OpenCL", flush=True)
    r = compare_targets(cases, args.workers, progress=True)
    if r["opencl_only_failures"]:
        print("| case (host passes, OpenCL fails) | reason |\n|---|---|")
        for f in r["opencl_only_failures"]:
            print(f"| {f['case']} | {f['reason'].replace('|', '/')[:160]} |")
    print(f"conformance (opencl): {r['both_passed']}/{r['host_passed']} of the host's passing "
          f"cases ({r['rate']:.1%}; bar {BAR:.0%}); host {r['host_passed']}/{r['cases']}, "
          f"OpenCL {r['opencl_passed']}/{r['cases']}; {r['host_seconds']:.0f} s + "
          f"{r['opencl_seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**r, "onnx": onnx.__version__, "device": DEVICE},
                                        indent=1) + "\n")
        print(f"summary written to {args.json}")
    return 0 if r["rate"] >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
