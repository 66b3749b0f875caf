"""check-fit: fail at compile time when the model cannot fit the target's RAM or flash.

Runs after plan-memory. A target with `ram_bytes`/`flash_bytes` (microcontrollers) must hold

    RAM:   activation arena + model inputs/outputs + stack reserve
    flash: constant data (weights)                 + code reserve

otherwise the pass raises an `NncError` with needed vs available bytes and the largest tensors or
weights, instead of letting the build produce a firmware that cannot work. Targets without sizes
(the host) are not checked. The reserves are options: `check-fit{stack_reserve=8192}`.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.errors import NncError
from nnc.ir.graph import Graph
from nnc.ir.loops import Buffer, LoopModule
from nnc.passes.manager import PassContext, register_pass


@dataclass(frozen=True)
class CheckFitOptions:
    stack_reserve: int = 4096  # bytes of RAM kept for the stack (kernels, runtime, board code)
    code_reserve: int = 32768  # bytes of flash kept for code (kernels, runtime, startup)


def _largest(items: list[tuple[str, int]], top: int = 3) -> str:
    ranked = sorted(items, key=lambda it: (-it[1], it[0]))[:top]
    more = ", ..." if len(items) > top else ""
    return ", ".join(f"{name} ({size:,} B)" for name, size in ranked) + more


def ram_needed(module: LoopModule) -> tuple[int, int]:
    """(activation arena bytes, input + output bytes) of a planned module."""
    io = {b.name: b.nbytes for b in module.buffers
          if b.scope in ("input", "output") and b.alias is None}
    return module.arena_size, sum(io.values())


def flash_needed(module: LoopModule) -> int:
    """Bytes of constant data (weights), which the firmware keeps in flash."""
    return sum(int(a.nbytes) for a in module.constants.values())


def _roots(module: LoopModule, scope: str) -> list[Buffer]:
    return [b for b in module.buffers if b.scope == scope and b.alias is None]


WEIGHT_OPS = frozenset({"conv", "conv_transpose", "gemm", "matmul"})


def check_weights_fit(graph: Graph, target: object, int8: bool,
                      opts: CheckFitOptions | None = None) -> None:
    """The early flash check, on the imported graph before any pass: the weight operands of
    conv/gemm/matmul ops (1 byte per element when quantizing to int8) are a lower bound of the
    firmware's constant data, so a model they alone overflow is refused before lowering."""
    if getattr(target, "flash_bytes", None) is None:
        return
    consts = graph.constant_map()
    names = {op.inputs[1] for op in graph.ops
             if op.kind in WEIGHT_OPS and len(op.inputs) > 1 and op.inputs[1] in consts}
    sizes = [(n, int(consts[n].size) * (1 if int8 else int(consts[n].itemsize)))
             for n in sorted(names)]
    check_weight_sizes(sizes, target, int8, "checked right after import", opts)


def check_weight_sizes(sizes: list[tuple[str, int]], target: object, int8: bool, when: str,
                       opts: CheckFitOptions | None = None) -> None:
    """Refuse `sizes` ((weight, bytes) of conv/gemm/matmul weights) that alone overflow the
    target's flash; `when` says at which point in the message."""
    flash = getattr(target, "flash_bytes", None)
    if flash is None:
        return
    opts = opts or CheckFitOptions()
    weights = sum(size for _, size in sizes)
    if weights + opts.code_reserve <= flash:
        return
    name = getattr(target, "name", "target")
    hint = "" if int8 else " or --quantize int8 (1 byte per weight)"
    raise NncError(
        f"model does not fit {name} flash: its conv/gemm/matmul weights alone need "
        f"{weights:,} B{' as int8' if int8 else ''} + {opts.code_reserve:,} B code = "
        f"{weights + opts.code_reserve:,} B > {flash:,} B available ({when}); largest "
        f"weights: {_largest(sizes)}; use --flash to give the real part's size{hint}")


@register_pass("check-fit", options=CheckFitOptions)
def check_fit(module: LoopModule, ctx: PassContext) -> LoopModule:
    """Fail when arena + I/O + stack exceed the target's RAM or weights + code its flash."""
    opts = ctx.options if ctx.options is not None else CheckFitOptions()
    if opts.stack_reserve < 0 or opts.code_reserve < 0:
        raise ValueError("check-fit: reserves must be >= 0")
    target = ctx.target
    name = getattr(target, "name", "target")
    ram = getattr(target, "ram_bytes", None)
    flash = getattr(target, "flash_bytes", None)
    problems = []
    arena, io = ram_needed(module)
    need_ram = arena + io + opts.stack_reserve
    if ram is not None and need_ram > ram:
        tensors = [(b.name, b.nbytes) for b in _roots(module, "arena")]
        problems.append(
            f"model does not fit {name} RAM: needs {arena:,} B activations + {io:,} B "
            f"inputs/outputs + {opts.stack_reserve:,} B stack = {need_ram:,} B > {ram:,} B "
            f"available; largest tensors: {_largest(tensors) or 'none'}; use --ram to give "
            "the real part's size"
        )
    weights = flash_needed(module)
    need_flash = weights + opts.code_reserve
    if flash is not None and need_flash > flash:
        consts = [(n, int(a.nbytes)) for n, a in module.constants.items()]
        problems.append(
            f"model does not fit {name} flash: needs {weights:,} B weights + "
            f"{opts.code_reserve:,} B code = {need_flash:,} B > {flash:,} B available; largest "
            f"weights: {_largest(consts) or 'none'}; use --flash to give the real part's size"
        )
    ctx.facts["fit"] = {"ram_needed": need_ram, "ram_available": ram,
                        "flash_needed": need_flash, "flash_available": flash}
    if problems:
        raise NncError(". Also: ".join(problems))
    return module
