"""ONNX → graph IR.

`import_model(model, input_shapes, bind)` loads the model (external data included), fixes dynamic
input dimensions from `input_shapes`, makes the inputs in `bind` constants, runs onnx's shape
inference as a consistency check, rejects the model with one message listing every unsupported op
(subgraphs included), then converts node by node with the converters registered in
`nnc.compiler.onnx.{elementwise,nn,shape,reduce,quant,recurrent,control}`. Ops whose inputs are
all small constants are folded as they are emitted, so shape-only subgraphs (Shape → Gather →
Concat → Reshape) become constants, and so does an If's condition on a bound input: the If
converter then inlines the taken branch (`GraphBuilder.inline_graph`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from nnc.compiler.errors import NncError
from nnc.compiler.onnx.bind import bound_value
from nnc.compiler.onnx.quant import MS_DOMAIN_OPS
from nnc.compiler.onnx.registry import (
    ConversionError,
    ConvertContext,
    find_converter,
    supported_op_types,
)
from nnc.compiler.onnx.validate import check_model
from nnc.ir.graph import Attrs, Constant, Graph, Op, Value, fresh_name
from nnc.ir.ops import OpError, get_op
from nnc.ir.types import TensorType

MIN_OPSET = 7
# ops with all-constant inputs and at most this many output elements fold at import
FOLD_LIMIT = 1 << 16

ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16", onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16", onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64", onnx.TensorProto.BOOL: "bool",
}


def load_model(model: str | os.PathLike[str] | onnx.ModelProto,
               external_data: bool = True) -> onnx.ModelProto:
    """The model's protobuf; with `external_data=False` tensors stored in other files keep only
    their location, offset and length (nothing of theirs is read)."""
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.exists():
        raise NncError(f"{path}: no such file")
    if path.is_dir():
        raise NncError(f"{path}: is a directory, expected an .onnx file")
    if path.stat().st_size == 0:
        raise NncError(f"{path}: is empty (0 bytes), not an ONNX model")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except DecodeError:
        raise NncError(f"{path}: not an ONNX model (protobuf decoding failed)") from None
    except FileNotFoundError as e:
        raise NncError(f"{path}: external data file missing: {e.filename}") from None
    except Exception as e:  # onnx raises assorted errors for truncated/garbled files
        raise NncError(f"{path}: cannot read ONNX model: {e}") from None


def parse_input_shapes(specs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse CLI specs like `input=1x3x224x224` (also `1,3,224,224`)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        if not sep or not name or not re.fullmatch(r"\d+([x,]\d+)*", dims.strip()):
            raise NncError(
                f"bad --input-shape {spec!r}: expected NAME=DxDxD, e.g. input=1x3x224x224")
        shapes[name] = tuple(int(d) for d in re.split(r"[x,]", dims.strip()))
        if 0 in shapes[name]:
            raise NncError(f"bad --input-shape {spec!r}: a dimension of size 0 leaves the model "
                           "nothing to compute; sizes start at 1")
    return shapes


class GraphBuilder:
    """Accumulates the graph IR while converters run."""

    def __init__(self, reserved: set[str]) -> None:
        self.types: dict[str, TensorType] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        # ONNX value name -> graph-IR name, one dict per graph scope (the model's graph, then the
        # If branches being inlined: a branch sees the names of the scopes around it)
        self.scopes: list[dict[str, str]] = [{}]
        # generated names avoid every ONNX name (`reserved`); ONNX names are claimed when defined
        self.used = set(reserved)
        self.defined: set[str] = set()
        # for error hints: the node producing each ONNX value, and the graph inputs
        self.producers: dict[str, onnx.NodeProto] = {}
        self.graph_inputs: set[str] = set()
        self.scope_where: list[str] = []  # "then_branch of If 'a'" per inlined scope
        self.branch_values: set[str] = set()  # graph-IR values defined in an inlined branch

    @property
    def names(self) -> dict[str, str]:
        """The innermost scope, where the values of the graph being converted are defined."""
        return self.scopes[-1]

    def visible(self) -> set[str]:
        return {n for scope in self.scopes for n in scope}

    def fresh(self, hint: str) -> str:
        return fresh_name(hint or "v", self.used)

    def define(self, onnx_name: str, hint: str | None = None) -> str:
        """A new graph-IR name for a value; the ONNX name itself when still free."""
        name = onnx_name if onnx_name and onnx_name not in self.defined else self.fresh(
            hint or onnx_name or "v")
        self.used.add(name)
        self.defined.add(name)
        return name

    def resolve(self, onnx_name: str) -> str:
        for scope in reversed(self.scopes):
            if onnx_name in scope:
                return scope[onnx_name]
        raise ConversionError(f"input {onnx_name!r} is not defined before use")

    def inline_graph(self, graph: onnx.GraphProto, opset: int, label: str) -> list[str]:
        """Convert a subgraph (an If branch) into this graph, in a scope of its own that sees
        the enclosing values; returns the graph-IR names of its outputs. Its local names get
        fresh graph-IR names when they collide with names already defined."""
        where = label + (f" in {self.scope_where[-1]}" if self.scope_where else "")
        if graph.input:
            raise ConversionError(f"{where} has inputs {[vi.name for vi in graph.input]}; only "
                                  "subgraphs without inputs (If branches) can be inlined")
        missing = _unsupported(graph, opset, where)
        if missing:
            raise NncError(_unsupported_message(opset, [m for m, _ in missing]))
        self.scopes.append({})
        self.scope_where.append(where)
        try:
            for init in graph.initializer:
                self.names[init.name] = self.add_constant(_initializer(init), "w", init.name)
            _convert_nodes(self, list(graph.node), opset, where)
            outs = []
            for vi in graph.output:
                try:
                    outs.append(self.resolve(vi.name))
                except ConversionError:
                    raise NncError(f"{where}: output {vi.name!r} is not produced by any "
                                   "node") from None
            return outs
        finally:
            self.scopes.pop()
            self.scope_where.pop()

    def graph_inputs_feeding(self, onnx_name: str) -> list[str]:
        """The graph inputs a value is computed from (through subgraphs' outer-scope uses)."""
        found, seen, todo = set(), set(), [onnx_name]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in self.graph_inputs:
                found.add(n)
            elif n in self.producers:
                todo.extend(node_uses(self.producers[n]))
        return sorted(found)

    def add_constant(self, array: np.ndarray, hint: str, name: str | None = None) -> str:
        array = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        if str(array.dtype) not in ONNX_DTYPES.values():
            raise ConversionError(f"constant of unsupported element type {array.dtype}")
        cname = self.define(name or "", hint) if name is None else self.define(name)
        self.constants[cname] = array
        self.types[cname] = TensorType(tuple(int(d) for d in array.shape), str(array.dtype))
        return cname

    def emit(self, node: onnx.NodeProto, kind: str, inputs: Sequence[str], attrs: dict[str, Any],
             outputs: Sequence[str] | None, num_outputs: int) -> list[str]:
        frozen = Attrs.of(attrs)
        opdef = get_op(kind)
        in_types = [self.types[n] if n else None for n in inputs]
        out_types = list(opdef.infer(in_types, frozen))
        n_out = len(out_types) if outputs is None else len(outputs)
        if outputs is not None and len(outputs) > len(out_types):
            raise ConversionError(
                f"{kind} produces {len(out_types)} outputs, node has {len(outputs)}")
        hints = list(outputs) if outputs is not None else [""] * max(n_out, num_outputs)
        out_types = out_types[: len(hints)] if outputs is not None else out_types
        present = [n for n in inputs if n]
        if present and all(n in self.constants for n in present) and all(
                t.size <= FOLD_LIMIT for t in out_types) and not _keeps_integer_weight(
                kind, [self.types[n] for n in present]):
            args = [self.constants[n] if n else None for n in inputs]
            results = list(opdef.reference(args, frozen))
            names = []
            for k, (r, t) in enumerate(zip(results, out_types, strict=True)):
                arr = np.asarray(r).astype(t.dtype, copy=False).reshape(t.shape)
                names.append(self.add_constant(arr, f"{node.name or kind}_c", hints[k] or None))
            return names
        values = []
        for k, t in enumerate(out_types):
            hint = hints[k] if k < len(hints) else ""
            name = self.define(hint, f"{node.name or kind}_{k}") if hint else self.fresh(
                f"{node.name or kind}_{k}")
            self.defined.add(name)
            self.types[name] = t
            values.append(Value(name, t))
        self.ops.append(Op(kind, tuple(inputs), tuple(values), frozen, name=node.name or ""))
        return [v.name for v in values]


def _keeps_integer_weight(kind: str, in_types: Sequence[TensorType]) -> bool:
    """dequantize_linear of a constant integer tensor stays an op at import, so the weight stays
    integer for fuse-qdq (fold-constants folds whatever that pass leaves)."""
    return kind == "dequantize_linear" and in_types[0].dtype in ("int8", "uint8", "int32")


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def _input_dtype(vi: onnx.ValueInfoProto) -> str:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise NncError(f"input {vi.name!r}: only tensor inputs are supported")
    if tt.elem_type not in ONNX_DTYPES:
        raise NncError(f"input {vi.name!r}: element type {dtype_name(tt.elem_type)} is not "
                       "supported")
    return ONNX_DTYPES[tt.elem_type]


def dtype_name(code: int) -> str:
    """ONNX's name of an element type code, also for codes this onnx does not know."""
    try:
        return str(onnx.TensorProto.DataType.Name(code))
    except ValueError:
        return f"{code} (not an ONNX element type)"


def _declared_dims(vi: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    tt = vi.type.tensor_type
    return tuple(fixed_dim(d) for d in tt.shape.dim) if tt.HasField("shape") else None


def _value_type(vi: onnx.ValueInfoProto, fixed: tuple[int, ...] | None) -> TensorType:
    dtype = _input_dtype(vi)
    tt = vi.type.tensor_type
    dims = list(tt.shape.dim) if tt.HasField("shape") else None
    if fixed is not None:
        if dims is not None and len(dims) != len(fixed):
            raise NncError(f"--input-shape {vi.name}: rank {len(fixed)} but the model's input has "
                           f"rank {len(dims)}")
        for d, f in zip(dims or [], fixed, strict=False):  # dims is None: nothing to check
            if fixed_dim(d) is not None and d.dim_value != f:
                raise NncError(f"--input-shape {vi.name}: dimension {d.dim_value} is fixed in the "
                               f"model, got {f}")
        return TensorType(fixed, dtype)
    if dims is None:
        raise NncError(f"input {vi.name!r} has no shape; give one with --input-shape "
                       f"{vi.name}=DxDx... (or fix its value with --bind {vi.name}=VALUE)")
    shape = []
    for i, d in enumerate(dims):
        size = fixed_dim(d)
        if size is None:
            what = (f"'{d.dim_param}'" if d.dim_param else
                    f"dim_value {d.dim_value}" if d.HasField("dim_value") else "unknown")
            raise NncError(f"input {vi.name!r} has a dynamic dimension {i} ({what}); fix it with "
                           f"--input-shape {vi.name}="
                           + "x".join(str(x.dim_value) if fixed_dim(x) is not None else "1"
                                      for x in dims)
                           + " (the dynamic dimensions set to 1: give the sizes you need), or "
                           f"fix its value with --bind {vi.name}=VALUE")
        shape.append(size)
    return TensorType(tuple(shape), dtype)


def fixed_dim(d: onnx.TensorShapeProto.Dimension) -> int | None:
    """The size of a dimension the model fixes, None for a dynamic one. Old exporters (Paddle)
    write dim_value -1 for "unknown", and a model input of size 0 cannot be meant literally,
    so dim_value <= 0 is dynamic too: --input-shape or --bind gives its size."""
    return int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None


def subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) of a node's subgraphs: If branches, Loop/Scan bodies."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append((a.name, a.g))
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend((f"{a.name}[{k}]", g) for k, g in enumerate(a.graphs))
    return out


def _graph_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name in a graph and its subgraphs."""
    names = {vi.name for vi in [*graph.input, *graph.output]} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(n for n in [*node.input, *node.output] if n)
        for _, sub in subgraphs(node):
            names |= _graph_names(sub)
    return names


def free_names(graph: onnx.GraphProto) -> set[str]:
    """The names a subgraph uses from the scopes around it."""
    local = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    local |= {o for node in graph.node for o in node.output if o}
    used = {n for node in graph.node for n in node_uses(node)} | {vi.name for vi in graph.output}
    return used - local


def node_uses(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, and the outer-scope values its subgraphs use (an If branch reads values
    of the enclosing graph without naming them as inputs of the If node)."""
    uses = [n for n in node.input if n]
    for _, sub in subgraphs(node):
        uses.extend(sorted(free_names(sub) - set(uses)))
    return uses


def _unsupported(graph: onnx.GraphProto, opset: int, where: str = ""
                 ) -> list[tuple[str, bool]]:
    """(description, inside an If branch) of every op nnc cannot convert, subgraphs included."""
    missing: list[tuple[str, bool]] = []
    suffix = f", in {where}" if where else ""
    for node in graph.node:
        if node.domain == "com.microsoft" and node.op_type in MS_DOMAIN_OPS:
            pass
        elif node.domain not in ("", "ai.onnx"):
            missing.append((f"{node.op_type} (domain {node.domain}, node '{node.name}'{suffix})",
                            False))
        elif find_converter(node.op_type, opset) is None:
            missing.append((f"{node.op_type} (node '{node.name}'{suffix})", False))
        for attr, sub in subgraphs(node):
            inner = f"{attr} of {node.op_type} '{node.name}'" + (f" in {where}" if where else "")
            branch = node.op_type == "If" and node.domain in ("", "ai.onnx")
            missing.extend((m, in_if or branch) for m, in_if in _unsupported(sub, opset, inner))
    return missing


def _unsupported_message(opset: int, missing: Sequence[str]) -> str:
    return (f"unsupported ops at opset {opset}: {'; '.join(missing)}. nnc supports "
            f"{len(supported_op_types())} ONNX ops (nnc inspect --ops lists them)")


def _check_supported(model: onnx.ModelProto, opset: int) -> None:
    """Every unsupported op, subgraphs included, in one message. Ops that are only inside If
    branches are checked when the branch is inlined instead: a branch that the (folded)
    condition does not take is never compiled."""
    missing = _unsupported(model.graph, opset)
    if any(not in_if for _, in_if in missing):
        raise NncError(_unsupported_message(opset, [m for m, _ in missing]))


def _toposort(nodes: Sequence[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """The nodes in dependency order, the file's order wherever it allows (networkx's
    lexicographical sort keyed by position: linear-ish, where repeated sweeps were quadratic on
    an unsorted file). A value nobody defines, or a cycle, names the nodes involved."""
    import networkx as nx

    producer: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer.setdefault(o, k)
    deps = nx.DiGraph()
    deps.add_nodes_from(range(len(nodes)))
    for k, n in enumerate(nodes):
        need = [i for i in node_uses(n) if i not in available and i not in producer]
        if need:
            raise NncError(f"node '{n.name}' ({n.op_type}) uses undefined value(s) {need}")
        deps.add_edges_from((producer[i], k) for i in node_uses(n) if i not in available)
    try:
        return [nodes[k] for k in nx.lexicographical_topological_sort(deps)]
    except nx.NetworkXUnfeasible:
        cycle = [f"'{nodes[a].name}' ({nodes[a].op_type})" for a, _ in nx.find_cycle(deps)]
        raise NncError(f"the graph has a cycle: {' -> '.join(cycle)}; ONNX graphs must be "
                       "acyclic") from None


def _upgrade_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Models older than opset 7 are upgraded with onnx's version converter first."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NncError(f"opset {opset} is older than {MIN_OPSET} and onnx's version converter "
                       f"could not upgrade it ({first}); re-export the model at opset >= 13"
                       ) from None


def import_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    bind: Mapping[str, Any] | None = None,
) -> Graph:
    """The graph IR of an ONNX model. `input_shapes` fixes dynamic input dimensions; `bind`
    fixes inputs to constants (see `nnc.compiler.onnx.bind`): they are no longer inputs of the
    graph, and what is computed from them folds."""
    proto = load_model(model)
    opset = _default_opset(proto)
    newest = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET:
        proto = _upgrade_opset(proto, opset)
        opset = MIN_OPSET
    if opset > newest:
        raise NncError(f"opset {opset} is newer than the installed onnx knows ({newest}); "
                       f"upgrade the onnx package")
    check_model(proto)
    g = proto.graph
    init_names = {t.name for t in g.initializer}
    real_inputs = [vi for vi in g.input if vi.name not in init_names]
    shapes = dict(input_shapes or {})
    binds = dict(bind or {})
    for flag, given in (("--input-shape", shapes), ("--bind", binds)):
        unknown = set(given) - {vi.name for vi in real_inputs}
        if unknown:
            raise NncError(f"{flag} names unknown input(s) {sorted(unknown)}; the model's "
                           f"inputs are {[vi.name for vi in real_inputs]}")
    _check_supported(proto, opset)

    b = GraphBuilder(_graph_names(g))
    b.graph_inputs = {vi.name for vi in real_inputs}
    inputs = []
    bound: dict[str, np.ndarray] = {}
    for vi in real_inputs:
        if vi.name in binds:
            arr = bound_value(vi.name, _declared_dims(vi), _input_dtype(vi), binds[vi.name])
            if vi.name in shapes and tuple(shapes[vi.name]) != arr.shape:
                raise NncError(f"--input-shape {vi.name}={'x'.join(map(str, shapes[vi.name]))} "
                               f"disagrees with the shape {list(arr.shape)} of its --bind value")
            bound[vi.name] = arr
            b.names[vi.name] = b.add_constant(arr, vi.name, vi.name)
            continue
        fixed = tuple(int(d) for d in shapes[vi.name]) if vi.name in shapes else None
        t = _value_type(vi, fixed)
        name = b.define(vi.name)
        b.types[name] = t
        b.names[vi.name] = name
        inputs.append(Value(name, t))
    for init in g.initializer:
        b.names[init.name] = b.add_constant(_initializer(init), "w", init.name)

    _check_with_onnx_shape_inference(proto, inputs, bound)
    _convert_nodes(b, list(g.node), opset)

    outputs = []
    for vi in g.output:
        if vi.name not in b.names:
            raise NncError(f"graph output {vi.name!r} is not produced by any node")
        outputs.append(_bind_output(b, vi.name, outputs))
    used = {n for op in b.ops for n in op.inputs} | {v.name for v in outputs}
    constants = tuple(_constant(n, a, b.types[n]) for n, a in b.constants.items() if n in used)
    name = re.sub(r"\W", "_", g.name or "model") or "model"
    return Graph(name, tuple(inputs), tuple(outputs), constants, tuple(b.ops))


def _initializer(init: onnx.TensorProto) -> np.ndarray:
    try:
        arr = numpy_helper.to_array(init)
    except Exception as e:
        raise NncError(f"initializer {init.name!r}: cannot read ({e})") from None
    if str(arr.dtype) not in ONNX_DTYPES.values():
        raise NncError(f"initializer {init.name!r}: element type {arr.dtype} is not supported")
    return arr


def _convert_nodes(b: GraphBuilder, nodes: Sequence[onnx.NodeProto], opset: int,
                   scope: str = "") -> None:
    """Convert nodes in dependency order into the builder's innermost scope. `scope` names the
    subgraph being inlined, for error messages."""
    suffix = f"; in {scope}" if scope else ""
    for node in _toposort(nodes, b.visible()):
        ctx = ConvertContext(node, opset, b)
        fn = find_converter(node.op_type, opset)
        assert fn is not None
        where = f"node '{node.name}' ({node.op_type}, opset {opset}{suffix})"
        try:
            results = list(fn(ctx))
        except (ConversionError, OpError) as e:
            raise NncError(f"{where}: {e}") from None
        except NncError:
            raise
        except Exception as e:
            raise NncError(f"{where}: cannot convert: {type(e).__name__}: {e}") from e
        for k, o in enumerate(node.output):
            if not o:
                continue
            if k >= len(results) or not results[k]:
                raise NncError(f"{where}: output {k} ('{o}') is not supported")
            b.names[o] = results[k]
            b.producers[o] = node
            if scope:
                b.branch_values.add(results[k])


def _constant(name: str, array: np.ndarray, t: TensorType) -> Constant:
    """A frozen constant that keeps the quantization parameters the converters recorded."""
    c = Constant.of(name, array)
    if t.quant is None:
        return c
    ct = c.value.type
    return Constant(Value(name, TensorType(ct.shape, ct.dtype, ct.layout, t.quant)), c.data)


def _bind_output(b: GraphBuilder, onnx_name: str, bound: list[Value]) -> Value:
    """The graph output keeps its ONNX name. The output of an inlined If branch that an op
    produces is renamed. Otherwise (Identity of an input, a value already bound to another
    output) an explicit copy (`reshape` to the same shape) gives it its own name; lowering turns
    a reshape that is an output into a copy."""
    ir_name = b.names[onnx_name]
    t = b.types[ir_name]
    free = all(v.name != ir_name for v in bound)
    if ir_name in b.constants and ir_name == onnx_name:
        # an output that is an initializer (or folded to a constant) is a buffer the runtime
        # fills, not a weight: the constant takes a fresh name and a copy fills the output
        return _copy_output(b, _rename_constant(b, ir_name), onnx_name, onnx_name)
    if ir_name == onnx_name and free:
        return Value(ir_name, t)
    if free and onnx_name not in b.defined and ir_name in b.branch_values and any(
            v.name == ir_name for op in b.ops for v in op.outputs):
        _rename(b, ir_name, onnx_name)
        return Value(onnx_name, t)
    name = onnx_name if onnx_name not in b.defined else b.fresh(onnx_name)
    return _copy_output(b, ir_name, name, onnx_name)


def _copy_output(b: GraphBuilder, src: str, name: str, onnx_name: str) -> Value:
    t = b.types[src]
    b.defined.add(name)
    b.types[name] = t
    b.ops.append(Op("reshape", (src,), (Value(name, t),), Attrs.of(shape=t.shape),
                    name=f"{onnx_name}_copy"))
    return Value(name, t)


def _rename_constant(b: GraphBuilder, old: str) -> str:
    """Give constant `old` a fresh name (ops and scopes follow); returns it."""
    new = b.fresh(f"{old}_w")
    b.used.add(new)
    b.constants[new] = b.constants.pop(old)
    b.types[new] = b.types[old]
    b.ops = [op.with_(inputs=tuple(new if n == old else n for n in op.inputs))
             if old in op.inputs else op for op in b.ops]
    for scope in b.scopes:
        for k, v in scope.items():
            if v == old:
                scope[k] = new
    return new


def _rename(b: GraphBuilder, old: str, new: str) -> None:
    """Rename a value that an op produces, everywhere."""
    b.ops = [op.with_(inputs=tuple(new if n == old else n for n in op.inputs),
                      outputs=tuple(Value(new, v.type) if v.name == old else v
                                    for v in op.outputs)) for op in b.ops]
    b.types[new] = b.types[old]
    b.defined.add(new)
    for scope in b.scopes:
        for k, v in scope.items():
            if v == old:
                scope[k] = new


def _check_with_onnx_shape_inference(proto: onnx.ModelProto, inputs: Sequence[Value],
                                     bound: Mapping[str, np.ndarray]) -> None:
    """Run onnx's own shape inference with the fixed input shapes (bound inputs as
    initializers); it catches inconsistent models (mismatched shapes, wrong types) with onnx's
    message before our converters run."""
    if proto.ByteSize() > (1 << 30):  # protobuf cannot serialize >2 GB; skip the check there
        return
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    del m.graph.value_info[:]
    # onnx infers in file order: a file whose nodes are out of order (valid for onnxruntime and
    # for nnc, which sorts them) gets them sorted first, not "expected to have type but is null"
    known = {vi.name for vi in m.graph.input} | {t.name for t in m.graph.initializer}
    nodes = list(m.graph.node)
    order = _toposort(nodes, known)
    if any(a is not b for a, b in zip(order, nodes, strict=True)):
        kept = [onnx.NodeProto() for _ in order]
        for dst, src in zip(kept, order, strict=True):
            dst.CopyFrom(src)
        del m.graph.node[:]
        m.graph.node.extend(kept)
    _forget_unknown_dims(m.graph)
    byname = {v.name: v for v in inputs}
    for vi in m.graph.input:
        if vi.name in byname:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in byname[vi.name].type.shape:
                shape.dim.add().dim_value = d
    if bound:
        kept = [vi for vi in m.graph.input if vi.name not in bound]
        del m.graph.input[:]
        m.graph.input.extend(kept)
        m.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in bound.items())
        m.ir_version = max(m.ir_version, 4)  # initializers that are not inputs need IR >= 4
    for data_prop in (True, False):
        try:
            inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True,
                                                         data_prop=data_prop)
            break
        except onnx.shape_inference.InferenceError as e:
            # onnx's data propagation fails on some valid subgraphs ("Data for input 0 already
            # exists"): only an error that remains without it is the model's
            if data_prop:
                continue
            msg = str(e).strip().splitlines()[0] if str(e).strip() else "shape inference failed"
            raise NncError(f"the model is inconsistent (onnx shape inference): {msg}") from None
        except Exception:
            return  # inference gaps for exotic ops are not the user's error
    _check_value_info_types(proto.graph, inferred.graph)


def _check_value_info_types(declared: onnx.GraphProto, inferred: onnx.GraphProto) -> None:
    """A value_info whose element type contradicts the one inferred is an invalid model
    (onnxruntime refuses it; nnc ignored it until fuzzing found it). Its shapes are not checked:
    stale ones are common and onnxruntime only warns about them."""
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.value_info
             if vi.type.HasField("tensor_type")}
    producer = {o: n for n in declared.node for o in n.output}
    for vi in declared.value_info:
        want = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        got = types.get(vi.name, 0)
        if want and got and want != got:
            n = producer.get(vi.name)
            by = f" by node {n.name!r} ({n.op_type})" if n is not None else ""
            raise NncError(f"value_info says {vi.name!r} is {dtype_name(want)}, but it is "
                           f"computed as {dtype_name(got)}{by}; fix or remove that value_info "
                           "(onnxruntime refuses this model too)")


def _forget_unknown_dims(graph: onnx.GraphProto) -> None:
    """dim_value <= 0 (old exporters' "unknown") becomes an unknown dimension, so onnx does not
    see a conflict with the size it infers."""
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value <= 0:
                    d.ClearField("dim_value")
    for node in graph.node:
        for _, sub in subgraphs(node):
            _forget_unknown_dims(sub)
