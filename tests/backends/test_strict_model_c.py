"""The generated `model/` library is firmware-ready: it builds with no warning under
`-Wall -Wextra -Wconversion -Wshadow -Werror` (gcc, clang, arm-none-eabi-gcc), CMake builds it out
of source and a foreign main.c links it (fp32 without CMSIS-NN, int8 with it), and the host model
runs clean under ASan + UBSan on NaN/inf/random inputs. KWS runs always; AD, VWW and IC are
`slow` (the same checks)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.models import mlperf_tiny
from nnc.compiler.api import compile as nnc_compile
from nnc.testing import find_clang

STRICT = ["-std=c99", "-fwrapv", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Wshadow", "-Werror"]
M7 = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"]
BUILDERS = {"kws": mlperf_tiny.build_kws, "ad": mlperf_tiny.build_ad,
            "vww": mlperf_tiny.build_vww, "ic": mlperf_tiny.build_ic}
MODELS = ["kws", *(pytest.param(m, marks=pytest.mark.slow) for m in ("ad", "vww", "ic"))]
CLANG = find_clang()

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                               reason="needs gcc-arm-none-eabi")


def _compilers() -> list[list[str]]:
    ccs = [["gcc"]] + ([[CLANG]] if CLANG else [])
    return ccs + ([["arm-none-eabi-gcc", *M7]] if shutil.which("arm-none-eabi-gcc") else [])


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    import onnx

    d = tmp_path_factory.mktemp("mlperf")
    paths = {}
    for name, build in BUILDERS.items():
        paths[name] = d / f"{name}.onnx"
        onnx.save(build(), str(paths[name]))
    return paths


def _compile(onnx_models, tmp_path, name: str, variant: str, target: str) -> Path:
    out = tmp_path / f"{name}_{variant}_{target}"
    # int8 on Cortex-M: through the (portable) CMSIS-NN calls, whose sources come along; nnc's
    # generated kernels, the default, have their own test below
    q = {"quantize": "int8", "calibration": "random"} if variant == "int8" else {}
    if q and target != "host":
        q["kernels"] = "cmsis-nn"
    nnc_compile(str(onnx_models[name]), target=target, output_dir=out, bench=False, **q)
    return out


def _sources(model_dir: Path) -> list[Path]:
    return [model_dir / "model.c", *sorted(model_dir.glob("cmsis_nn/Source/*/*.c"))]


@needs_arm
@pytest.mark.filterwarnings("ignore:calibrating on RANDOM data")
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_model_library_is_warning_free_and_cmake_builds_out_of_source(
        onnx_models, tmp_path, name, variant) -> None:
    out = _compile(onnx_models, tmp_path, name, variant, "cortex-m7")
    lib = out / "model"
    assert (lib / "cmsis_nn").is_dir() == (variant == "int8")
    for cc in _compilers():
        for src in _sources(lib):
            r = subprocess.run([*cc, *STRICT, "-I", str(lib), "-I", str(lib / "cmsis_nn/Include"),
                                "-c", str(src), "-o", str(tmp_path / "x.o")],
                               capture_output=True, text=True)
            assert r.returncode == 0, f"{cc[0]} {src.name}:\n{r.stderr[:3000]}"
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    build = tmp_path / "elsewhere" / "build"  # out of source, from another working directory
    for cmd in (["cmake", "-S", str(lib), "-B", str(build)], ["cmake", "--build", str(build)]):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    main = tmp_path / "main.c"
    main.write_text('#include "model.h"\nint main(void) { return nnc_init(); }\n')
    r = subprocess.run(["arm-none-eabi-gcc", *M7, "--specs=nosys.specs", str(main), "-I", str(lib),
                        str(build / "libmodel.a"), "-lm", "-o", str(tmp_path / "app.elf")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


M55 = ["-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"]


@needs_arm
@pytest.mark.filterwarnings("ignore:calibrating on RANDOM data")
@pytest.mark.parametrize("target, flags", [("cortex-m7", M7), ("cortex-m55", M55)])
def test_generated_int8_kernels_are_warning_free(onnx_models, tmp_path, target, flags) -> None:
    """nnc's own int8 kernels with the target's intrinsics (SMLAD helpers on the M7, Helium
    lanes on the M55) under the same strict flags, compiled for that core."""
    out = tmp_path / target
    nnc_compile(str(onnx_models["kws"]), target=target, output_dir=out, bench=False,
                quantize="int8", calibration="random", kernels="generated")
    src = (out / "model" / "model.c").read_text()
    assert ("nnc_dot4_s8" in src) if target == "cortex-m7" else ("vldrbq_s32" in src)
    r = subprocess.run(["arm-none-eabi-gcc", *flags, *STRICT, "-I", str(out / "model"), "-c",
                        str(out / "model" / "model.c"), "-o", str(tmp_path / "x.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[:3000]


SANITIZED_MAIN = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
/* inputs: NaN, +inf, -inf, then a deterministic ramp; every output read */
int main(void) {
    void *in[NNC_NUM_INPUTS + 1], *out[NNC_NUM_OUTPUTS + 1];
    for (int i = 0; i < nnc_num_inputs; i++) {
        in[i] = malloc(nnc_inputs[i].nbytes);
        memset(in[i], 0x5a, nnc_inputs[i].nbytes);
        if (nnc_inputs[i].dtype == NNC_FLOAT32) {
            float *x = in[i];
            size_t n = nnc_inputs[i].nbytes / sizeof(float);
            for (size_t k = 0; k < n; k++)
                x[k] = k % 7 == 0 ? NAN : k % 7 == 1 ? INFINITY : k % 7 == 2 ? -INFINITY
                     : (float)((int)(k % 97) - 48) / 8.0f;
        }
    }
    for (int i = 0; i < nnc_num_outputs; i++) out[i] = malloc(nnc_outputs[i].nbytes);
    if (nnc_init() != 0 || nnc_run((const void *const *)in, out) != 0) return 3;
    unsigned sum = 0;
    for (int i = 0; i < nnc_num_outputs; i++) {
        for (uint64_t k = 0; k < nnc_outputs[i].nbytes; k++) sum += ((unsigned char *)out[i])[k];
        free(out[i]);
    }
    for (int i = 0; i < nnc_num_inputs; i++) free(in[i]);
    printf("ok %u\n", sum);
    return 0;
}
"""


@pytest.mark.filterwarnings("ignore:calibrating on RANDOM data")
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_host_model_is_clean_under_asan_and_ubsan(onnx_models, tmp_path, name, variant) -> None:
    out = _compile(onnx_models, tmp_path, name, variant, "host")
    (tmp_path / "main.c").write_text(SANITIZED_MAIN)
    srcs = [str(out / "model.c"), *map(str, out.glob("weights.c"))]
    if len(srcs) > 1:  # the folder keeps its weights in libmodel.so only: take them back out
        subprocess.run(["make", "weights.bin"], cwd=out, check=True, capture_output=True)
    exe = tmp_path / "sanitized"
    r = subprocess.run(["gcc", "-std=c99", "-fwrapv", "-O1", "-g", "-fno-omit-frame-pointer",
                        "-fsanitize=address,undefined,float-cast-overflow",
                        "-fno-sanitize-recover=all",
                        "-I", str(out), str(tmp_path / "main.c"), *srcs, "-lm", "-o", str(exe)],
                       capture_output=True, text=True, cwd=out)
    assert r.returncode == 0, r.stderr[-3000:]
    env = {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr[-3000:]
