"""ONNX converters for control flow: If whose condition is a compile-time constant.

nnc compiles one static graph, so an If is resolved at import: its condition must fold to a
constant (typically a check on an input fixed with `--bind`, or on a static shape through Shape,
Size, Equal, Not), and the taken branch's nodes are converted in place, in a scope that sees the
enclosing graph's values (`ConvertContext.inline`). Nested Ifs fold the same way as they are met.
The branch that is not taken is never converted.
"""

from __future__ import annotations

import numpy as np

from nnc.compiler.onnx.registry import ConversionError, ConvertContext, converter


@converter("If", since=1)
def convert_if(ctx: ConvertContext) -> list[str]:
    cond = ctx.const(0)
    if cond is None:
        hint = ctx.bind_hint(0) or ("; fix the graph inputs it is computed from with "
                                    "--bind NAME=VALUE")
        raise ConversionError("the condition is not a compile-time "
                              f"constant (nnc compiles one static graph){hint}")
    if cond.size != 1:
        raise ConversionError(f"the condition has {cond.size} elements; If needs a single one")
    taken = "then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"
    branch = ctx.attr(taken)
    if branch is None:
        raise ConversionError(f"attribute {taken} is missing")
    outs = ctx.inline(branch, taken)
    if len(outs) != len(ctx.node.output):
        raise ConversionError(f"{taken} has {len(outs)} outputs, the node {len(ctx.node.output)}")
    return outs
