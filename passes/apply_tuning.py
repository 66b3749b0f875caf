"""apply-tuning: give kernels the schedules a tuner chose for their workload.

Reads `ctx.facts["tuned_schedules"]`, a mapping {workload key: schedule steps} (the compiler
fills it from a tuning cache, `nnc.compiler.tune.cache`; the tuner with the candidates it
measures), and sets the steps on every kernel with a declarative definition whose
`Kernel.workload` is a key there. It runs before `default-schedule`, which leaves kernels that
already carry a schedule alone. How many kernels it set goes to `ctx.facts["tuned_kernels"]`.

    kernel @k3_conv_s8 ... workload #c4faa959b8b1 "conv_s8(...)"    (no schedule)
      -> schedule [Split(loop='oc', factor=8), Unroll(loop='oc_i'), ...]
"""

from __future__ import annotations

from collections.abc import Mapping

from nnc.ir.loops import LoopModule, ScheduleStep
from nnc.passes.manager import PassContext, register_pass

FACT = "tuned_schedules"


@register_pass("apply-tuning")
def apply_tuning(module: LoopModule, ctx: PassContext) -> LoopModule:
    """Set the tuned schedules of `ctx.facts["tuned_schedules"]` on the kernels they are for."""
    tuned: Mapping[str, tuple[ScheduleStep, ...]] = ctx.facts.get(FACT) or {}
    kernels = []
    count = 0
    for k in module.kernels:
        steps = tuned.get(k.workload) if k.compute is not None and k.workload else None
        if steps is not None:
            k = k.replace(schedule=tuple(steps))
            count += 1
        kernels.append(k)
    ctx.facts["tuned_kernels"] = ctx.facts.get("tuned_kernels", 0) + count
    return module.replace(kernels=tuple(kernels)) if count else module
