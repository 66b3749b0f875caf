"""The firmware's batch mode (`DeviceModel.execute_batch`): many samples in one QEMU start give
the same outputs and counts as one run per sample, progress per sample, and faults / hangs still
name the sample and the layer (tiny model, fast)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import numpy as np
import pytest

from nnc.backends.cortex_m import DeviceModel
from nnc.compiler.errors import NncError
from nnc.ir.loops import LoopModule

from .test_firmware import m7, module, reference  # noqa: F401 - fixtures

pytestmark = [pytest.mark.needs_arm, pytest.mark.needs_qemu]


def samples(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(n)]


def test_batch_matches_single_runs(m7: DeviceModel) -> None:  # noqa: F811
    xs = samples(20)
    done: list[int] = []
    batch = m7.execute_batch(xs, progress=done.append)
    assert done == list(range(1, 21))
    assert len(batch.outputs) == 20 and batch.total_ticks.shape == (20,)
    assert batch.layer_ticks.shape == (20, len(m7.layers)) and not batch.status.any()
    for k in (0, 7, 19):  # the single-run path, one QEMU start per sample
        one = m7.execute(xs[k])
        assert np.array_equal(one.outputs["y"], batch.outputs[k]["y"])
        # the board timer ticks several times per emulated instruction, and where a read falls
        # between two ticks depends on everything run before: counts agree within one tick
        assert abs(one.total_ticks - batch.total_ticks[k]) <= 1
        assert np.abs(np.array(one.layer_ticks) - batch.layer_ticks[k]).max() <= 1
    for x, out in zip(xs, batch.outputs, strict=True):
        np.testing.assert_allclose(out["y"], reference(x["x"]), rtol=1e-4, atol=1e-6)
    assert batch.stack_bytes > 0 and (batch.layer_ticks.sum(axis=1) <= batch.total_ticks).all()


def test_batch_checks_every_sample(m7: DeviceModel) -> None:  # noqa: F811
    xs = samples(3)
    xs[2] = {"x": np.zeros((1, 15), np.float32)}
    with pytest.raises(NncError, match=r"input 'x' is float32\[1, 15\]"):
        m7.execute_batch(xs)
    with pytest.raises(NncError, match="at least one sample"):
        m7.execute_batch([])


def test_batch_fault_and_hang_name_the_layer(module: LoopModule,  # noqa: F811
                                             firmware: Callable[..., DeviceModel]) -> None:
    dev = firmware(module, defines=["NNC_TEST_FAULT_LAYER=1"])
    with pytest.raises(NncError, match=r"crashed with a UsageFault in layer 1 \("):
        dev.execute_batch(samples(2))
    dev = firmware(module, defines=["NNC_TEST_HANG_LAYER=1"])
    with pytest.raises(NncError, match=r"timed out after 2 s on sample 0 of 2 in layer 1 \("):
        dev.execute_batch(samples(2), timeout_s=2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(dev.elf.resolve()) not in ps
