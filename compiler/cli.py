"""The `nnc` command line: compile, run, bench, inspect, tune.

User errors (NncError: bad file, unsupported op, dynamic shape, wrong input...) print one line and
exit with code 2; internal errors print one line too unless NNC_DEBUG=1 asks for the traceback,
and exit with 1. Generated C the compiler rejects is an internal error too: the compiler's first
errors are printed, and --keep-failed / NNC_DEBUG=1 keeps the project.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from nnc import config
from nnc.compiler.errors import NncError
from nnc.compiler.signals import Terminated, terminate_on_signals


def _cmd_compile(args: argparse.Namespace) -> int:
    from nnc.compiler.api import compile as nnc_compile
    from nnc.compiler.onnx.bind import parse_bind
    from nnc.compiler.onnx.importer import parse_input_shapes

    if args.quantize is None and (args.calibration or args.calibration_method):
        raise NncError("--calibration/--calibration-method need --quantize int8")
    if args.quantize is None and (args.report or args.report_json or args.eval):
        raise NncError("--report/--report-json/--eval need --quantize int8")
    if args.report_json:
        _check_writable(args.report_json, "--report-json")  # before the compile, not after
    if args.report_html:
        _check_writable(args.report_html, "--report-html")
    if args.quantize is not None and not args.calibration:
        raise NncError("--quantize int8 needs --calibration DATA (.npz, folder of .npy, or "
                       "'random')")
    if args.calibration == "random":
        print("nnc: WARNING: calibrating on RANDOM data (--calibration random): the int8 model's "
              "accuracy on real inputs will likely be poor; pass representative samples",
              file=sys.stderr)
        # the API's own warning says the same: once is enough
        warnings.filterwarnings("ignore", message="calibrating on RANDOM data")
    model = nnc_compile(
        args.model,
        target=args.target,
        input_shapes=parse_input_shapes(args.input_shape or []),
        bind=parse_bind(args.bind or []),
        output_dir=args.output,
        pipeline=args.pipeline,
        dump_ir=args.dump_ir,
        ram=args.ram,
        flash=args.flash,
        quantize=args.quantize,
        calibration=args.calibration,
        calibration_method=args.calibration_method or "minmax",
        evaluation=args.eval,
        report=bool(args.report or args.report_json),
        kernels=args.kernels,
        cmsis_nn=args.cmsis_nn,
        keep_failed=args.keep_failed,
        int8_rounding=args.int8_rounding,
        device=args.device,
        threads=args.threads,
        tuning_cache=False if args.no_tuning_cache else args.tuning_cache,
    )
    t = model.compile_time_s
    info = model.info
    print(f"compiled {args.model} for {model.target.name} into {model.source_dir}")
    print(f"  kernels {info['num_kernels']}, MACs {info['macs']:,}, "
          f"weights {info['weight_bytes']:,} B, arena {info['arena_bytes']:,} B "
          f"(floor {info['arena_floor_bytes']:,} B)")
    if info.get("threads", 1) > 1:
        print(f"  threads {info['threads']}: {info['parallel_kernels']} of "
              f"{info['num_kernels']} kernels run a parallel loop")
    if info.get("kernel_library"):
        print(f"  {info['library_calls']} kernels call {info['kernel_library']}")
    if info.get("int8_rounding"):
        print(f"  int8 rounding: {info['int8_rounding']}")
    if "opencl" in info:
        cl = info["opencl"]
        if cl.get("device"):
            how = "cached binary reused" if cl["binary_from_cache"] else "built from source"
            print(f"  OpenCL: {cl['kernels']} kernels in model.cl, program {how} on "
                  f"{cl['device']} in {cl['build_ms']:.1f} ms")
        else:
            print(f"  OpenCL: {cl['kernels']} kernels in model.cl; {cl['note']}")
    if "tuning" in info:
        tu = info["tuning"]
        print(f"  tuning cache {tu['cache']}: {tu['tuned_kernels']} kernels scheduled from it "
              f"({tu['objective']})")
        if tu.get("family_fallbacks"):
            print(f"  note: some schedules were measured on {', '.join(tu['family_fallbacks'])} "
                  "(same ISA family; no record for this target)")
        if args.tuning_cache and not tu["tuned_kernels"] and info.get("library_calls"):
            print("  note: tuned schedules are for nnc's generated kernels; this build calls "
                  "CMSIS-NN (add --kernels generated)")
    if "firmware" in info:
        fw = info["firmware"]
        print(f"  firmware: flash {fw['flash_bytes']:,} B of {info['flash_bytes_limit']:,} B, "
              f"RAM {fw['ram_bytes']:,} B (arena + {fw['stack_bytes']:,} B stack, estimated "
              f"from the call graph; `nnc bench` measures it) of {info['ram_bytes_limit']:,} B")
    if "quantization" in info:
        q = info["quantization"]
        sqnr = ", ".join(f"{k} {v} dB" for k, v in q["output_sqnr_db"].items())
        ev = q["evaluation"]
        print(f"  int8: {q['int8_ops']} int8 ops, float ops {q['float_ops'] or 'none'}; "
              f"calibrated on {q['calibration_samples']} samples; output SQNR vs float on "
              f"{ev['samples']} {ev['data']}: {sqnr}")
    print("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
    rep = model.quant_report
    if args.report:
        print()
        print(rep.table())
    if args.report_json:
        rep.save_json(args.report_json)
        print(f"accuracy report written to {args.report_json}")
    if args.report_html is not None:
        from nnc.compiler.report_html import write_report

        path = write_report(model.source_dir, args.report_html or None)
        print(f"HTML report written to {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from nnc.compiler.report_html import write_report

    if args.output:
        _check_writable(args.output, "-o")
    path = write_report(args.dir, args.output, history=args.history, bench=not args.no_bench)
    print(f"HTML report written to {path} ({path.stat().st_size:,} B)")
    return 0


def parse_duration(text: str) -> float:
    """Seconds of `90`, `90s`, `10m`, `1.5h`."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", text)
    if not m or float(m[1]) <= 0:
        raise NncError(f"--time-budget {text!r}: give a duration such as 90s, 10m or 1h")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def _cmd_tune(args: argparse.Namespace) -> int:
    from nnc.compiler.onnx.importer import parse_input_shapes
    from nnc.compiler.tune.tuner import tune

    if args.quantize is not None and not args.calibration:
        raise NncError("--quantize int8 needs --calibration DATA (.npz, folder of .npy, or "
                       "'random')")
    if args.quantize is None and args.calibration:
        raise NncError("--calibration needs --quantize int8")
    budget = parse_duration(args.time_budget) if args.time_budget else None
    result = tune(args.model, args.target, input_shapes=parse_input_shapes(args.input_shape or []),
                  quantize=args.quantize, calibration=args.calibration, trials=args.trials,
                  time_budget_s=budget, cache=args.cache, search=args.search, batch=args.batch,
                  early_stop=args.early_stop, seed=args.seed, progress=not args.no_progress,
                  workers=args.workers, cluster=args.cluster, plot=args.plot)
    print(result.table())
    if result.plot is not None:
        means = result.curve_means
        print(f"curves in {result.plot}: best so far / default, geometric mean over the "
              "workloads: " + ", ".join(f"{s} {c[-1]:.3f} after {len(c)} trials"
                                        for s, c in means.items() if c))
    from nnc.compiler.history import Run, file_hash

    options = {k: v for k, v in (("quantize", args.quantize), ("trials", args.trials),
                                 ("search", args.search), ("seed", args.seed)) if v is not None}
    _record(args.history, lambda: [Run.from_tune(
        result, Path(args.model).stem, file_hash(args.model),
        "int8" if args.quantize else "fp32", options)])
    if result.stopped and result.stopped != "trials":
        print(f"stopped: {result.stopped}")
    print(f"compile with the tuned schedules: nnc compile {args.model} --target {args.target}"
          + (f" --quantize int8 --calibration {args.calibration}" if args.quantize else "")
          + (" --kernels generated" if os.environ.get("CMSIS_NN_PATH") else "")
          + (f" --tuning-cache {args.cache}" if args.cache else ""))
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from nnc.compiler.tune.cache import TuningCache, export_cache, import_cache, prune

    if args.action in ("export", "import") and not args.workload:
        raise NncError(f"cache {args.action} needs a file: nnc cache {args.action} FILE.json")
    if args.action == "import":
        with TuningCache.open(args.cache) as cache:
            added, skipped = import_cache(cache, args.workload)
            print(f"{cache.path}: {added} trials imported from {args.workload}, {skipped} "
                  f"already there; {cache.count()} trials in all")
        return 0
    if args.action == "export":
        with TuningCache.open(args.cache, create=False) as cache:
            n = export_cache(cache, args.workload, workload=args.only)
            print(f"{args.workload}: {n} trials exported from {cache.path}")
        return 0
    if args.action == "prune":
        if args.keep is not None and not args.superseded:
            raise NncError("cache prune --keep N goes with --superseded")
        chosen = args.failed or args.superseded or args.other_versions
        with TuningCache.open(args.cache, create=False) as cache:
            rep = prune(cache, failed=args.failed or not chosen, superseded=args.superseded,
                        keep=args.keep or 1, other_versions=args.other_versions,
                        dry_run=args.dry_run)
            verb = "would drop" if args.dry_run else "dropped"
            print(f"{cache.path}: {verb} {rep.dropped} trials ({rep.failed} failed or wrong, "
                  f"{rep.superseded} superseded, {rep.other_versions} of other nnc versions); "
                  f"{rep.kept} kept")
        return 0
    with TuningCache.open(args.cache, create=False) as cache:
        trials = cache.trials()
        groups: dict[tuple[str, str, str], list] = {}
        for t in trials:
            groups.setdefault((t.workload, t.target, t.objective), []).append(t)
        if args.action == "list":
            print(f"{cache.path}: {len(trials)} trials of {len(groups)} workloads")
            rows = [("workload", "op", "target", "objective", "trials", "rejected", "default",
                     "best", "speedup")]
            for (w, target, objective), ts in groups.items():
                ok = [t.figure for t in ts if t.status == "ok" and t.figure is not None]
                default = next((t.figure for t in ts if t.is_default), None)
                best = min(ok) if ok else None
                rows.append((ts[0].workload_hash, w.split("(")[0], target.split()[0]
                             .removeprefix("target="), objective,
                             str(sum(not t.is_default for t in ts)),
                             str(sum(t.status != "ok" for t in ts)),
                             f"{default:,.0f}" if default else "-",
                             f"{best:,.0f}" if best else "-",
                             f"{default / best:.2f}x" if default and best else "-"))
            widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
            for r in rows:
                print("  ".join(c.ljust(wd) if i < 4 else c.rjust(wd)
                                for i, (c, wd) in enumerate(zip(r, widths, strict=True))))
            return 0
        shown = [k for k in groups if groups[k][0].workload_hash.startswith(args.workload or "")]
        if not args.workload or not shown:
            raise NncError(f"cache show needs a workload hash of {cache.path} (`nnc cache list` "
                           "lists them)")
        for key in shown:
            w, target, objective = key
            print(f"workload #{groups[key][0].workload_hash} {w}\n  {target}, {objective}")
            for t in sorted(groups[key], key=lambda t: (t.status != "ok", t.figure or 0)):
                fig = f"{t.figure:,.0f}" if t.figure is not None else "-"
                extra = " (default)" if t.is_default else (f" ({t.error})" if t.error else "")
                print(f"  {t.status:6} {fig:>12}  {t.steps}{extra}")
    return 0


def _check_writable(path: str, flag: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise NncError(f"{flag} {path}: is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise NncError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise NncError(f"{flag} {path}: not writable")


NPZ_HINT = "np.savez('inputs.npz', NAME=array, ...) writes one, an array per model input"


def _load_npz(path: str) -> dict:
    import zipfile

    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise NncError(f"--inputs {path}: no such file")
    if not zipfile.is_zipfile(p):
        kind = "a .npy file (one array)" if p.read_bytes()[:6] == b"\x93NUMPY" else "not a .npz"
        raise NncError(f"--inputs {path}: {kind}; --inputs takes a .npz: {NPZ_HINT}")
    try:
        with np.load(p, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickled" in str(e):
            raise NncError(f"--inputs {path}: holds object (pickled) arrays, which nnc does not "
                           f"load; {NPZ_HINT}") from None
        raise NncError(f"--inputs {path}: not a readable .npz ({e}); {NPZ_HINT}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise NncError(f"--inputs {path}: not a readable .npz ({e}); {NPZ_HINT}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from nnc.compiler.api import CompiledModel

    if args.outputs:
        _check_writable(args.outputs, "--outputs")
    model = CompiledModel.load(args.dir)
    if args.device:
        model.device = args.device
    inputs = _load_npz(args.inputs) if args.inputs else model.random_inputs(seed=0)
    outputs = model.run(inputs)
    if args.outputs:
        tmp = Path(args.outputs + ".tmp.npz")
        try:
            np.savez(tmp, **outputs)
            tmp.replace(args.outputs)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise NncError(f"--outputs {args.outputs}: cannot write ({e.strerror})") from None
    for name, arr in outputs.items():
        flat = arr.reshape(-1)
        head = ", ".join(f"{x:.6g}" if arr.dtype.kind == "f" else str(x) for x in flat[:8])
        print(f"{name}: {arr.dtype}{list(arr.shape)} [{head}{', ...' if flat.size > 8 else ''}]")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from nnc.compiler.api import CompiledModel

    model = CompiledModel.load(args.dir)
    if args.device:
        model.device = args.device
    result = model.benchmark(warmup=args.warmup, repeat=args.repeat)
    _record(args.history, lambda: [_bench_run(model.info, result)])
    if args.json:
        print(json.dumps(result, indent=2))
    elif model.target.kind == "opencl":
        print(_opencl_report(result))
    elif model.is_device:
        print(_device_report(result))
    else:
        lat = result["latency_ms"]
        print(f"{result['target']}: median {lat['median']:.4f} ms, min {lat['min']:.4f} ms, "
              f"max {lat['max']:.4f} ms over {result['repeat']} runs; {result['macs']:,} MACs"
              + (f"; {result['threads']} threads" if result.get("threads", 1) > 1 else ""))
    return 0


def _opencl_report(r: dict) -> str:
    """Per-kernel times from OpenCL profiling events (medians) and the whole-run time."""
    rows = [("#", "kernel", "op", "queued->end us", "start->end us", "min us", "MACs", "share")]
    total = max(sum(lay["median_us"] for lay in r["layers"]), 1e-9)
    for i, lay in enumerate(r["layers"]):
        rows.append((str(i), lay["kernel"], lay["op"], f"{lay['queued_end_us']:.1f}",
                     f"{lay['median_us']:.1f}", f"{lay['min_us']:.1f}", f"{lay['macs']:,}",
                     f"{100 * lay['median_us'] / total:.1f}%"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if k in (1, 2) else c.rjust(w)
                       for k, (c, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lat = r["latency_ms"]
    lines += ["", f"{r['target']} on {r['device']}: whole run (inputs written, kernels, outputs "
              f"read) median {lat['median']:.4f} ms, min {lat['min']:.4f} ms over "
              f"{r['repeat']} runs; kernels (start->end, summed) {r['kernels_ms']:.4f} ms; "
              f"{r['macs']:,} MACs"]
    return "\n".join(lines)


def _device_report(r: dict) -> str:
    """Per-layer profile and totals of one run on an emulated board."""
    rows = [("#", "layer", "op", "instructions", "MACs", "instr/MAC", "share")]
    total = max(int(r["instructions"]), 1)
    for i, lay in enumerate(r["layers"]):
        ipm = lay.get("instructions_per_mac")
        rows.append((str(i), lay["name"] or lay.get("kernel", ""), lay["op"],
                     f"{lay['instructions']:,}", f"{lay['macs']:,}",
                     f"{ipm:.2f}" if ipm else "-", f"{100 * lay['instructions'] / total:.1f}%"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if k in (1, 2) else c.rjust(w)
                       for k, (c, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    ipm_total = r.get("instructions_per_mac")
    lines += [
        "",
        f"{r['target']} ({r['board']}): {r['instructions']:,} instructions (emulated, not cycles), "
        f"{r['macs']:,} MACs, {ipm_total if ipm_total is not None else '-'} instructions/MAC",
        f"RAM {r['ram_bytes']:,} B (arena {r['arena_bytes']:,}"
        + (f" incl. up to {r['scratch_bytes']:,} library scratch" if r["scratch_bytes"] else "")
        + f" + stack {r['stack_bytes']:,} {r.get('stack_source', 'estimate')}), "
        f"flash {r['flash_bytes']:,} B",
    ]
    return "\n".join(lines)


def _cmd_eval(args: argparse.Namespace) -> int:
    from nnc.compiler.eval import evaluate
    from nnc.compiler.onnx.importer import parse_input_shapes

    if args.quantize is None and args.calibration:
        raise NncError("--calibration needs --quantize int8")
    if args.quantize is not None and not args.calibration:
        raise NncError("--quantize int8 needs --calibration DATA (.npz, folder of .npy, or "
                       "'random')")
    result = evaluate(
        args.model, args.data, target=args.target, labels=args.labels, metric=args.metric,
        samples=args.samples, variants=args.variant, quantize=args.quantize,
        calibration=args.calibration, calibration_method=args.calibration_method or "minmax",
        kernels=args.kernels, input_shapes=parse_input_shapes(args.input_shape or []),
        ram=args.ram, flash=args.flash, output_dir=args.output, progress=not args.quiet)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.table())
    if isinstance(args.model, str) and Path(args.model).is_file():
        from nnc.compiler.history import Run, file_hash

        _record(args.history, lambda: Run.from_eval(result, file_hash(args.model)))
    return 0


def _bench_run(info: dict, result: dict) -> object:
    from nnc.compiler.history import Run

    return Run.from_bench(info, result)


def _record(path: str | None, runs: object) -> None:
    """Append runs to the history (--history, $NNC_HISTORY or the user's data dir); a history
    that cannot be written warns and leaves the command's result alone."""
    from nnc.compiler.history import History

    try:
        history = History.open(path)
        if history is None:
            return
        with history:
            for run in runs():  # type: ignore[operator]
                history.record(run)
    except (NncError, OSError) as e:
        print(f"nnc: warning: not recorded in the history: {e}", file=sys.stderr)


def _cmd_history(args: argparse.Namespace) -> int:
    from nnc.compiler.history import OFF, History, default_path, regressions, table

    path = default_path() if args.history is None else (
        None if args.history.strip().lower() in OFF else Path(args.history))
    if path is None:
        raise NncError("the history is off (--history off or NNC_HISTORY=off); give --history FILE")
    if not path.exists():  # listing creates nothing
        raise NncError(f"no history at {path} yet: `nnc bench` and `nnc eval` write it")
    with History(path) as history:
        runs = history.runs(model=args.model, target=args.target, kind=args.kind)
    found = regressions(runs)
    if args.json:  # stdout stays one JSON document: regressions go with each run
        flagged = {reg.run.id: reg.describe() for reg in found}
        print(json.dumps([{**{k: v for k, v in vars(r).items() if k != "layers"},
                           "regression": flagged.get(r.id)} for r in runs], indent=2))
    else:
        print(table(runs) if runs else f"no runs in {history.path}"
              + (" matching the filters" if args.model or args.target or args.kind else ""))
        for reg in found:
            print(reg.describe())
    return 3 if found and args.fail_on_regression else 0


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="score the original model (onnxruntime) and compiled variants "
                       "(host/device, fp32/int8) on the same labelled samples")
    e.add_argument("model")
    e.add_argument("--data", required=True, metavar="DATA",
                   help="samples: .npz (key = input name, samples on the first axis; a "
                   "'labels' key is taken as the labels), a folder of .npy, or a .npy")
    e.add_argument("--labels", metavar="FILE.npy", help="one label per sample")
    e.add_argument("--metric", choices=["top1", "top5", "auc", "mse", "sqnr"],
                   help="default: top1 with labels (auc for an autoencoder), sqnr without")
    e.add_argument("--samples", type=int, metavar="N", help="use the first N samples")
    e.add_argument("--target", default="host",
                   help="host, cortex-m7, cortex-m4 or cortex-m55 (default: host)")
    e.add_argument("--variant", action="append",
                   choices=["host-fp32", "host-int8", "device-fp32", "device-int8"],
                   help="a variant to run (repeatable; default: host-fp32, device-fp32 on a "
                   "Cortex-M target, and the target's int8 with --quantize)")
    e.add_argument("--quantize", choices=["int8"])
    e.add_argument("--calibration", metavar="DATA", help="as for compile")
    e.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy"])
    e.add_argument("--kernels", choices=["cmsis-nn", "generated"])
    e.add_argument("--input-shape", action="append", metavar="NAME=DxD...")
    e.add_argument("--ram")
    e.add_argument("--flash")
    e.add_argument("-o", "--output", metavar="DIR",
                   help="keep each variant's build in DIR/<variant> (default: temporary)")
    e.add_argument("--json", action="store_true", help="print the results as JSON")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    e.add_argument("--history", metavar="FILE", help=HISTORY_HELP)
    e.set_defaults(fn=_cmd_eval)
    h = sub.add_parser("history", help="list recorded bench/eval runs and flag regressions "
                       "between the last two comparable runs")
    h.add_argument("--model", help="model name or hash prefix")
    h.add_argument("--target")
    h.add_argument("--kind", choices=["bench", "eval", "tune"])
    h.add_argument("--history", metavar="FILE", help=HISTORY_HELP)
    h.add_argument("--json", action="store_true")
    h.add_argument("--fail-on-regression", action="store_true",
                   help="exit with code 3 when a regression is flagged (for CI)")
    h.set_defaults(fn=_cmd_history)
    rp = sub.add_parser("report", help="write one self-contained HTML report of a compiled "
                        "model (summary, layers, memory timeline, int8 SQNR, eval, history)")
    rp.add_argument("dir")
    rp.add_argument("-o", "--output", metavar="FILE", help="default: <dir>/report.html")
    rp.add_argument("--history", metavar="FILE", help=HISTORY_HELP)
    rp.add_argument("--no-bench", action="store_true",
                    help="do not measure the model now (the layer chart shows MACs)")
    rp.set_defaults(fn=_cmd_report)


HISTORY_HELP = ("the history file ('off' records nothing; default: $NNC_HISTORY, where 'off' "
                "turns it off too, else $XDG_DATA_HOME/nnc/history.sqlite)")


def _cmd_inspect(args: argparse.Namespace) -> int:
    if args.ops:
        from nnc.compiler.onnx.registry import supported_op_types

        print("\n".join(sorted(supported_op_types())))
        return 0
    if not args.model:
        raise NncError("inspect needs a model (or --ops)")
    from nnc.compiler.inspect import inspect_model, inspect_opencl
    from nnc.compiler.onnx.bind import parse_bind
    from nnc.compiler.onnx.importer import parse_input_shapes

    if args.target == "opencl":  # the kernels and their work-item mapping
        print(inspect_opencl(args.model, parse_input_shapes(args.input_shape or []),
                             parse_bind(args.bind or [])))
        return 0
    if args.target is not None:
        raise NncError(f"inspect --target {args.target}: only 'opencl' has a kernel report; "
                       "leave --target out for the graph IR")
    print(inspect_model(args.model, parse_input_shapes(args.input_shape or []),
                        optimized=args.optimized, bind=parse_bind(args.bind or [])))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnc", description="Compile ONNX models to C.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compile an ONNX model into a C project and build it")
    c.add_argument("model")
    c.add_argument("--target", default="host",
                   help="host, cortex-m7, cortex-m4, cortex-m55, opencl or tvm (default: host)")
    c.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    c.add_argument("--input-shape", action="append", metavar="NAME=DxD...",
                   help="fix an input's shape, e.g. input=1x3x224x224 (repeatable)")
    c.add_argument("--bind", action="append", metavar="NAME=VALUE",
                   help="fix an input to a constant at compile time: a number, a comma list or "
                   "a .npy file, e.g. sr=16000; the input disappears and what depends on it "
                   "folds (repeatable)")
    c.add_argument("--ram", help="RAM of the real part, e.g. 512K (default: the emulated board's)")
    c.add_argument("--flash", help="flash of the real part, e.g. 2M (default: the board's)")
    c.add_argument("--pipeline", help="pass pipeline (default: the target's)")
    c.add_argument("--dump-ir", metavar="DIR", help="write the IR after every pass into DIR")
    c.add_argument("--quantize", choices=["int8"], help="post-training quantization")
    c.add_argument("--calibration", metavar="DATA",
                   help="calibration samples: .npz (key = input name, samples on the first "
                   "axis), a folder of .npy, or 'random' (poor accuracy; warns)")
    c.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy"],
                   help="how ranges are taken from the calibration data (default: minmax)")
    c.add_argument("--eval", metavar="DATA",
                   help="evaluation samples for the accuracy figures, same forms as "
                   "--calibration (default: the last 20%% of the calibration data, held out)")
    c.add_argument("--report", action="store_true",
                   help="print the int8 accuracy report: per-layer SQNR vs float, output SQNR, "
                   "max error and top-1 agreement on the evaluation samples")
    c.add_argument("--report-json", metavar="PATH", help="write the accuracy report as JSON")
    c.add_argument("--report-html", nargs="?", const="", metavar="FILE",
                   help="write the HTML report (summary, layers, memory timeline, int8 SQNR, "
                   "history) to FILE (default: <output>/report.html); measures one run")
    c.add_argument("--kernels", choices=["cmsis-nn", "generated"],
                   help="who runs the int8 ops: nnc's generated loop nests (default) or calls "
                   "into CMSIS-NN (default on Cortex-M when --cmsis-nn or $CMSIS_NN_PATH names a "
                   "checkout; without one, nnc's portable CMSIS-NN subset)")
    c.add_argument("--cmsis-nn", metavar="PATH",
                   help="a CMSIS-NN checkout to build against (default: $CMSIS_NN_PATH, else "
                   "nnc's portable CMSIS-NN subset)")
    c.add_argument("--device", help="opencl: the device to build and run on: pocl, gpu, cpu, an "
                   "index or part of its name (default: the first device)")
    c.add_argument("--keep-failed", action="store_true",
                   help="keep the generated project when the C compiler fails on it, and print "
                   "its path (NNC_DEBUG=1 does too)")
    c.add_argument("--int8-rounding", choices=["tflite", "onnx"],
                   help="how a pre-quantized model's requantization rounds: 'tflite' (the "
                   "default, every target; bit-exact with TFLite Micro and CMSIS-NN) or 'onnx' "
                   "(one rounding, as onnxruntime)")
    c.add_argument("--threads", type=int, metavar="N",
                   help="host: run the outer independent loop of each big kernel on N threads "
                   "(OpenMP, fixed at compile time; default 1)")
    c.add_argument("--tuning-cache", metavar="FILE",
                   help="schedules from a cache `nnc tune` wrote, for the kernels whose workload "
                   "and target it has measured (default: $NNC_TUNING_CACHE, else "
                   "$XDG_CACHE_HOME/nnc/tuning.sqlite where it exists)")
    c.add_argument("--no-tuning-cache", action="store_true",
                   help="use no tuning cache (the default schedules)")
    c.set_defaults(fn=_cmd_compile)

    t = sub.add_parser("tune", help="measure schedules for every distinct workload of a model "
                       "(on the emulated board, or timed on the host) and store the best in "
                       "the tuning cache")
    t.add_argument("model")
    t.add_argument("--target", default="cortex-m7",
                   help="cortex-m7, cortex-m4 or cortex-m55 (int8, QEMU instructions), or host "
                   "(fp32 conv / gemm, median ns per layer on one pinned CPU; default: "
                   "cortex-m7)")
    t.add_argument("--input-shape", action="append", metavar="NAME=DxD...")
    t.add_argument("--quantize", choices=["int8"], help="post-training quantization")
    t.add_argument("--calibration", metavar="DATA", help="calibration samples, as for compile")
    t.add_argument("--trials", type=int, default=32,
                   help="candidates measured per workload, earlier sessions' included "
                   "(default: 32)")
    t.add_argument("--time-budget", metavar="DURATION", help="stop after this long, e.g. 10m")
    t.add_argument("--cache", metavar="FILE",
                   help="the tuning cache (default: $XDG_CACHE_HOME/nnc/tuning.sqlite)")
    t.add_argument("--search", choices=["guided", "random"], default="guided",
                   help="XGBoost-guided (default) or random search")
    t.add_argument("--batch", type=int, default=8,
                   help="candidates per workload between cost-model refits (default: 8)")
    t.add_argument("--early-stop", type=int, metavar="N",
                   help="stop a workload after N trials without improvement")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=1, metavar="N",
                   help="build and measure a batch's candidates in N worker processes (same "
                   "results as one; default: 1)")
    t.add_argument("--cluster", metavar="ADDRESS",
                   help="build and measure the candidates on the workers of the Dask scheduler "
                   "at ADDRESS (tcp://HOST:8786; `dask scheduler`, `dask worker ADDRESS`; "
                   "pip install nnc[cluster])")
    t.add_argument("--plot", metavar="PNG",
                   help="draw best-so-far vs trials of this search and of the other one (run "
                   "after it with the same budget in a throw-away cache; needs matplotlib: "
                   "pip install nnc[plot])")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--history", metavar="FILE", help=HISTORY_HELP)
    t.set_defaults(fn=_cmd_tune)

    k = sub.add_parser("cache", help="look after a tuning cache: list its workloads, show one's "
                       "trials, prune it, export / import (merge) its records")
    k.add_argument("action", choices=["list", "show", "prune", "export", "import"])
    k.add_argument("workload", nargs="?", metavar="ARG",
                   help="show: the workload hash (or its start); export: the file to write "
                   "(.json, or .sqlite for a new cache); import: a JSON export or a cache file")
    k.add_argument("--only", metavar="HASH", help="export: only the workloads whose hash starts "
                   "with HASH")
    k.add_argument("--failed", action="store_true",
                   help="prune: drop failed and wrong trials (the default when no other is given)")
    k.add_argument("--superseded", action="store_true", help="prune: drop ok trials beyond the "
                   "--keep best of each workload (the default schedule stays)")
    k.add_argument("--keep", type=int, metavar="N", help="prune --superseded: keep N (default 1)")
    k.add_argument("--other-versions", action="store_true",
                   help="prune: drop records other nnc versions wrote")
    k.add_argument("--dry-run", action="store_true", help="prune: count, drop nothing")
    k.add_argument("--cache", metavar="FILE",
                   help="the tuning cache (default: $XDG_CACHE_HOME/nnc/tuning.sqlite)")
    k.set_defaults(fn=_cmd_cache)

    r = sub.add_parser("run", help="run a compiled model")
    r.add_argument("dir")
    r.add_argument("--inputs", help=".npz with one array per model input (default: random)")
    r.add_argument("--outputs", help="write the outputs to this .npz")
    r.add_argument("--device", help="opencl: run on this device (default: the compile's)")
    r.set_defaults(fn=_cmd_run)

    b = sub.add_parser("bench", help="benchmark a compiled model (host: latency; Cortex-M: "
                       "instruction counts per layer on the emulated board)")
    b.add_argument("dir")
    b.add_argument("--json", action="store_true")
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--repeat", type=int, default=100)
    b.add_argument("--device", help="opencl: run on this device (default: the compile's)")
    b.add_argument("--history", metavar="FILE", help=HISTORY_HELP)
    b.set_defaults(fn=_cmd_bench)

    i = sub.add_parser("inspect", help="print the graph IR with per-op MACs and parameters")
    i.add_argument("model", nargs="?")
    i.add_argument("--input-shape", action="append", metavar="NAME=DxD...")
    i.add_argument("--bind", action="append", metavar="NAME=VALUE",
                   help="fix an input to a constant, as for compile")
    i.add_argument("--optimized", action="store_true", help="after the graph passes")
    i.add_argument("--ops", action="store_true", help="list the supported ONNX ops")
    i.add_argument("--target", default=None,
                   help="opencl: list the OpenCL kernels and their work-item mapping")
    i.set_defaults(fn=_cmd_inspect)
    _add_eval_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from nnc.backends.c.build import GeneratedCodeError

    args = build_parser().parse_args(argv)
    try:
        with terminate_on_signals():
            return int(args.fn(args))
    except NncError as e:
        if config.debug():
            traceback.print_exc()
        print(f"nnc: error: {e}", file=sys.stderr)
        return 2
    except GeneratedCodeError as e:  # the C compiler rejected nnc's own code: nnc's bug
        if config.debug():
            traceback.print_exc()
        print(f"nnc: internal error: {e}", file=sys.stderr)
        return 1
    except Terminated as e:
        print(f"nnc: terminated ({e})", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("nnc: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if config.debug():
            traceback.print_exc()
        print(f"nnc: internal error: {type(e).__name__}: {e} (set NNC_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
