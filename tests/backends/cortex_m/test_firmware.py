"""Firmware for the emulated boards: project layout, QEMU runs against numpy, deterministic
instruction counts, fault/timeout/missing-tool/does-not-fit errors (tiny model, fast)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc.backends.c.emit import emit_c
from nnc.backends.cortex_m import DeviceModel, build_firmware
from nnc.backends.cortex_m.toolchain import find_toolchain
from nnc.backends.target import parse_target
from nnc.compiler.errors import NncError
from nnc.ir.loops import LoopModule

from .conftest import lower

RNG = np.random.default_rng(7)
W = RNG.standard_normal((16, 8)).astype(np.float32)
B = RNG.standard_normal(8).astype(np.float32)


def tiny_model() -> onnx.ModelProto:
    """x[1,16] -> MatMul -> Add -> Relu -> Softmax: three kernels, one of them calls expf."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Softmax", ["r"], ["y"], axis=-1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def reference(x: np.ndarray) -> np.ndarray:
    r = np.maximum(x @ W + B, 0)
    e = np.exp(r - r.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def module() -> LoopModule:
    return lower(tiny_model())


@pytest.fixture(scope="module")
def m7(module: LoopModule, tmp_path_factory: pytest.TempPathFactory) -> DeviceModel:
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs gcc-arm-none-eabi and qemu-system-arm")
    out = tmp_path_factory.mktemp("tiny") / "out"
    build_firmware(emit_c(module), out, "cortex-m7", module)
    return DeviceModel(out)


@pytest.mark.needs_arm
def test_project_layout(m7: DeviceModel) -> None:
    out = m7.out_dir
    model = {p.name for p in (out / "model").iterdir()}
    assert {"model.c", "model.h", "nnc_runtime.h", "Makefile", "CMakeLists.txt"} <= model
    assert {"startup.c", "board.c", "board.ld", "device_main.c", "nnc_board.h"} <= \
        {p.name for p in (out / "board").iterdir()}
    # the model library knows nothing of the board or of stdio/malloc
    model_c = (out / "model" / "model.c").read_text()
    assert "nnc_board" not in model_c and "stdio" not in model_c and "malloc" not in model_c
    assert {"Makefile", "device.json", "firmware.elf"} <= {p.name for p in out.iterdir()}
    assert any((out / "build").glob("*.su"))


@pytest.mark.needs_arm
@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_makefiles_build(m7: DeviceModel, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(m7.out_dir, copy)
    subprocess.run(["make", "-s", "-C", str(copy / "model")], check=True, capture_output=True)
    lib = copy / "model" / "libmodel.a"
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(lib)], capture_output=True,
                               text=True, check=True).stdout
    assert "malloc" not in undefined and "printf" not in undefined
    subprocess.run(["make", "-s", "-C", str(copy), "clean", "all"], check=True,
                   capture_output=True)
    assert (copy / "firmware.elf").stat().st_size > 0


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_run_matches_numpy(m7: DeviceModel) -> None:
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    y = m7.run({"x": x})["y"]
    assert y.shape == (1, 8) and y.dtype == np.float32
    np.testing.assert_allclose(y, reference(x), rtol=1e-4, atol=1e-6)


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_benchmark_is_deterministic(m7: DeviceModel) -> None:
    first, second = m7.benchmark(), m7.benchmark()
    for key in ("target", "instructions", "instructions_per_mac", "macs", "ram_bytes",
                "flash_bytes", "layers"):
        assert key in first
    assert first["target"] == "cortex-m7" and first["board"] == "mps2-an500"
    assert "not cycles" in first["note"]
    assert first["instructions"] > 0 and first["macs"] == 16 * 8
    assert first["flash_bytes"] > 0 and first["ram_bytes"] >= first["arena_bytes"]
    # RAM = arena + the stack measured on the board (painted before the run)
    assert first["stack_source"] == "measured" and first["stack_measured_bytes"] > 0
    assert first["ram_bytes"] == first["arena_bytes"] + first["stack_measured_bytes"]
    assert first["stack_bytes"] == first["stack_measured_bytes"]
    assert first["stack_estimate_bytes"] == m7.info["firmware"]["stack_bytes"] > 0
    assert len(first["layers"]) == len(m7.layers) > 0
    assert sum(la["instructions"] for la in first["layers"]) <= first["instructions"]
    assert {k: v for k, v in first.items() if k != "emulator_wall_s"} == \
        {k: v for k, v in second.items() if k != "emulator_wall_s"}


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_counts_are_linear_in_work(firmware: Callable[..., DeviceModel]) -> None:
    """Twice the rows of a matmul: its layer count doubles up to a constant per-call cost."""
    counts = []
    for n in (64, 128):
        w = np.ones((n, 32), np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
            [numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        counts.append(firmware(lower(model)).benchmark()["layers"][0]["instructions"])
    assert abs(counts[1] / counts[0] - 2) < 0.05, counts


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_cortex_m4_runs(module: LoopModule, firmware: Callable[..., DeviceModel]) -> None:
    dev = firmware(module, "cortex-m4")
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    np.testing.assert_allclose(dev.run({"x": x})["y"], reference(x), rtol=1e-4, atol=1e-6)
    assert dev.benchmark()["board"] == "mps2-an386"


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_hard_fault_names_the_layer(module: LoopModule,
                                    firmware: Callable[..., DeviceModel]) -> None:
    dev = firmware(module, defines=["NNC_TEST_FAULT_LAYER=1"])
    with pytest.raises(NncError, match=r"crashed with a UsageFault in layer 1 \(") as err:
        dev.benchmark()
    assert "Traceback" not in str(err.value)


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_timeout_names_the_layer_and_kills_qemu(module: LoopModule,
                                                firmware: Callable[..., DeviceModel]) -> None:
    dev = firmware(module, defines=["NNC_TEST_HANG_LAYER=1"])
    with pytest.raises(NncError, match=r"timed out after 2 s in layer 1 \("):
        dev.execute(timeout_s=2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(dev.elf.resolve()) not in ps


def test_missing_toolchain_names_the_package(module: LoopModule, tmp_path: Path) -> None:
    target = parse_target("cortex-m7").with_cc("arm-nonexistent-eabi-gcc")
    with pytest.raises(NncError, match="gcc-arm-none-eabi libnewlib-arm-none-eabi"):
        build_firmware(emit_c(module), tmp_path / "out", target, module)
    find_toolchain.cache_clear()


@pytest.mark.needs_arm
def test_missing_qemu_names_the_package(m7: DeviceModel) -> None:
    dev = DeviceModel(m7.out_dir, qemu="qemu-system-nonexistent")
    with pytest.raises(NncError, match="install the Debian package qemu-system-arm"):
        dev.benchmark()


@pytest.mark.needs_arm
def test_does_not_fit_reports_numbers(module: LoopModule, tmp_path: Path) -> None:
    target = parse_target("cortex-m7", ram="1K", flash="8K")
    with pytest.raises(NncError, match=r"does not fit: flash needs [\d,]+ B but cortex-m7 has "
                                       r"8,192 B \(8K\).*RAM needs"):
        build_firmware(emit_c(module), tmp_path / "out", target, module)


@pytest.mark.needs_arm
def test_bigger_part_links_but_does_not_run_in_qemu(tmp_path: Path) -> None:
    big = np.ones((1200, 1024), np.float32)  # 4.7 MB of weights: more than the board's 4 MiB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1200])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])],
        [numpy_helper.from_array(big, "w")])
    module = lower(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    target = parse_target("cortex-m7", flash="8M")
    info = build_firmware(emit_c(module), tmp_path / "out", target, module)
    assert info.flash_bytes > 4 << 20
    with pytest.raises(NncError, match="can be built for a bigger part but not run in QEMU"):
        DeviceModel(tmp_path / "out").benchmark()


def test_not_a_firmware_directory(tmp_path: Path) -> None:
    with pytest.raises(NncError, match="no firmware.elf with device.json"):
        DeviceModel(tmp_path)


def _relu_model(n: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.needs_arm
def test_run_refuses_what_does_not_fit_the_board(tmp_path: Path) -> None:
    """Built for a part with 8M of RAM: 4.8 MB of input/output buffers fit it but not the
    emulated board's 4 MiB. `nnc run` says so before starting QEMU (exit 2, one line)."""
    import sys

    import nnc

    nnc.compile(_relu_model(600_000), target="cortex-m7", ram="8M", output_dir=tmp_path / "out")
    dev = DeviceModel(tmp_path / "out", qemu="qemu-system-nonexistent")  # QEMU never starts
    with pytest.raises(NncError, match=r"cannot run on the emulated mps2-an500: it needs "
                                       r"[\d,]+ B of RAM \(static [\d,]+ B incl\. the 0 B arena "
                                       r"\+ inputs/outputs 4,800,000 B \+ stack 4,096 B\) but the "
                                       r"board has 4,194,304 B; it can be built for a bigger part"):
        dev.run({"x": np.zeros((1, 600_000), np.float32)})
    cli = subprocess.run([sys.executable, "-m", "nnc.compiler.cli", "run", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1
    assert "inputs/outputs 4,800,000 B" in cli.stderr and "QEMU exit code" not in cli.stderr


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m55"])
def test_bigger_ram_part_runs_when_it_fits_the_board(module: LoopModule, tmp_path: Path,
                                                     target: str) -> None:
    """Linked for 8M of RAM, the stack still sits at the top of the board's 4 MiB (the AN547 has
    nothing above it), so what fits the board runs."""
    out = tmp_path / "out"
    build_firmware(emit_c(module), out, parse_target(target, ram="8M"), module)
    assert "__board_ram_end" in (out / "board" / "memory.ld").read_text()
    x = RNG.standard_normal((1, 16)).astype(np.float32)
    np.testing.assert_allclose(DeviceModel(out).run({"x": x})["y"], reference(x), rtol=1e-4,
                               atol=1e-6)
