"""Fuzz nnc with mutated ONNX models: byte flips, truncation and 69 kinds of structural damage
of small onnx.helper models, each run through import, the host pass pipeline and C emission;
then (`--build N`) the mutants that compile are built with gcc, run, and compared with
onnxruntime (see "the build stage" below).

Every mutant must end in a clean success or an NncError (a user error, exit 2). Counted as
failures: a crash (any other exception), a masked internal error (an NncError raised *from*
another exception, i.e. an internal failure relabelled as the user's), and in the build stage a
wrong output, generated C the compiler refuses (exit 1), a dead or hung worker.

    nice python -m benchmarks.fuzz_models --mutants 2000 --seed 0 --build -1
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _rename_uses(m: onnx.ModelProto, old: str, new: str) -> None:
    """Every node input and graph output that reads value `old` reads `new` instead."""
    for node in m.graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
    for vi in m.graph.output:
        if vi.name == old:
            vi.name = new


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


# attribute damage: wrong types, out-of-range values, negative axes
def m_attr_type(m, rng):
    """An existing attribute re-typed (int <-> float <-> ints <-> string <-> tensor <-> graph)."""
    n = _node(m, rng)
    if not n.attribute:
        return
    a = n.attribute[rng.randrange(len(n.attribute))]
    choices = [1, 1.0, [1, 1], [1.0], "x", numpy_helper.from_array(np.ones(2, np.float32)),
               helper.make_graph([], "empty", [], [])]
    a.CopyFrom(helper.make_attribute(a.name, rng.choice(choices)))


def m_attr_extreme(m, rng):
    """An int attribute set to an extreme value (huge, negative, INT64_MIN)."""
    n = _node(m, rng)
    ints = [a for a in n.attribute if a.type in (onnx.AttributeProto.INT,
                                                   onnx.AttributeProto.INTS)]
    if not ints:
        return
    a = rng.choice(ints)
    v = rng.choice([-(1 << 63), (1 << 63) - 1, 1 << 31, -(1 << 31), -7, 1 << 20, 0])
    if a.type == onnx.AttributeProto.INT:
        a.i = v
    elif a.ints:
        a.ints[rng.randrange(len(a.ints))] = v


def m_negative_axis(m, rng):
    """An axis attribute made negative (valid for some ops: the same axis from the end)."""
    for n in m.graph.node:
        for a in n.attribute:
            if a.name == "axis" or a.name == "axes":
                if a.type == onnx.AttributeProto.INT:
                    a.i = a.i - 10 if rng.random() < 0.3 else -1
                else:
                    del a.ints[:]
                    a.ints.extend([-1])
                return


def m_attr_list_length(m, rng):
    """An ints attribute with one element too many or too few (pads, strides, perm)."""
    n = _node(m, rng)
    lists = [a for a in n.attribute if a.type == onnx.AttributeProto.INTS and a.ints]
    if lists:
        a = rng.choice(lists)
        if rng.random() < 0.5:
            a.ints.append(rng.randint(0, 2))
        else:
            del a.ints[-1]


def m_perm_damage(m, rng):
    """A Transpose perm that repeats an axis or names one out of range."""
    for n in m.graph.node:
        for a in n.attribute:
            if a.name == "perm":
                a.ints[rng.randrange(len(a.ints))] = rng.choice([0, 5, -1])
                return
    n = _node(m, rng)
    n.op_type = "Transpose"
    del n.attribute[:]
    n.attribute.append(helper.make_attribute("perm", [rng.randint(0, 3)] * 2))


# shapes and dtypes that disagree
def m_init_dtype_mismatch(m, rng):
    """A float initializer stored as another numeric type (Add float + double)."""
    if not m.graph.initializer:
        return
    t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
    a = numpy_helper.to_array(t)
    dtype = rng.choice([np.float64, np.float16, np.int32, np.int64, np.int8, np.uint8, np.bool_])
    t.CopyFrom(numpy_helper.from_array(a.astype(dtype), t.name))


def m_init_shape_change(m, rng):
    """An initializer's array replaced by one of another (plausible) shape."""
    if not m.graph.initializer:
        return
    t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
    a = numpy_helper.to_array(t)
    shape = rng.choice([(1,), (a.size,), a.shape[::-1], (*a.shape, 1), (1, *a.shape), (2, 2)])
    b = np.resize(a, shape).astype(a.dtype)
    t.CopyFrom(numpy_helper.from_array(b, t.name))


def m_output_dtype(m, rng):
    """A graph output declared with another element type than the node produces."""
    vi = m.graph.output[rng.randrange(len(m.graph.output))]
    vi.type.tensor_type.elem_type = rng.choice([TensorProto.DOUBLE, TensorProto.INT32,
                                               TensorProto.FLOAT16, TensorProto.BOOL])


def m_output_rank(m, rng):
    """A graph output declared with another rank."""
    vi = m.graph.output[rng.randrange(len(m.graph.output))]
    dims = vi.type.tensor_type.shape.dim
    if dims and rng.random() < 0.5:
        del dims[-1]
    else:
        dims.add().dim_value = 1


def m_value_info_lie(m, rng):
    """value_info claiming a wrong shape or type for an intermediate value."""
    outs = [o for n in m.graph.node for o in n.output if o]
    if outs:
        shape = [rng.choice([1, 2, 3, 7]) for _ in range(rng.randint(0, 4))]
        dtype = rng.choice([TensorProto.FLOAT, TensorProto.INT64, TensorProto.DOUBLE])
        m.graph.value_info.append(helper.make_tensor_value_info(rng.choice(outs), dtype, shape))


def m_no_type(m, rng):
    """A graph input or output without a type (or with a sequence type)."""
    vi = rng.choice(list(m.graph.input) + list(m.graph.output))
    if rng.random() < 0.5:
        vi.ClearField("type")
    else:
        vi.type.CopyFrom(helper.make_sequence_type_proto(
            helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))


def m_input_symbolic(m, rng):
    """Every dim of an input made symbolic (or unknown)."""
    vi = m.graph.input[rng.randrange(len(m.graph.input))]
    for i, d in enumerate(vi.type.tensor_type.shape.dim):
        if rng.random() < 0.5:
            d.dim_param = f"d{i}"
        else:
            d.Clear()


def m_huge_dims(m, rng):
    """An input with a dimension of 2^31 - 1, 2^40 or 2^62 elements."""
    vi = m.graph.input[rng.randrange(len(m.graph.input))]
    dims = vi.type.tensor_type.shape.dim
    if dims:
        dims[rng.randrange(len(dims))].dim_value = rng.choice([(1 << 31) - 1, 1 << 40, 1 << 62])


def m_empty_input(m, rng):
    """An input with a dimension of 0 (an empty tensor)."""
    vi = m.graph.input[rng.randrange(len(m.graph.input))]
    dims = vi.type.tensor_type.shape.dim
    if dims:
        dims[rng.randrange(len(dims))].dim_value = 0


def m_empty_initializer(m, rng):
    """An initializer with no elements (a 0 dim and no data)."""
    if m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        a = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(np.zeros((0, *a.shape[1:]), a.dtype), t.name))


def m_scalar_initializer(m, rng):
    """An initializer replaced by a 0-d scalar of its dtype."""
    if m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        a = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(np.array(a.flat[0] if a.size else 0, a.dtype), t.name))


def m_reshape_target(m, rng):
    """A Reshape/shape initializer with -1s, 0s, negatives or a wrong element count."""
    for t in m.graph.initializer:
        if t.data_type == TensorProto.INT64:
            a = numpy_helper.to_array(t).copy()
            if a.size:
                a.flat[rng.randrange(a.size)] = rng.choice([-1, -2, 0, 5, 1 << 40])
            t.CopyFrom(numpy_helper.from_array(a, t.name))
            return


def m_int64_typed_data(m, rng):
    """An initializer's data moved from raw_data to the typed field (or typed to the wrong one)."""
    if not m.graph.initializer:
        return
    t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
    a = numpy_helper.to_array(t)
    t.ClearField("raw_data")
    if rng.random() < 0.5 and a.dtype == np.float32:
        t.float_data.extend(a.ravel().tolist())
    else:
        t.int64_data.extend([1, 2, 3])


# dangling values, cycles, names
def m_dangling_input(m, rng):
    """An extra graph input that nothing uses (or one named like an initializer)."""
    name = rng.choice(["unused", *[t.name for t in m.graph.initializer]])
    m.graph.input.append(_vi(name, [rng.randint(1, 3)]))


def m_cycle(m, rng):
    """A node that consumes its own output or a later node's output."""
    if len(m.graph.node) < 1:
        return
    i = rng.randrange(len(m.graph.node))
    j = rng.randrange(i, len(m.graph.node))
    n = m.graph.node[i]
    if n.input and m.graph.node[j].output:
        n.input[rng.randrange(len(n.input))] = m.graph.node[j].output[0]


def m_rename_graph_output(m, rng):
    """The producing node's output renamed, so the graph output names nothing."""
    out = m.graph.output[rng.randrange(len(m.graph.output))].name
    for n in m.graph.node:
        for k, o in enumerate(n.output):
            if o == out:
                n.output[k] = out + "_renamed"
                return


def m_empty_names(m, rng):
    """A node output (or a graph input) with an empty name."""
    if rng.random() < 0.5:
        n = _node(m, rng)
        n.output[0] = ""
    else:
        m.graph.input[rng.randrange(len(m.graph.input))].name = ""


def m_odd_names(m, rng):
    """Values and nodes renamed to names that are no C identifier (or collide with C's)."""
    new = rng.choice(["int", "main", "1x", "a b", "x;y", "naïve", "a" * 300, "__nnc", "NAN"])
    n = _node(m, rng)
    if rng.random() < 0.5:
        n.name = new
        return
    _rename_uses(m, n.output[0], new)
    n.output[0] = new


def m_duplicate_node_names(m, rng):
    """Every node named alike."""
    for n in m.graph.node:
        n.name = "same"


def m_extra_outputs(m, rng):
    """A node given more outputs than its op has; an intermediate value made a graph output."""
    n = _node(m, rng)
    if rng.random() < 0.5:
        n.output.append(n.output[0] + "_extra")
    else:
        m.graph.output.append(helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None))


# opset games
def m_opset_games(m, rng):
    """Opset imports: missing, doubled, for the wrong domain, or a node in an unimported one."""
    choice = rng.randrange(5)
    if choice == 0:
        del m.opset_import[:]
    elif choice == 1:
        m.opset_import.append(helper.make_opsetid("", rng.choice([7, 13, 18])))
    elif choice == 2:
        m.opset_import[0].domain = "ai.onnx.ml"
    elif choice == 3:
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        _node(m, rng).domain = "com.microsoft"
    else:
        m.opset_import[0].version = rng.choice([0, -1, 1 << 40])


def m_local_function(m, rng):
    """A node that calls a model-local function (defined, or not)."""
    n = _node(m, rng)
    n.op_type, n.domain = "LocalFn", "local"
    m.opset_import.append(helper.make_opsetid("local", 1))
    if rng.random() < 0.5:
        body = [helper.make_node("Relu", ["a"], ["b"])]
        m.functions.append(helper.make_function("local", "LocalFn", ["a"], ["b"], body,
                                                [helper.make_opsetid("", 13)]))


def m_subgraph_garbage(m, rng):
    """A node replaced by an If whose branches are empty or produce the wrong count."""
    n = _node(m, rng)
    inp = n.input[0] if n.input else "x"
    del n.attribute[:]
    n.op_type = "If"
    branch = helper.make_graph([helper.make_node("Identity", [inp], ["b_out"])], "b", [],
                               [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, None)])
    empty = helper.make_graph([], "e", [], [])
    n.attribute.extend([helper.make_attribute("then_branch", branch),
                        helper.make_attribute("else_branch", rng.choice([branch, empty]))])
    del n.input[:]
    n.input.append(rng.choice(_names(m)))


# external data damage
def _external(t: onnx.TensorProto, location: str, offset: int | None, length: int | None) -> None:
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            e = t.external_data.add()
            e.key, e.value = key, str(value)


def m_external_data(m, rng):
    """An initializer's data said to be in a file: missing, outside the model's folder, a
    folder, at a negative or huge offset, or with a length that disagrees with its dims."""
    if not m.graph.initializer:
        return
    t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
    location = rng.choice(["missing.bin", "../../etc/passwd", "/etc/passwd", ".", "", "m.onnx",
                           "a\\..\\b"])
    offset = rng.choice([None, 0, -1, 1 << 40, 7])
    length = rng.choice([None, 0, 4, -5, 1 << 40])
    _external(t, location, offset, length)


def m_sparse_initializer(m, rng):
    """An initializer moved to sparse_initializer (with indices possibly out of range)."""
    if not m.graph.initializer:
        return
    t = m.graph.initializer.pop(rng.randrange(len(m.graph.initializer)))
    a = numpy_helper.to_array(t)
    idx = np.array([0, rng.choice([1, a.size - 1, a.size, 1 << 30])], np.int64)
    values = numpy_helper.from_array(a.ravel()[:2].copy(), t.name)
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(
        values, numpy_helper.from_array(idx, t.name + "_idx"), list(a.shape)))


def m_constant_node(m, rng):
    """An initializer replaced by a Constant node, with a missing, doubled or odd value."""
    if not m.graph.initializer:
        return
    t = m.graph.initializer.pop(rng.randrange(len(m.graph.initializer)))
    node = helper.make_node("Constant", [], [t.name], name="const")
    pick = rng.randrange(4)
    if pick == 0:
        node.attribute.append(helper.make_attribute("value", t))
    elif pick == 1:
        node.attribute.extend([helper.make_attribute("value", t),
                               helper.make_attribute("value_float", 1.0)])
    elif pick == 2:
        node.attribute.append(helper.make_attribute("value_ints", [1, 2]))
    m.graph.node.insert(0, node)


def m_metadata(m, rng):
    """Doc strings, metadata and producer fields of odd content and size."""
    m.doc_string = rng.choice(["", "*/ #error", "x" * 100000])
    m.producer_name = rng.choice(["", "nnc", "\n"])
    m.metadata_props.append(onnx.StringStringEntryProto(key="k", value="*/"))
    m.graph.node[0].doc_string = "*/ int main(void) { return 1; } /*"


def m_cast_inserted(m, rng):
    """A Cast to an integer type (and back) inserted on a value: NaN/inf/large values reach
    C's float -> int conversion."""
    if not m.graph.node:
        return
    n = _node(m, rng)
    v = n.output[0]
    to = rng.choice([TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64,
                     TensorProto.INT16, TensorProto.BOOL])
    mid, back = v + "_int", v + "_back"
    _rename_uses(m, v, back)
    m.graph.node.extend([helper.make_node("Cast", [v], [mid], to=to),
                         helper.make_node("Cast", [mid], [back], to=TensorProto.FLOAT)])


def m_scale_values(m, rng):
    """A float initializer scaled far out of range (1e30, -1e30) or set to all NaN."""
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(t) * np.float32(rng.choice([1e30, -1e30, 1e-30]))
            t.CopyFrom(numpy_helper.from_array(a.astype(np.float32), t.name))
            return


def m_node_no_outputs(m, rng):
    """A node with no outputs at all (or an op type that is empty or not ASCII)."""
    n = _node(m, rng)
    if rng.random() < 0.5:
        del n.output[:]
    else:
        n.op_type = rng.choice(["", "Relü", "relu", "RELU"])


def m_optional_empty_input(m, rng):
    """An empty name (an absent optional input) inserted among a node's inputs."""
    n = _node(m, rng)
    n.input.insert(rng.randint(0, len(n.input)), "")


def m_big_attr_list(m, rng):
    """An ints attribute with 10,000 elements."""
    n = _node(m, rng)
    name = rng.choice([a.name for a in n.attribute] or ["pads"])
    for a in list(n.attribute):
        if a.name == name:
            n.attribute.remove(a)
    n.attribute.append(helper.make_attribute(name, [1] * 10000))


def m_empty_init_name(m, rng):
    """An initializer (and its uses) renamed to the empty name."""
    if m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        for n in m.graph.node:
            for k, name in enumerate(n.input):
                if name == t.name:
                    n.input[k] = ""
        t.name = ""


def m_raw_and_typed(m, rng):
    """An initializer with both raw_data and a typed field holding other values."""
    for t in m.graph.initializer:
        if t.raw_data and t.data_type == TensorProto.FLOAT:
            t.float_data.extend([rng.uniform(-1, 1) for _ in range(max(1, len(t.raw_data) // 4))])
            return


def m_float16_model(m, rng):
    """The whole model in float16: inputs, outputs and float initializers."""
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(t).astype(np.float16)
            t.CopyFrom(numpy_helper.from_array(a, t.name))


def m_rank9(m, rng):
    """An input of rank 9 (more dims than most runtimes index)."""
    vi = m.graph.input[rng.randrange(len(m.graph.input))]
    dims = vi.type.tensor_type.shape.dim
    while len(dims) < 9:
        dims.add().dim_value = 1


def m_string_tensor(m, rng):
    """An initializer of strings (no numeric type)."""
    if m.graph.initializer:
        t = m.graph.initializer[rng.randrange(len(m.graph.initializer))]
        t.CopyFrom(helper.make_tensor(t.name, TensorProto.STRING, [2], [b"a", b"b"]))


def m_deep_chain(m, rng):
    """300 Identity/Neg nodes spliced in after a value (depth, long names)."""
    n = _node(m, rng)
    v = n.output[0]
    prev = v
    chain = []
    for k in range(300):
        out = f"{v}_chain{k}"
        chain.append(helper.make_node(rng.choice(["Identity", "Neg"]), [prev], [out]))
        prev = out
    _rename_uses(m, v, prev)
    m.graph.node.extend(chain)


def m_same_output_twice(m, rng):
    """A node that names one output twice (or an output that is also its input)."""
    n = _node(m, rng)
    if rng.random() < 0.5:
        n.output.append(n.output[0])
    elif n.input:
        n.output[0] = n.input[0]


STRUCTURAL: list[Mutation] = [
    m_delete_node, m_duplicate_node, m_reverse_nodes, m_rewire_input, m_drop_input,
    m_extra_input, m_rename_output, m_change_op, m_set_attr, m_drop_attr, m_input_dims,
    m_input_dtype, m_output_dims, m_init_dims, m_init_dtype, m_init_truncate, m_init_nan,
    m_drop_initializer, m_duplicate_initializer, m_output_is_input, m_duplicate_output,
    m_drop_outputs, m_opset, m_ir_version, m_domain,
    m_attr_type, m_attr_extreme, m_negative_axis, m_attr_list_length, m_perm_damage,
    m_init_dtype_mismatch, m_init_shape_change, m_output_dtype, m_output_rank, m_value_info_lie,
    m_no_type, m_input_symbolic, m_huge_dims, m_empty_input, m_empty_initializer,
    m_scalar_initializer, m_reshape_target, m_int64_typed_data, m_dangling_input, m_cycle,
    m_rename_graph_output, m_empty_names, m_odd_names, m_duplicate_node_names, m_extra_outputs,
    m_opset_games, m_local_function, m_subgraph_garbage, m_external_data, m_sparse_initializer,
    m_constant_node, m_metadata, m_cast_inserted, m_scale_values, m_node_no_outputs,
    m_optional_empty_input, m_big_attr_list, m_empty_init_name, m_raw_and_typed,
    m_float16_model, m_rank9, m_string_tensor, m_deep_chain, m_same_output_twice,
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
        except Exception:  # nothing of that kind left to mutate (or onnx refused to build it)
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


# ------------------------------------------------------------ the build stage (gcc + run)
#
# A mutant that compiles ("ok") is built with the host C compiler, run on random inputs and
# compared with onnxruntime on the same inputs, where onnxruntime accepts the mutant. Both run
# in a worker process, so a crash in generated code (or in onnxruntime) kills the worker, not
# the fuzzer: the worker is restarted and the death is counted against whoever was running.

BUILD_FINDINGS = ("mismatch", "internal", "crash", "masked", "timeout")
RTOL, ATOL = 1e-4, 1e-5
RTOL16, ATOL16 = 4e-3, 1e-3  # float16: a few units in the last place (onnxruntime rounds each op)


RUN_LIMIT = 1 << 26  # elements: a mutant with larger inputs (a 2^40 dim) is built, not run


class TooLargeToRun(Exception):
    """The mutant compiled, but its inputs and outputs are too large to run here."""


def _classify_build(exc: BaseException) -> str:
    from nnc.backends.c.build import GeneratedCodeError

    if isinstance(exc, TooLargeToRun):
        return "built-not-run"
    if isinstance(exc, GeneratedCodeError):
        return "internal"  # the C compiler rejected code nnc wrote
    verdict = classify(exc)
    return "user-error" if verdict == "user-error" else verdict


SPECIALS = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, -3e9, 300.5, -129.5],
                    np.float32)


def with_specials(feeds: dict, seed: int) -> dict:
    """`feeds` with about a quarter of each float input's elements replaced by NaN, +-inf or
    values beyond the integer types' ranges."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, a in feeds.items():
        if a.dtype.kind == "f" and a.size:
            a = a.copy()
            pick = rng.random(a.shape) < 0.25
            a[pick] = rng.choice(SPECIALS, int(pick.sum())).astype(a.dtype)
        out[name] = a
    return out


def _nnc_build_run(data: bytes, tmp: Path, specials: bool) -> tuple[dict, dict]:
    from nnc.compiler.api import compile as nnc_compile

    path = tmp / "m.onnx"
    path.write_bytes(data)
    cm = nnc_compile(path, target="host", output_dir=tmp / "out", bench=False)
    elements = sum(int(np.prod(d["shape"], dtype=object)) for d in cm.inputs + cm.outputs)
    if elements > RUN_LIMIT:
        raise TooLargeToRun(f"{elements:,} input and output elements")
    feeds = cm.random_inputs(seed=0)
    if specials:
        feeds = with_specials(feeds, seed=0)
    return feeds, cm.run(feeds)


def _ort_run(data: bytes, feeds: dict) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    given = {i.name: feeds[i.name] for i in sess.get_inputs() if i.name in feeds}
    return dict(zip(names, sess.run(names, given), strict=True))


def _serve(conn: Any) -> None:
    """The worker: ("nnc", bytes, specials) -> (verdict, text, feeds, outputs); ("ort", bytes,
    feeds) -> ("ok", outputs) or ("refuses", reason)."""
    import warnings

    warnings.simplefilter("ignore")
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "nnc":
            with tempfile.TemporaryDirectory(prefix="nnc-fuzz-build-") as tmp:
                try:
                    feeds, outputs = _nnc_build_run(msg[1], Path(tmp), msg[2])
                    conn.send(("ok", "", feeds, outputs))
                except (Exception, RecursionError, MemoryError) as e:
                    conn.send((_classify_build(e), f"{type(e).__name__}: {str(e)[:300]}",
                               None, None))
        else:
            try:
                conn.send(("ok", _ort_run(msg[1], msg[2])))
            except Exception as e:  # onnxruntime refuses the mutant (or its inputs)
                conn.send(("refuses", f"{type(e).__name__}: {str(e)[:200]}"))


class Worker:
    """One worker process, restarted after it dies or overruns `timeout` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.proc: Any = None
        self.conn: Any = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def call(self, *msg: Any) -> tuple[Any, ...]:
        """The worker's answer, or ("died", why) / ("timeout", why)."""
        if self.proc is None or not self.proc.is_alive():
            self._start()
        try:
            self.conn.send(msg)
            if self.conn.poll(self.timeout):
                return self.conn.recv()
            self.close()
            return ("timeout", f"no answer within {self.timeout:.0f} s")
        except (EOFError, OSError):  # the worker died (the pipe closed or was reset)
            pass
        self.proc.join(5)
        why = f"worker died (exit {self.proc.exitcode})"
        self.close()
        return ("died", why)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
            self.conn.close()
            self.proc = None


def compare(ours: dict, theirs: dict) -> tuple[str, str]:
    """("matches", "") when nnc's outputs agree with onnxruntime's (floats within rtol 1e-4 /
    atol 1e-5, float16 4e-3 / 1e-3, NaN where the other has NaN; integers and bools exactly);
    ("nonfinite", why) when they differ only at elements that are NaN or inf on one side; else
    ("mismatch", why)."""
    if set(ours) != set(theirs):
        return "mismatch", f"outputs {sorted(ours)} vs onnxruntime's {sorted(theirs)}"
    verdict, why = "matches", ""
    for name in sorted(ours):
        a, b = np.asarray(ours[name]), np.asarray(theirs[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            return "mismatch", (f"{name}: {a.dtype}{list(a.shape)} vs onnxruntime's "
                                f"{b.dtype}{list(b.shape)}")
        if a.dtype.kind == "f":
            rtol, atol = (RTOL, ATOL) if a.dtype != np.float16 else (RTOL16, ATOL16)
            same = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
            nonfinite = ~np.isfinite(a) | ~np.isfinite(b)
        else:
            same = a == b
            nonfinite = np.zeros(a.shape, bool)
        if np.all(same):
            continue
        i = int(np.argmin(same.ravel()))
        why = (f"{name}: {int(np.size(same) - np.count_nonzero(same))} of {a.size} differ, "
               f"e.g. [{i}] {a.ravel()[i]} vs onnxruntime's {b.ravel()[i]}")
        if not np.all(same | nonfinite):
            return "mismatch", why
        verdict = "nonfinite"
    return verdict, why


def extreme_weights(data: bytes) -> bool:
    """Whether a float initializer of the (parseable) model holds NaN, inf or a magnitude
    over 1e18 (products of two such overflow float32)."""
    try:
        m = onnx.load_model_from_string(data)
        for t in m.graph.initializer:
            if t.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
                a = numpy_helper.to_array(t).astype(np.float64)
                if a.size and not (np.all(np.isfinite(a)) and np.max(np.abs(a)) < 1e18):
                    return True
    except Exception:
        return False
    return False


def build_and_compare(worker: Worker, data: bytes, specials: bool = False) -> tuple[str, str]:
    """(outcome, detail) for a mutant the front end accepted: "matches" (nnc and onnxruntime
    agree), "nonfinite" (they differ only at NaN/inf elements, on inputs with NaN, inf and
    out-of-range values (`specials`, see `with_specials`) or weights that overflow: onnxruntime's
    MaxPool skips NaN where nnc propagates it as numpy does, and sums that overflow differ with
    the order and FMA), "ort-refuses" (onnxruntime rejects the mutant; nnc's run is then
    unchecked; "ort-crashes" when it dies on it), "built-not-run" (inputs too large to run
    here), "user-error" (refused by a later stage), or a finding (BUILD_FINDINGS)."""
    answer = worker.call("nnc", data, specials)
    if answer[0] == "died":
        return "crash", "nnc: " + answer[1]
    if answer[0] != "ok":
        return answer[0], answer[1]
    _, _, feeds, ours = answer
    answer = worker.call("ort", data, feeds)
    if answer[0] in ("died", "timeout"):
        return "ort-crashes", f"onnxruntime: {answer[1]}"  # its bug, not nnc's
    if answer[0] != "ok":
        return "ort-refuses", f"onnxruntime: {answer[1]}"
    verdict, why = compare(ours, answer[1])
    if verdict == "nonfinite" and not (specials or extreme_weights(data)):
        verdict = "mismatch"
    if verdict == "mismatch" and specials:
        return first_difference(worker, data, why)
    return verdict, why


# onnxruntime's kernels that skip NaN where nnc (like numpy and PyTorch) propagates it
ORT_SKIPS_NAN = frozenset({"MaxPool"})


def probe_model(data: bytes) -> bytes | None:
    """The model with every node's output a graph output too (types from onnx's shape
    inference), so both runtimes show where their values part."""
    try:
        m = onnx.shape_inference.infer_shapes(onnx.load_model_from_string(data))
    except Exception:
        return None
    known = {vi.name: vi for vi in m.graph.value_info}
    outputs = {vi.name for vi in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in outputs and o in known:
                m.graph.output.append(known[o])
                outputs.add(o)
    return m.SerializeToString()


def first_difference(worker: Worker, data: bytes, why: str) -> tuple[str, str]:
    """On NaN/inf inputs, the first node (in order) whose output nnc and onnxruntime disagree
    on: "nonfinite" when it is a kernel of ORT_SKIPS_NAN there differing at NaN/inf elements
    only (the difference then flows on, e.g. through a Cast to bool), or when no value differs
    with every value an output (nothing fused) and a Cast to an integer meets floats >= 2^24 (a
    1-ulp rounding difference of a fused op, e.g. BatchNormalization folded into a Conv, becomes
    64 vs 192 in a uint8); else "mismatch"."""
    probe = probe_model(data)
    ours = worker.call("nnc", probe, True) if probe is not None else ("none",)
    theirs = worker.call("ort", probe, ours[2]) if ours[0] == "ok" else ("none",)
    if theirs[0] != "ok":
        return "mismatch", why  # the probe could not be run: keep the finding
    model = onnx.load_model_from_string(data)
    for n in model.graph.node:
        for o in n.output:
            if o in ours[3] and o in theirs[1]:
                verdict, detail = compare({o: ours[3][o]}, {o: theirs[1][o]})
                if verdict == "matches":
                    continue
                if verdict == "nonfinite" and n.op_type in ORT_SKIPS_NAN:
                    return "nonfinite", f"first at {n.op_type} {n.name!r}: {detail}; then {why}"
                return "mismatch", f"first at {n.op_type} {n.name!r}: {detail}; then {why}"
    for n in model.graph.node:  # no value differs unfused: rounding, amplified by a Cast?
        if n.op_type == "Cast" and n.input and n.input[0] in theirs[1]:
            x = np.asarray(theirs[1][n.input[0]])
            if x.dtype.kind == "f" and np.any(np.isfinite(x) & (np.abs(x) >= 2.0 ** 24)):
                return "nonfinite", (f"a Cast to an integer of floats >= 2^24 (1 ulp >= 2) to "
                                     f"{n.output[0]!r} turns rounding differences into integers; "
                                     f"{why}")
    return "mismatch", why


def run(mutants: int, seed: int, verbose: bool = False, time_limit: float | None = None,
        build: int = 0, build_timeout: float = 120.0) -> dict[str, object]:
    """Fuzz `mutants` mutants (or as many as `time_limit` seconds allow) through the front end;
    then build and run up to `build` of the ones that compile ("ok"), spread evenly over them,
    against onnxruntime (every second one on inputs with NaN, inf and out-of-range values).
    Returns the counts of both stages and the failures."""
    rng = random.Random(seed)
    seeds = seed_models()
    counts: collections.Counter[str] = collections.Counter()
    built: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    oks: list[tuple[int, str, bytes]] = []
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
            if verdict == "ok":
                oks.append((i, kind, data))
            if verdict in ("crash", "masked"):
                assert exc is not None
                failures.append(f"#{i} {kind}: {type(exc).__name__}: {str(exc)[:200]}")
                if verbose:
                    traceback.print_exception(exc)
    front_seconds = time.perf_counter() - start
    sample = oks if build >= len(oks) else [oks[k * len(oks) // build] for k in range(build)]
    worker = Worker(build_timeout)
    try:
        for k, (i, kind, data) in enumerate(sample):
            outcome, detail = build_and_compare(worker, data, specials=k % 2 == 1)
            built[outcome] += 1
            if outcome in BUILD_FINDINGS:
                failures.append(f"#{i} {kind}: built: {outcome}: {detail}")
            elif verbose and outcome != "matches":
                print(f"#{i} {kind}: built: {outcome}: {detail}")
    finally:
        worker.close()
    return {"mutants": done, "seconds": round(front_seconds, 1), "counts": dict(counts),
            "built": dict(built), "build_seconds": round(time.perf_counter() - start
                                                          - front_seconds, 1),
            "failures": failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutants", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build", type=int, default=0, metavar="N",
                   help="build up to N of the mutants that compile with the host C compiler "
                   "and compare them with onnxruntime (default 0; -1: all)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    build = args.build if args.build >= 0 else args.mutants
    result = run(args.mutants, args.seed, args.verbose, build=build)
    counts = result["counts"]
    print(f"{result['mutants']} mutants in {result['seconds']} s: {counts}")
    if build:
        print(f"built and run against onnxruntime in {result['build_seconds']} s: "
              f"{result['built']}")
    for f in result["failures"]:  # type: ignore[attr-defined]
        print("  " + f)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
