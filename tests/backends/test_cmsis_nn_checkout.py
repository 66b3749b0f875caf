"""Building against a CMSIS-NN checkout (CMSIS_NN_PATH / --cmsis-nn) without the real library: a
checkout-shaped tree made from the portable subset (tests/backends/cmsis_nn/fake_checkout.py),
with float16/float32 and other decoy sources a build must leave out, the API check, the written
Makefiles, and the firmware on Cortex-M4, M7 and M55 bit-identical with the generated kernels."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.backends.cmsis_nn import (
    CALLED,
    PORTABLE_ROOT,
    cmake_folder_sources,
    cmake_sources,
    declared_api,
    find_library,
    needed_sources,
)
from nnc.errors import NncError

from .cmsis_nn.fake_checkout import expected_sources, make_checkout, use_old_vector_sum

HAS_ARM = bool(shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"))
needs_tools = pytest.mark.skipif(not HAS_ARM, reason="needs gcc-arm-none-eabi and "
                                 "qemu-system-arm (make install)")
RNG = np.random.default_rng(11)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _net():
    """conv, depthwise, add, max/avg pool, gemm (per-channel FC, kernel sums on Helium),
    softmax: every CMSIS-NN function nnc calls but mul."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "dw"], ["d"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Add", ["d", "ar"], ["s"]),
             helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["p"], ["q"], kernel_shape=[2, 2]),
             helper.make_node("Flatten", ["q"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=-1)]
    inits = {"w1": _w(8, 3, 3, 3), "b1": _w(8), "dw": _w(8, 1, 3, 3), "fw": _w(6, 8 * 3 * 3),
             "fb": _w(6)}
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


NET = _net()  # one set of random weights for every build
CAL = {"x": RNG.standard_normal([6, 1, 3, 8, 8]).astype(np.float32)}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkout(tmp_path_factory.mktemp("cmsis") / "CMSIS-NN")


# ---------------------------------------------------------------- which sources, which API


def test_sources_like_cmsis_nn_cmake(checkout: Path) -> None:
    """The float16/float32 kernels (behind ARM_NN_ENABLE_F16/F32, off), sources CMake does not
    list, and sources no called function needs are all left out."""
    conv = cmake_folder_sources(checkout / "Source" / "ConvolutionFunctions" / "CMakeLists.txt")
    assert "arm_convolve_f16.c" not in {p.name for p in conv}
    assert "arm_convolve_wrapper_s8.c" in {p.name for p in conv}
    softmax = cmake_folder_sources(checkout / "Source" / "SoftmaxFunctions" / "CMakeLists.txt")
    assert [p.name for p in softmax] == ["arm_softmax_s8.c"]  # else() branch, not the u8 one
    candidates = {p.name for p in cmake_sources(checkout)}
    assert "arm_nn_unused_s16.c" in candidates  # CMake would build it ...
    assert not {"arm_convolve_f16.c", "arm_softmax_u8.c",
                "arm_fully_connected_f32.c"} & candidates
    lib = find_library(checkout)
    assert not lib.portable
    assert lib.sources() == expected_sources(checkout)  # ... but nnc's calls do not need it


def test_cmake_reader_follows_conditions(tmp_path: Path) -> None:
    for name in ("a_s8.c", "b_s8.c", "c_f16.c", "d_s16.c"):
        (tmp_path / name).write_text("")
    (tmp_path / "CMakeLists.txt").write_text(
        'file(GLOB SRC "./*_s8.c") # comment (with parentheses)\n'
        "set(FLAG ON)\n"
        "if (ARM_NN_ENABLE_F16 AND FLAG)\n  list(APPEND SRC c_f16.c)\n"
        "elseif (NOT ARM_NN_ENABLE_F32 AND (FLAG OR ARM_NN_ENABLE_F16))\n"
        "  list(APPEND SRC d_s16.c)\nelse()\n  list(APPEND SRC c_f16.c)\nendif()\n"
        "target_sources(cmsis-nn PRIVATE ${SRC})\n")
    assert [p.name for p in cmake_folder_sources(tmp_path / "CMakeLists.txt")] == \
        ["a_s8.c", "b_s8.c", "d_s16.c"]


def test_portable_header_declares_the_current_real_api() -> None:
    """The portable subset declares what CMSIS-NN >= v7.0.0 declares (checked against the real
    headers of head and v7.0.0 when written); nnc emits the same calls for both."""
    api = declared_api(PORTABLE_ROOT / "Include")
    assert set(api) == set(CALLED)
    assert api["arm_vector_sum_s8"] == ("int32_t*", "int32_t", "int32_t", "const int8_t*",
                                        "int32_t", "int32_t", "const int32_t*")
    assert api["arm_avgpool_s8_get_buffer_size"] == ("int", "int")
    assert len(api["arm_elementwise_add_s8"]) == 16 and len(api["arm_softmax_s8"]) == 7


def test_old_api_is_a_clear_user_error(tmp_path: Path) -> None:
    old = make_checkout(tmp_path / "v6")
    use_old_vector_sum(old)
    with pytest.raises(NncError, match=r"arm_vector_sum_s8 takes 6 parameters .* where nnc "
                                       r"passes 7 .*CMSIS-NN v7\.0\.0 or later"):
        find_library(old)


def test_checkout_without_a_called_function(tmp_path: Path, monkeypatch) -> None:
    tree = make_checkout(tmp_path / "partial")
    (tree / "Source" / "SoftmaxFunctions" / "arm_softmax_s8.c").unlink()
    monkeypatch.setenv("CMSIS_NN_PATH", str(tree))
    with pytest.raises(NncError, match=r"CMSIS_NN_PATH=.*defines arm_softmax_s8"):
        find_library()
    assert len(needed_sources(tree, ("arm_max_pool_s8",))) == 1


# ---------------------------------------------------------------- host builds


def test_host_build_uses_only_the_selected_sources(checkout: Path, tmp_path: Path) -> None:
    lib = nnc.compile(NET, quantize="int8", calibration=CAL, cmsis_nn=checkout,
                      output_dir=tmp_path / "out")
    gen = nnc.compile(NET, quantize="int8", calibration=CAL, kernels="generated")
    makefile = (tmp_path / "out" / "Makefile").read_text()
    assert "arm_convolve_wrapper_s8.c" in makefile and "_f16" not in makefile
    assert "arm_nn_unused_s16" not in makefile
    x = {"x": RNG.standard_normal([1, 3, 8, 8]).astype(np.float32)}
    np.testing.assert_array_equal(gen.run(x)["y"], lib.run(x)["y"])
    make = subprocess.run(["make", "-C", str(tmp_path / "out"), "clean", "all"],
                          capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    assert not list(checkout.rglob("*.o"))


def test_broken_checkout_source_is_a_user_error(tmp_path: Path) -> None:
    tree = make_checkout(tmp_path / "broken")
    src = tree / "Source" / "PoolingFunctions" / "arm_max_pool_s8.c"
    src.write_text(src.read_text() + "\nint broken_here = undeclared_thing;\n")
    out = tmp_path / "out"
    with pytest.raises(NncError) as err:
        nnc.compile(NET, quantize="int8", calibration=CAL, cmsis_nn=tree, output_dir=out)
    text = str(err.value)
    assert "CMSIS-NN checkout" in text and "Source/PoolingFunctions/arm_max_pool_s8.c" in text
    assert "arm_max_pool_s8.c:" in text and "undeclared_thing" in text and "error:" in text
    assert "--keep-failed" in text and "nnc bug" not in text
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


# ---------------------------------------------------------------- firmware


@needs_tools
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7", "cortex-m55"])
def test_firmware_against_checkout_equals_generated(checkout: Path, target: str,
                                                    monkeypatch) -> None:
    monkeypatch.setenv("CMSIS_NN_PATH", str(checkout))
    lib = nnc.compile(NET, target=target, quantize="int8", calibration=CAL)
    monkeypatch.delenv("CMSIS_NN_PATH")
    gen = nnc.compile(NET, target=target, quantize="int8", calibration=CAL,
                      kernels="generated")
    assert lib.info["kernel_library"] == f"cmsis-nn ({checkout.resolve()})"
    assert lib.info["library_calls"] == 7
    src = (lib.source_dir / "model" / "model.c").read_text()
    if target == "cortex-m55":  # the Helium FC reads kernel sums: the 7-argument call
        assert "arm_vector_sum_s8(" in src
    for _ in range(2):
        x = {"x": RNG.standard_normal([1, 3, 8, 8]).astype(np.float32)}
        np.testing.assert_array_equal(gen.run(x)["y"], lib.run(x)["y"])
    bench = lib.benchmark()
    assert bench["stack_source"] == "measured"
    assert bench["ram_bytes"] == bench["arena_bytes"] + bench["stack_measured_bytes"]


@needs_tools
def test_firmware_makefiles_build_against_checkout(checkout: Path, tmp_path: Path) -> None:
    """The written Makefiles (top level and model/) and model/CMakeLists.txt build from the
    output folder; objects of the checkout's sources stay out of the checkout."""
    out = tmp_path / "out"
    nnc.compile(NET, target="cortex-m7", quantize="int8", calibration=CAL, cmsis_nn=checkout,
                output_dir=out)
    top = subprocess.run(["make", "-C", str(out), "clean", "all"], capture_output=True,
                         text=True)
    assert top.returncode == 0, top.stdout + top.stderr
    assert (out / "firmware.elf").stat().st_size > 0
    model = subprocess.run(["make", "-C", str(out / "model"), "clean", "all"],
                           capture_output=True, text=True)
    assert model.returncode == 0, model.stdout + model.stderr
    members = subprocess.run(["arm-none-eabi-ar", "t", str(out / "model" / "libmodel.a")],
                             capture_output=True, text=True, check=True).stdout.split()
    assert "cmsis_nn_arm_convolve_wrapper_s8.o" in members and "model.o" in members
    assert not list(checkout.rglob("*.o"))
    if shutil.which("cmake"):
        build = tmp_path / "cmake-build"
        for cmd in (["cmake", "-S", str(out / "model"), "-B", str(build)],
                    ["cmake", "--build", str(build)]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
        assert (build / "libmodel.a").exists()
