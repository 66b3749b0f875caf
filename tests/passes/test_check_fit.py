"""check-fit: needed vs available RAM/flash, with the numbers and the largest tensors/weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from nnc.compiler.errors import NncError
from nnc.ir.loops import Buffer, KernelBuilder, LoopModule
from nnc.passes.check_fit import CheckFitOptions, check_fit
from nnc.passes.manager import PassContext, PassManager


@dataclass(frozen=True)
class FakeTarget:
    name: str = "fake-m7"
    ram_bytes: int | None = None
    flash_bytes: int | None = None


def planned_module() -> LoopModule:
    """x[256] -> t0[1024] -> t1[512] -> y[16] with weights w0 (4,096 B) and w1 (64 B);
    planned arena 6,144 B, inputs/outputs 1,088 B."""
    x, y = Buffer("x", (256,), "float32", "input"), Buffer("y", (16,), "float32", "output")
    t0 = Buffer("t0", (1024,), "float32", "arena", offset=0)
    t1 = Buffer("t1", (512,), "float32", "arena", offset=4096)
    w0 = Buffer("w0", (1024,), "float32", "constant")
    w1 = Buffer("w1", (16,), "float32", "constant")
    kernels = []
    for name, src, dst, w in (("k0", x, t0, w0), ("k1", t0, t1, None), ("k2", t1, y, w1)):
        b = KernelBuilder(name)
        with b.loop(dst.shape[0]) as i:
            v = src[i % src.shape[0]]
            b.store(dst, (i,), v * w[i % w.shape[0]] if w is not None else v)
        kernels.append(b.build((src.name, dst.name) + ((w.name,) if w is not None else ())))
    consts = {"w0": np.ones(1024, np.float32), "w1": np.ones(16, np.float32)}
    return LoopModule("m", (x, y, t0, t1, w0, w1), tuple(kernels), ("x",), ("y",), consts,
                      arena_size=6144)


def check(target: object, **opts: int) -> tuple[LoopModule, dict]:
    ctx = PassContext(CheckFitOptions(**opts), target)
    out = check_fit(planned_module(), ctx)
    return out, ctx.facts["fit"]


RAM_NEED = 6144 + 1088 + 4096  # arena + inputs/outputs + default stack reserve
FLASH_NEED = 4096 + 64 + 32768  # weights + default code reserve


def test_targets_without_sizes_are_not_checked() -> None:
    m = planned_module()
    assert check_fit(m, PassContext()) is m
    _, facts = check(FakeTarget())
    assert facts == {"ram_needed": RAM_NEED, "ram_available": None,
                     "flash_needed": FLASH_NEED, "flash_available": None}


def test_exactly_full_fits() -> None:
    _, facts = check(FakeTarget(ram_bytes=RAM_NEED, flash_bytes=FLASH_NEED))
    assert facts["ram_needed"] == RAM_NEED and facts["flash_needed"] == FLASH_NEED


def test_ram_overflow_names_the_numbers_and_largest_tensors() -> None:
    with pytest.raises(NncError) as e:
        check(FakeTarget(ram_bytes=8192, flash_bytes=1 << 20))
    assert str(e.value) == (
        "model does not fit fake-m7 RAM: needs 6,144 B activations + 1,088 B inputs/outputs + "
        "4,096 B stack = 11,328 B > 8,192 B available; largest tensors: t0 (4,096 B), "
        "t1 (2,048 B); use --ram to give the real part's size")


def test_flash_overflow_names_the_largest_weights() -> None:
    with pytest.raises(NncError) as e:
        check(FakeTarget(ram_bytes=1 << 20, flash_bytes=4096), code_reserve=1024)
    assert str(e.value) == (
        "model does not fit fake-m7 flash: needs 4,160 B weights + 1,024 B code = 5,184 B > "
        "4,096 B available; largest weights: w0 (4,096 B), w1 (64 B); use --flash to give the "
        "real part's size")


def test_both_overflows_in_one_message_and_reserves_count() -> None:
    with pytest.raises(NncError, match=r"RAM: .*stack = 7,232 B > 7,000 B.*Also: model does "
                                       r"not fit fake-m7 flash: needs 4,160 B weights \+ 0 B"):
        check(FakeTarget(ram_bytes=7000, flash_bytes=4000), stack_reserve=0, code_reserve=0)


def test_error_passes_through_the_pass_manager() -> None:
    pm = PassManager("check-fit{stack_reserve=0; code_reserve=0}",
                     target=FakeTarget(ram_bytes=7000))
    with pytest.raises(NncError, match="does not fit fake-m7 RAM"):
        pm.run(planned_module())
    ok = PassManager("check-fit{stack_reserve=0}", target=FakeTarget(ram_bytes=7232))
    assert ok.run(planned_module()).arena_size == 6144


def test_negative_reserve_is_rejected() -> None:
    with pytest.raises(ValueError, match="reserves must be >= 0"):
        check(FakeTarget(), stack_reserve=-1)
