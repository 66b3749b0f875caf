"""`nnc inspect --target opencl`'s table: the kernels model.cl would hold, their work mapping.

    >>> print(kernel_report(module))                      # doctest: +SKIP
    kernel   op         MACs   cpu: work items (loops)  gpu: work items (loops)       gpu local
    k0_conv  conv+relu  6,912  4 (i1)                   256 (tile0[1], tile0[0], i1)  8,1,1

`nnc.compiler.inspect.inspect_opencl(model)` lowers a model with the OpenCL pipeline (the
passes `nnc compile --target opencl` runs) and prints this. The mappings are
`kernel_mappings`' per device type: CPU devices get the outer loop nest, GPUs and
accelerators spread imperfect bodies too (see mapping.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.backends.opencl.emit import kernel_mappings
from nnc.backends.opencl.mapping import WorkMapping
from nnc.ir.loops import LoopModule


def _items(m: WorkMapping) -> str:
    n = int(np.prod(m.global_work))
    return f"{n:,} ({', '.join(m.loops) or 'one item'})"


def kernel_table(module: LoopModule) -> list[dict[str, Any]]:
    """One row per kernel: name, op, MACs and the mapping per device type."""
    cpu, gpu = kernel_mappings(module, "cpu"), kernel_mappings(module, "gpu")
    return [dict(kernel=k.name, op=k.op_kind, macs=k.macs, cpu=c, gpu=g)
            for k, c, g in zip(module.kernels, cpu, gpu, strict=True)]


def kernel_report(module: LoopModule) -> str:
    """The table `nnc inspect --target opencl` prints (nnc.compiler.inspect lowers the model)."""
    rows = kernel_table(module)
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
