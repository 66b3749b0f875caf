"""Fixtures for the Cortex-M tests: skip cleanly without the Arm toolchain or QEMU, lower ONNX
models with the host pipeline, build firmware into temporary directories."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from nnc.backends.c.emit import emit_c
from nnc.backends.cortex_m import DeviceModel, build_firmware
from nnc.compiler.onnx.importer import import_model
from nnc.compiler.pipeline import default_pipeline
from nnc.ir.loops import LoopModule
from nnc.passes.manager import PassManager


def _has_arm() -> bool:
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        return False
    specs = subprocess.run([gcc, "-print-file-name=rdimon.specs"], capture_output=True,
                           text=True).stdout.strip()
    return specs not in ("", "rdimon.specs")


HAS_ARM = _has_arm()
HAS_QEMU = shutil.which("qemu-system-arm") is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_arm") and not HAS_ARM:
        pytest.skip("needs gcc-arm-none-eabi + libnewlib-arm-none-eabi")
    if item.get_closest_marker("needs_qemu") and not HAS_QEMU:
        pytest.skip("needs qemu-system-arm")


def lower(model: onnx.ModelProto | str | Path) -> LoopModule:
    """The loop module of the host target's default pipeline (portable C, fine for Cortex-M)."""
    module = PassManager(default_pipeline("host")).run(import_model(model))
    assert isinstance(module, LoopModule)
    return module


@pytest.fixture
def firmware(tmp_path: Path) -> Callable[..., DeviceModel]:
    """firmware(module, target, **build_options) -> DeviceModel, built in tmp_path."""
    counter = iter(range(1000))

    def make(module: LoopModule, target: str = "cortex-m7", **options: object) -> DeviceModel:
        out = tmp_path / f"fw{next(counter)}"
        build_firmware(emit_c(module), out, target, module, **options)  # type: ignore[arg-type]
        return DeviceModel(out)

    return make
