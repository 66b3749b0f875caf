"""`nnc inspect --target opencl`: the kernels model.cl would hold and their work mapping.

    >>> print(inspect_opencl("conv.onnx"))               # doctest: +SKIP
    kernel   op         MACs   cpu: work items (loops)  gpu: work items (loops)       gpu local
    k0_conv  conv+relu  6,912  4 (i1)                   256 (tile0[1], tile0[0], i1)  8,1,1

The kernels are the OpenCL pipeline's (the same passes `nnc compile --target opencl` runs);
the mappings are `kernel_mappings`' per device type: CPU devices get the outer loop nest,
GPUs and accelerators spread imperfect bodies too (see mapping.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnc.backends.opencl.emit import kernel_mappings
from nnc.backends.opencl.mapping import WorkMapping
from nnc.ir.loops import LoopModule


def lower_for_opencl(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
                     bind: Mapping[str, object] | None = None) -> LoopModule:
    """The loop module `nnc compile --target opencl` emits for `model` (a path or ModelProto)."""
    from nnc.backends.target import parse_target
    from nnc.compiler.onnx.importer import import_model
    from nnc.compiler.pipeline import default_pipeline
    from nnc.passes.manager import PassManager, parse_pipeline

    graph = import_model(model, input_shapes, bind)
    pm = PassManager(parse_pipeline(default_pipeline("opencl")), target=parse_target("opencl"))
    return pm.run(graph)  # type: ignore[no-any-return]


def _items(m: WorkMapping) -> str:
    n = int(np.prod(m.global_work))
    return f"{n:,} ({', '.join(m.loops) or 'one item'})"


def kernel_table(module: LoopModule) -> list[dict[str, Any]]:
    """One row per kernel: name, op, MACs and the mapping per device type."""
    cpu, gpu = kernel_mappings(module, "cpu"), kernel_mappings(module, "gpu")
    return [dict(kernel=k.name, op=k.op_kind, macs=k.macs, cpu=c, gpu=g)
            for k, c, g in zip(module.kernels, cpu, gpu, strict=True)]


def inspect_opencl(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
                   bind: Mapping[str, object] | None = None) -> str:
    """The report `nnc inspect --target opencl` prints."""
    rows = kernel_table(lower_for_opencl(model, input_shapes, bind))
    head = ("kernel", "op", "MACs", "cpu: work items (loops)", "gpu: work items (loops)",
            "gpu local")
    cells = [(r["kernel"], r["op"], f"{r['macs']:,}", _items(r["cpu"]), _items(r["gpu"]),
              ",".join(map(str, r["gpu"].local_size("gpu") or ())) or "driver")
             for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
             for row in (head, *cells)]
    spread = sum(1 for r in rows if r["gpu"].spread)
    lines.append(f"{len(rows)} kernels; {spread} spread through imperfect bodies on GPUs "
                 "(CPU devices keep the outer nest)")
    return "\n".join(lines)
