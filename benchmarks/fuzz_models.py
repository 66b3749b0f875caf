"""Fuzz nnc's front end with mutated ONNX models: byte flips, truncation and structural damage
of small onnx.helper models, each run through import, the host pass pipeline and C emission
(everything but the C compiler).

Every mutant must end in a clean success or an NncError (a user error, exit 2). Counted as
failures: a crash (any other exception) and a masked internal error (an NncError raised *from*
another exception, i.e. an internal failure relabelled as the user's).

    python -m benchmarks.fuzz_models --mutants 2000 --seed 0
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nnc.errors import NncError


def _vi(name: str, shape: list[int], dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _w(name: str, *shape: int) -> onnx.TensorProto:
    rng = np.random.default_rng(len(name) + sum(shape))
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def seed_models() -> list[onnx.ModelProto]:
    """Small models covering the main op families."""
    graphs = [
        helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                           helper.make_node("Relu", ["h"], ["y"], name="relu")],
                          "mlp", [_vi("x", [2, 4])], [_vi("y", [2, 3])], [_w("w", 4, 3)]),
        helper.make_graph(
            [helper.make_node("Conv", ["x", "k", "kb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], name="bn",
                              epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2])],
            "cnn", [_vi("x", [1, 2, 6, 6])], [_vi("y", [1, 4, 3, 3])],
            [_w("k", 4, 2, 3, 3), _w("kb", 4), _w("s", 4), _w("b", 4), _w("m", 4),
             numpy_helper.from_array(np.ones(4, np.float32), "v")]),
        helper.make_graph(
            [helper.make_node("Add", ["x", "a"], ["s"], name="add"),
             helper.make_node("Mul", ["s", "x"], ["p"], name="mul"),
             helper.make_node("Sigmoid", ["p"], ["y"], name="sig")],
            "eltwise", [_vi("x", [3, 4])], [_vi("y", [3, 4])], [_w("a", 4)]),
        helper.make_graph(
            [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
             helper.make_node("Transpose", ["r"], ["t"], name="tr", perm=[1, 0]),
             helper.make_node("Concat", ["t", "t"], ["c"], name="cat", axis=0),
             helper.make_node("Softmax", ["c"], ["y"], name="sm", axis=1)],
            "shape", [_vi("x", [2, 3, 2])], [_vi("y", [8, 3])],
            [numpy_helper.from_array(np.array([3, 4], np.int64), "shape")]),
        helper.make_graph(
            [helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm", transB=1),
             helper.make_node("ReduceMean", ["g"], ["y"], name="mean", axes=[1], keepdims=1)],
            "gemm", [_vi("x", [2, 5])], [_vi("y", [2, 1])], [_w("w", 3, 5), _w("b", 3)]),
    ]
    return [helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]) for g in graphs]


# ------------------------------------------------------------------ structural mutations

Mutation = Callable[[onnx.ModelProto, random.Random], None]
OPS = ["Relu", "Add", "MatMul", "Conv", "Reshape", "Concat", "Softmax", "Gemm", "Transpose",
       "MaxPool", "Sigmoid", "Identity", "Squeeze", "Flatten", "ReduceMean", "Cast"]


def _node(m: onnx.ModelProto, rng: random.Random) -> onnx.NodeProto:
    return m.graph.node[rng.randrange(len(m.graph.node))]


def _names(m: onnx.ModelProto) -> list[str]:
    g = m.graph
    return ([vi.name for vi in g.input] + [t.name for t in g.initializer]
            + [o for n in g.node for o in n.output] + ["", "nowhere"])


def _random_attr(name: str, rng: random.Random) -> onnx.AttributeProto:
    value = rng.choice([rng.randint(-3, 5), rng.uniform(-2, 2), [rng.randint(-2, 4)] * 2,
                        [1.5, -1.0], "abc", b"\xff\xfe"])
    return helper.make_attribute(name, value)


def m_delete_node(m, rng):
    if m.graph.node:
        del m.graph.node[rng.randrange(len(m.graph.node))]


def m_duplicate_node(m, rng):
    if m.graph.node:
        m.graph.node.append(_node(m, rng))


def m_reverse_nodes(m, rng):
    nodes = list(m.graph.node)[::-1]
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def m_rewire_input(m, rng):
    n = _node(m, rng)
    if n.input:
        n.input[rng.randrange(len(n.input))] = rng.choice(_names(m))


def m_drop_input(m, rng):
    n = _node(m, rng)
    if n.input:
        del n.input[rng.randrange(len(n.input))]


def m_extra_input(m, rng):
    _node(m, rng).input.append(rng.choice(_names(m)))


def m_rename_output(m, rng):
    n = _node(m, rng)
    n.output[0] = rng.choice(_names(m))


def m_change_op(m, rng):
    _node(m, rng).op_type = rng.choice(OPS)


def m_set_attr(m, rng):
    n = _node(m, rng)
    if n.attribute and rng.random() < 0.7:
        a = n.attribute[rng.randrange(len(n.attribute))]
        new = _random_attr(a.name, rng)
        a.CopyFrom(new)
    else:
        n.attribute.append(_random_attr(rng.choice(["axis", "perm", "pads", "epsilon", "foo"]),
                                        rng))


def m_drop_attr(m, rng):
    n = _node(m, rng)
    if n.attribute:
        del n.attribute[rng.randrange(len(n.attribute))]


def m_input_dims(m, rng):
    vi = m.graph.input[rng.randrange(len(m.graph.input))]
    dims = vi.type.tensor_type.shape.dim
    if dims and rng.random() < 0.8:
        d = dims[rng.randrange(len(dims))]
        if rng.random() < 0.3:
            d.dim_param = "N"
        else:
            d.dim_value = rng.choice([0, -1, 1, 2, 7, 1000])
    elif dims:
        del dims[rng.randrange(len(dims))]
    else:
        dims.add().dim_value = 2


def m_input_dtype(m, rng):
    vi = m.graph.input[rng.randrange(len(m.graph.input))]
    vi.type.tensor_type.elem_type = rng.choice([0, 2, 6, 7, 9, 10, 11, 16, 77])


def m_output_dims(m, rng):
    vi = m.graph.output[rng.randrange(len(m.graph.output))]
    dims = vi.type.tensor_type.shape.dim
    if dims:
        dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 1, 5, 99])


def m_init_dims(m, rng):
    if m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        if t.dims and rng.random() < 0.7:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 2, 3, 1 << 20])
        else:
            t.dims.append(rng.choice([1, 2]))


def m_init_dtype(m, rng):
    if m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        t.data_type = rng.choice([0, 6, 7, 10, 11, 16, 77])


def m_init_truncate(m, rng):
    if m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        if t.raw_data:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data))]


def m_init_nan(m, rng):
    if m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        if t.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(t).copy()
            a.flat[rng.randrange(a.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e38])
            t.CopyFrom(numpy_helper.from_array(a, t.name))


def m_drop_initializer(m, rng):
    if m.graph.initializer:
        del m.graph.initializer[rng.randrange(len(m.graph.initializer))]


def m_duplicate_initializer(m, rng):
    if m.graph.initializer:
        m.graph.initializer.append(m.graph.initializer[0])


def m_output_is_input(m, rng):
    m.graph.output[0].name = rng.choice(_names(m))


def m_duplicate_output(m, rng):
    m.graph.output.append(m.graph.output[0])


def m_drop_outputs(m, rng):
    del m.graph.output[:]


def m_opset(m, rng):
    m.opset_import[0].version = rng.choice([1, 6, 7, 9, 11, 13, 17, 21, 99])


def m_ir_version(m, rng):
    m.ir_version = rng.choice([0, 1, 3, 99])


def m_domain(m, rng):
    _node(m, rng).domain = rng.choice(["com.microsoft", "ai.onnx.ml", "bogus"])


STRUCTURAL: list[Mutation] = [
    m_delete_node, m_duplicate_node, m_reverse_nodes, m_rewire_input, m_drop_input,
    m_extra_input, m_rename_output, m_change_op, m_set_attr, m_drop_attr, m_input_dims,
    m_input_dtype, m_output_dims, m_init_dims, m_init_dtype, m_init_truncate, m_init_nan,
    m_drop_initializer, m_duplicate_initializer, m_output_is_input, m_duplicate_output,
    m_drop_outputs, m_opset, m_ir_version, m_domain,
]


def mutate(model: onnx.ModelProto, rng: random.Random) -> tuple[str, bytes]:
    """One mutant: (kind, serialized bytes)."""
    kind = rng.choices(["bytes", "truncate", "structural", "concat"], [3, 1, 8, 0.3])[0]
    data = model.SerializeToString()
    if kind == "bytes":
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        return kind, bytes(buf)
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "concat":
        return kind, data * 2
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = []
    for _ in range(rng.randint(1, 3)):
        f = rng.choice(STRUCTURAL)
        names.append(f.__name__[2:])
        try:
            f(m, rng)
        except (IndexError, ValueError):  # nothing of that kind left to mutate
            pass
    return "structural:" + "+".join(names), m.SerializeToString()


# ---------------------------------------------------------------------------- running


def front(path: Path) -> None:
    """Import, run the host pipeline and emit C: everything `nnc compile` does but gcc."""
    from nnc.backends.c.emit import emit_c
    from nnc.backends.target import parse_target
    from nnc.compiler.onnx.importer import import_model
    from nnc.compiler.pipeline import default_pipeline
    from nnc.passes.manager import PassError, PassManager, parse_pipeline

    graph = import_model(path)
    tgt = parse_target("host")
    try:
        module = PassManager(parse_pipeline(default_pipeline("host")), target=tgt).run(graph)
    except PassError as e:
        raise NncError(f"compilation failed: {e}") from e
    emit_c(module)


def classify(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, NncError):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, NncError):
            return "masked"  # an internal failure relabelled as the user's
        return "user-error"
    return "crash"


def run(mutants: int, seed: int, verbose: bool = False,
        time_limit: float | None = None) -> dict[str, object]:
    rng = random.Random(seed)
    seeds = seed_models()
    counts: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    start = time.perf_counter()
    done = 0
    with tempfile.TemporaryDirectory(prefix="nnc-fuzz-") as tmp:
        path = Path(tmp) / "m.onnx"
        for i in range(mutants):
            if time_limit is not None and time.perf_counter() - start > time_limit:
                break
            kind, data = mutate(seeds[i % len(seeds)], rng)
            path.write_bytes(data)
            exc: BaseException | None = None
            try:
                front(path)
            except (Exception, RecursionError, MemoryError) as e:
                exc = e
            verdict = classify(exc)
            counts[verdict] += 1
            done += 1
            if verdict in ("crash", "masked"):
                assert exc is not None
                failures.append(f"#{i} {kind}: {type(exc).__name__}: {str(exc)[:200]}")
                if verbose:
                    traceback.print_exception(exc)
    return {"mutants": done, "seconds": round(time.perf_counter() - start, 1),
            "counts": dict(counts), "failures": failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutants", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    result = run(args.mutants, args.seed, args.verbose)
    counts = result["counts"]
    print(f"{result['mutants']} mutants in {result['seconds']} s: {counts}")
    for f in result["failures"]:  # type: ignore[attr-defined]
        print("  " + f)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
