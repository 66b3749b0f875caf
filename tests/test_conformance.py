"""ONNX node conformance: the onnx package's own per-op test cases, run through nnc.

The cases come from `onnx.backend.test.case.node.collect_testcases(None)`. A case is selected
when every op in it (subgraphs and model-local function bodies included) is one nnc supports
(`SUPPORTED_OPS`) and every tensor is a plain numeric or bool tensor (no float8, float4, int4,
bfloat16, string or complex; no sequences or optionals). Each selected case is compiled with
`nnc.compile(target="host")` and its outputs compared with the expected ones (rtol 1e-3,
atol 1e-5, NaN == NaN; dtype and shape must match).

nnc compiles static graphs, so inputs that real models always give as initializers are frozen into
initializers before compiling: shape-like operands (Reshape's shape, Slice's starts, Resize's
scales, reduction axes, ...; see `CONST_OPERANDS`).

Each case runs in a forked child (so a crash or hang in generated code fails only that case), two
at a time. Command line (from the repository root):

    python -m tests.test_conformance --list             # the selected cases
    python -m tests.test_conformance [-k conv] [--backend nnc|interp|ort] [--json out.json]
"""

from __future__ import annotations

import argparse
import faulthandler
import inspect
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

SUPPORTED_OPS = frozenset(
    """Conv ConvTranspose Gemm MatMul Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Reciprocal Floor
    Ceil Relu LeakyRelu PRelu Elu Selu Sigmoid HardSigmoid HardSwish Tanh Softplus Erf Gelu Clip
    Min Max Sum Mean Softmax LogSoftmax MaxPool AveragePool GlobalAveragePool GlobalMaxPool
    BatchNormalization InstanceNormalization LayerNormalization LRN Reshape Flatten Transpose
    Squeeze Unsqueeze Concat Split Slice Gather Pad Resize Upsample ReduceMean ReduceSum
    ReduceMax ReduceMin ReduceProd ReduceSumSquare ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
    ArgMax ArgMin Cast Identity Dropout Constant ConstantOfShape
    Shape Expand Tile Where Equal Less Greater Not And Or DepthToSpace SpaceToDepth LSTM GRU RNN
    If""".split()
)

ALLOWED_ELEM_TYPES = frozenset({
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BOOL,
    TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
    TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
})
ALLOWED_NP_DTYPES = frozenset(
    np.dtype(t) for t in ("float32", "float64", "float16", "bool", "int8", "int16", "int32",
                          "int64", "uint8", "uint16", "uint32", "uint64")
)

# Operand positions that are initializers in real models; the harness freezes case inputs there.
_REDUCE = (1,)  # the `axes` input of opset-18 reductions
CONST_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1, 2), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "Resize": (1, 2, 3), "Upsample": (1,), "Split": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "ReduceMean": _REDUCE, "ReduceSum": _REDUCE, "ReduceMax": _REDUCE, "ReduceMin": _REDUCE,
    "ReduceProd": _REDUCE, "ReduceSumSquare": _REDUCE, "ReduceL1": _REDUCE, "ReduceL2": _REDUCE,
    "ReduceLogSum": _REDUCE, "ReduceLogSumExp": _REDUCE, "ConstantOfShape": (0,),
    "Dropout": (1, 2),
    # recurrent ops: sequence_lens (nnc accepts only a constant equal to the sequence length)
    "LSTM": (4,), "GRU": (4,), "RNN": (4,),
    # an If folds at compile time: its condition is what a real model gets from --bind
    "If": (0,),
}

RTOL, ATOL = 1e-3, 1e-5
PASS_THRESHOLD = 0.95
CASE_TIMEOUT_S = 180.0
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "conformance.json"


# --- selection ---------------------------------------------------------------------------------


@cache
def all_cases() -> tuple[Any, ...]:
    """Every node test case in the installed onnx package (collection takes a few seconds)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        return tuple(collect_testcases(None))


def _graph_ops(graph: onnx.GraphProto, functions: dict[tuple[str, str], onnx.FunctionProto],
               seen: set[tuple[str, str]]) -> set[tuple[str, str]]:
    ops: set[tuple[str, str]] = set()
    for node in graph.node:
        key = (node.domain, node.op_type)
        if key in functions:
            if key not in seen:  # a model-local function: what counts is its body
                seen.add(key)
                ops |= _nodes_ops(functions[key].node, functions, seen)
            continue
        ops.add(("" if node.domain == "ai.onnx" else node.domain, node.op_type))
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.type in (
                    onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else []:
                ops |= _graph_ops(sub, functions, seen)
    return ops


def _nodes_ops(nodes: Iterable[onnx.NodeProto],
               functions: dict[tuple[str, str], onnx.FunctionProto],
               seen: set[tuple[str, str]]) -> set[tuple[str, str]]:
    graph = onnx.GraphProto()
    graph.node.extend(nodes)
    return _graph_ops(graph, functions, seen)


def model_ops(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """(domain, op_type) of every op the model runs, through subgraphs and local functions."""
    functions = {(f.domain, f.name): f for f in model.functions}
    return _graph_ops(model.graph, functions, set())


def _type_problem(tp: onnx.TypeProto, where: str) -> str | None:
    kind = tp.WhichOneof("value")
    if kind != "tensor_type":
        return f"{where}: {kind} values"
    if tp.tensor_type.elem_type not in ALLOWED_ELEM_TYPES:
        return f"{where}: {TensorProto.DataType.Name(tp.tensor_type.elem_type)} tensors"
    return None


def _graph_type_problem(graph: onnx.GraphProto) -> str | None:
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if problem := _type_problem(vi.type, f"value {vi.name!r}"):
            return problem
    for t in graph.initializer:
        if t.data_type not in ALLOWED_ELEM_TYPES:
            return f"initializer {t.name!r}: {TensorProto.DataType.Name(t.data_type)}"
    for node in graph.node:
        for attr in node.attribute:
            tensors = [attr.t] if attr.type == onnx.AttributeProto.TENSOR else list(attr.tensors)
            for t in tensors:
                if t.data_type not in ALLOWED_ELEM_TYPES:
                    return f"{node.op_type} attribute: {TensorProto.DataType.Name(t.data_type)}"
            if node.op_type in ("Cast", "CastLike") and attr.name == "to" and (
                    attr.i not in ALLOWED_ELEM_TYPES):
                return f"Cast to {TensorProto.DataType.Name(attr.i)}"
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                if problem := _graph_type_problem(sub):
                    return problem
    return None


def _data_problem(values: Sequence[Any]) -> str | None:
    for v in values:
        if isinstance(v, onnx.TensorProto):
            if v.data_type not in ALLOWED_ELEM_TYPES:
                return f"data: {TensorProto.DataType.Name(v.data_type)}"
        elif not isinstance(v, np.ndarray | np.generic):
            return f"data: {type(v).__name__} values"
        elif np.asarray(v).dtype not in ALLOWED_NP_DTYPES:
            return f"data: {np.asarray(v).dtype} arrays"
    return None


def exclusion_reason(case: Any) -> str | None:
    """Why a case is outside the selection (None: it is selected)."""
    unsupported = sorted(
        f"{d}.{o}" if d else o for d, o in model_ops(case.model) if d or o not in SUPPORTED_OPS)
    if unsupported:
        return "ops: " + ", ".join(unsupported)
    if problem := _graph_type_problem(case.model.graph):
        return problem
    for f in case.model.functions:
        graph = onnx.GraphProto()
        graph.node.extend(f.node)
        if problem := _graph_type_problem(graph):
            return problem
    for inputs, outputs in case.data_sets:
        if problem := _data_problem(list(inputs) + list(outputs)):
            return problem
    if _random_dropout(case):
        return "random output: training-mode Dropout with ratio > 0"
    return None


def _random_dropout(case: Any) -> bool:
    """Training-mode Dropout draws a random mask no implementation can reproduce."""
    feeds, _ = case_io(case)
    feeds.update({t.name: numpy_helper.to_array(t) for t in case.model.graph.initializer})
    for node in case.model.graph.node:
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            training = feeds.get(node.input[2])
            ratio = feeds.get(node.input[1], 0.5) if node.input[1] else 0.5
            if training is None or (bool(training) and float(ratio) > 0):
                return True
    return False


def select_cases(cases: Iterable[Any] | None = None) -> list[Any]:
    """The conformance selection: cases using only supported ops and plain tensor types."""
    return [c for c in (all_cases() if cases is None else cases) if exclusion_reason(c) is None]


# --- running one case --------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    reason: str = ""
    seconds: float = 0.0


def _as_array(v: Any) -> np.ndarray:
    return numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)


def case_io(case: Any) -> tuple[dict[str, np.ndarray], list[tuple[str, np.ndarray]]]:
    """(feeds by input name, [(output name, expected array)]) of a case's first data set."""
    inputs, outputs = case.data_sets[0]
    graph = case.model.graph
    init_names = {t.name for t in graph.initializer}
    names = [vi.name for vi in graph.input if vi.name not in init_names]
    feeds = {n: _as_array(v) for n, v in zip(names, inputs, strict=False) if n}
    expected = [(vi.name, _as_array(v)) for vi, v in zip(graph.output, outputs, strict=False)]
    return feeds, expected


def _const_needed(graph: onnx.GraphProto) -> set[str]:
    """Values that must be compile-time constants: `CONST_OPERANDS` slots and everything they are
    computed from (Shape stops the walk: its output depends on the static shape only)."""
    needed = {node.input[pos] for node in graph.node
              for pos in CONST_OPERANDS.get(node.op_type, ()) if pos < len(node.input)}
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if node.op_type != "Shape" and any(o in needed for o in node.output):
                new = {i for i in node.input if i} - needed
                if new:
                    needed |= new
                    changed = True
    needed.discard("")
    return needed


def freeze_const_operands(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Turn the graph inputs that (maybe through other ops) feed `CONST_OPERANDS` slots into
    initializers."""
    frozen = _const_needed(model.graph) & set(feeds)
    if not frozen:
        return model, feeds
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [vi for vi in out.graph.input if vi.name not in frozen]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    for name in sorted(frozen):
        out.graph.initializer.append(numpy_helper.from_array(feeds[name], name))
    out.ir_version = max(out.ir_version, 4)  # initializers outside graph.input need IR >= 4
    return out, {k: v for k, v in feeds.items() if k not in frozen}


def compare(expected: Sequence[tuple[str, np.ndarray]], actual: dict[str, Any]) -> str | None:
    """One-line description of the first mismatch, None when all outputs agree."""
    for name, want in expected:
        if name not in actual:
            return f"output {name!r} missing (got {sorted(actual)})"
        got = np.asarray(actual[name])
        if got.dtype != want.dtype:
            return f"output {name!r}: dtype {got.dtype}, expected {want.dtype}"
        if got.shape != want.shape:
            return f"output {name!r}: shape {got.shape}, expected {want.shape}"
        if want.dtype.kind in "fc":
            ok = np.isclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
            if not ok.all():
                g64, w64 = got.astype(np.float64), want.astype(np.float64)
                with np.errstate(all="ignore"):
                    err = np.where(ok, 0.0, np.abs(g64 - w64))
                i = np.unravel_index(int(np.nanargmax(np.nan_to_num(err, nan=np.inf))), want.shape)
                return (f"output {name!r}: {int((~ok).sum())}/{ok.size} values differ, e.g. at "
                        f"{tuple(int(k) for k in i)}: {g64[i]:.6g} vs {w64[i]:.6g}")
        elif not np.array_equal(got, want):
            bad = int((got != want).sum())
            return f"output {name!r}: {bad}/{want.size} values differ"
    return None


def _compile_kwargs() -> dict[str, Any]:
    import nnc

    params = inspect.signature(nnc.compile).parameters
    kwargs: dict[str, Any] = {}
    if "opt_level" in params:  # -O1: these graphs are tiny, build time dominates
        kwargs["opt_level"] = 1 if isinstance(params["opt_level"].default, int) else "-O1"
    if "bench" in params:  # the benchmark executable is not needed here
        kwargs["bench"] = False
    return kwargs


def run_nnc(model: onnx.ModelProto, feeds: dict[str, np.ndarray], workdir: Path) -> dict[str, Any]:
    import nnc

    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    compiled = nnc.compile(model, target="host", input_shapes=shapes, output_dir=workdir,
                           **_compile_kwargs())
    return compiled.run(feeds)


def run_interp(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], workdir: Path
) -> dict[str, Any]:
    """The graph-IR numpy interpreter: importer + references, no code generation."""
    from nnc.compiler.onnx.importer import import_model
    from nnc.ir.interp import run_graph

    graph = import_model(model, {k: tuple(v.shape) for k, v in feeds.items()})
    return run_graph(graph, feeds)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], workdir: Path) -> dict[str, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


Runner = Callable[[onnx.ModelProto, dict[str, np.ndarray], Path], dict[str, Any]]
BACKENDS: dict[str, tuple[Runner, bool]] = {  # name -> (runner, freeze const operands)
    "nnc": (run_nnc, True),
    "interp": (run_interp, True),
    "ort": (run_ort, False),
}


def run_case(case: Any, backend: str, workdir: Path) -> CaseResult:
    """Run one case in this process; every exception becomes a failed result."""
    runner, freeze = BACKENDS[backend]
    start = time.perf_counter()
    try:
        feeds, expected = case_io(case)
        model = case.model
        if freeze:
            model, feeds = freeze_const_operands(model, feeds)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            actual = runner(model, feeds, workdir)
        reason = compare(expected, actual)
    except Exception as e:
        lines = str(e).strip().splitlines()
        reason = f"{type(e).__name__}: {lines[0] if lines else ''}"
        if os.environ.get("NNC_DEBUG"):
            traceback.print_exc()
    return CaseResult(case.name, reason is None, reason or "", time.perf_counter() - start)


def run_case_forked(case: Any, backend: str, workdir: Path, timeout: float) -> CaseResult:
    """`run_case` in a forked child: a crash or a hang fails the case, not the whole run."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setpgid(0, 0)  # its own process group, so a timeout also stops its compilers
            if not os.environ.get("NNC_DEBUG"):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
            # JSON, not pickle: the test module may not be importable by name in the parent.
            data = json.dumps(asdict(run_case(case, backend, workdir))).encode()
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    start = time.perf_counter()
    chunks: list[bytes] = []
    timed_out = False
    with os.fdopen(r, "rb", buffering=0) as f:
        while True:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                timed_out = True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            ready, _, _ = select.select([f], [], [], min(left, 1.0))
            if ready:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - start
    if timed_out:
        return CaseResult(case.name, False, f"timeout after {timeout:.0f} s", seconds)
    if chunks:
        try:
            return CaseResult(**json.loads(b"".join(chunks)))
        except Exception:
            pass
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        return CaseResult(case.name, False, f"crashed ({sig})", seconds)
    return CaseResult(case.name, False, f"child exited with {os.WEXITSTATUS(status)}", seconds)


# --- running the selection ---------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    backend: str
    passed: int
    total: int
    seconds: float
    failures: tuple[tuple[str, str], ...]

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def line(self) -> str:
        return f"conformance ({self.backend}): {self.passed}/{self.total} passed ({self.rate:.1%})"

    def table(self) -> str:
        rows = ["| case | reason |", "|---|---|"]
        rows += [f"| {name} | {reason.replace('|', '/')[:160]} |" for name, reason in self.failures]
        return "\n".join(rows)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**asdict(self), "rate": round(self.rate, 4),
                "failures": [{"case": n, "reason": r} for n, r in self.failures],
                "onnx": onnx.__version__, "rtol": RTOL, "atol": ATOL,
                "frozen_operands": CONST_OPERANDS}
        path.write_text(json.dumps(data, indent=1) + "\n")


def run_conformance(
    cases: Sequence[Any], backend: str = "nnc", workers: int = 2, timeout: float = CASE_TIMEOUT_S,
    keep: bool = False, progress: bool = False,
) -> Summary:
    """Run the cases, `workers` at a time, each in a forked child."""
    if backend == "nnc":
        _compile_kwargs()  # fail here, once, when nnc.compile is missing
    base = Path(tempfile.mkdtemp(prefix="nnc-conformance-"))
    start = time.perf_counter()
    results: list[CaseResult] = []

    def one(case: Any) -> CaseResult:
        workdir = base / case.name
        try:
            return run_case_forked(case, backend, workdir, timeout)
        finally:
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for k, res in enumerate(pool.map(one, cases), 1):
                results.append(res)
                if progress and not res.passed:
                    print(f"[{k}/{len(cases)}] FAIL {res.name}: {res.reason}", flush=True)
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    failures = tuple((r.name, r.reason) for r in results if not r.passed)
    return Summary(backend, len(results) - len(failures), len(results),
                   round(time.perf_counter() - start, 1), failures)


# --- pytest --------------------------------------------------------------------------------------


def _case(name: str) -> Any:
    return next(c for c in all_cases() if c.name == name)


def test_selection_is_plain_tensors_and_supported_ops() -> None:
    selected = select_cases()
    assert len(selected) > 500
    names = {c.name for c in selected}
    assert {"test_relu", "test_conv_with_strides_padding", "test_resize_upsample_scales_nearest",
            "test_reshape_reordered_all_dims"} <= names
    for c in selected:
        assert all(op in SUPPORTED_OPS for _, op in model_ops(c.model))
    assert "test_cast_FLOAT_to_BFLOAT16" not in names
    assert "ops: TopK" in (exclusion_reason(_case("test_top_k")) or "")


def test_freeze_const_operands_makes_shape_inputs_initializers() -> None:
    case = _case("test_reshape_reordered_all_dims")
    feeds, _ = case_io(case)
    model, rest = freeze_const_operands(case.model, feeds)
    assert [vi.name for vi in model.graph.input] == ["data"]
    assert [t.name for t in model.graph.initializer] == ["shape"]
    assert list(rest) == ["data"]
    onnx.checker.check_model(model)


def test_compare_reports_dtype_shape_value_and_nan() -> None:
    a = np.array([1.0, np.nan], np.float32)
    assert compare([("y", a)], {"y": a.copy()}) is None
    assert "dtype" in (compare([("y", a)], {"y": a.astype(np.float64)}) or "")
    assert "shape" in (compare([("y", a)], {"y": a[:1]}) or "")
    assert "1/2 values differ" in (compare([("y", a)], {"y": np.array([1.1, np.nan], np.float32)})
                                   or "")
    assert "missing" in (compare([("y", a)], {}) or "")
    assert compare([("b", np.array([True]))], {"b": np.array([False])}) is not None


def test_forked_runner_survives_crashes(tmp_path: Path) -> None:
    def crash(model: onnx.ModelProto, feeds: dict[str, np.ndarray], workdir: Path) -> dict:
        faulthandler.disable()  # the crash is the point; keep pytest's fault dump out of the log
        os.kill(os.getpid(), signal.SIGSEGV)
        return {}

    BACKENDS["crash"] = (crash, False)
    try:
        res = run_case_forked(_case("test_relu"), "crash", tmp_path, timeout=30)
    finally:
        del BACKENDS["crash"]
    assert not res.passed and res.reason == "crashed (SIGSEGV)"
    ok = run_case_forked(_case("test_relu"), "ort", tmp_path, timeout=60)
    assert ok.passed, ok.reason


@pytest.mark.slow
def test_conformance(capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_conformance(select_cases(), "nnc", workers=2)
    summary.write_json(Path(os.environ.get("NNC_CONFORMANCE_JSON", DEFAULT_JSON)))
    with capsys.disabled():  # the pass count belongs in every test log, passing or not
        if summary.failures:
            print("\n" + summary.table())
        print("\n" + summary.line())
    assert summary.rate >= PASS_THRESHOLD, summary.line()


# --- command line --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.test_conformance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("--excluded", action="store_true", help="list excluded cases with the reason")
    p.add_argument("-k", dest="filter", default="", help="only cases whose name contains this")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="nnc")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, help="seconds per case")
    p.add_argument("--json", type=Path, default=None,
                   help=f"write the summary here (default for the nnc backend: {DEFAULT_JSON})")
    p.add_argument("--keep", action="store_true", help="keep the build directories")
    args = p.parse_args(argv)

    if args.excluded:
        for c in all_cases():
            if (why := exclusion_reason(c)) and args.filter in c.name:
                print(f"{c.name}: {why}")
        return 0
    cases = [c for c in select_cases() if args.filter in c.name]
    if args.list:
        for c in cases:
            print(c.name)
        print(f"{len(cases)} cases selected of {len(all_cases())}", file=sys.stderr)
        return 0
    summary = run_conformance(cases, args.backend, args.workers, args.timeout, args.keep,
                              progress=True)
    if summary.failures:
        print(summary.table())
    print(summary.line() + f" in {summary.seconds:.0f} s")
    out = args.json or (DEFAULT_JSON if args.backend == "nnc" and not args.filter else None)
    if out:
        summary.write_json(out)
        print(f"summary written to {out}")
    return 0 if summary.rate >= PASS_THRESHOLD else 1


if __name__ == "__main__":
    sys.exit(main())
