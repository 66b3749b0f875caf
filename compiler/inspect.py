"""`nnc inspect`: the graph IR of a model with per-op MACs and parameter counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nnc.ir.graph import Graph, Op
from nnc.ir.ops import get_op


def op_macs(op: Op, types: Mapping) -> int:  # type: ignore[type-arg]
    if op.body is not None:
        return sum(op_macs(inner, {**types, **op.body.value_types()}) for inner in op.body.ops)
    fn = get_op(op.kind).macs
    if fn is None:
        return 0
    return int(fn([types.get(n) if n else None for n in op.inputs], [v.type for v in op.outputs],
                  op.attrs))


def op_params(op: Op, constants: Mapping[str, object]) -> int:
    return sum(constants[n].size for n in set(op.inputs) if n in constants)  # type: ignore[attr-defined]


def summary_table(graph: Graph) -> str:
    types = graph.value_types()
    consts = graph.constant_map()
    rows = [("op", "kind", "output", "MACs", "params")]
    total_macs = total_params = 0
    for op in graph.ops:
        macs, params = op_macs(op, types), op_params(op, consts)
        total_macs += macs
        total_params += params
        out = str(op.outputs[0].type) if op.outputs else ""
        kind = op.attr("ops", op.kind) if op.body is not None else op.kind
        rows.append((op.name or op.outputs[0].name, str(kind), out, f"{macs:,}", f"{params:,}"))
    rows.append(("total", f"{len(graph.ops)} ops", "", f"{total_macs:,}", f"{total_params:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0 or n == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def inspect_model(model: object, input_shapes: Mapping[str, Sequence[int]] | None = None,
                  optimized: bool = False, bind: Mapping[str, object] | None = None) -> str:
    from nnc.compiler.onnx.importer import import_model
    from nnc.compiler.pipeline import GRAPH_PASSES
    from nnc.ir.printer import print_graph
    from nnc.passes.manager import PassManager

    graph = import_model(model, input_shapes, bind)  # type: ignore[arg-type]
    if optimized:
        graph = PassManager(",".join(GRAPH_PASSES)).run(graph)  # type: ignore[assignment]
    return print_graph(graph, elide_constants=True) + "\n" + summary_table(graph)


def inspect_opencl(model: object, input_shapes: Mapping[str, Sequence[int]] | None = None,
                   bind: Mapping[str, object] | None = None) -> str:
    """`nnc inspect --target opencl`: the kernels model.cl would hold and their work mapping
    per device type (the loop module `nnc compile --target opencl` emits)."""
    from nnc.backends.opencl.inspect import kernel_report
    from nnc.backends.target import parse_target
    from nnc.compiler.onnx.importer import import_model
    from nnc.compiler.pipeline import default_pipeline
    from nnc.passes.manager import PassManager, parse_pipeline

    graph = import_model(model, input_shapes, bind)  # type: ignore[arg-type]
    pm = PassManager(parse_pipeline(default_pipeline("opencl")), target=parse_target("opencl"))
    return kernel_report(pm.run(graph))  # type: ignore[arg-type]
