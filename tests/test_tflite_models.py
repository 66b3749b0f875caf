"""TFLite int8 models converted to ONNX by tf2onnx, compiled by nnc, against TFLite's outputs.

The fixtures (`tests/fixtures/tflite/`: .tflite, tf2onnx's .onnx, 48 int8 inputs and TFLite's
outputs on them; built by `make_tflite.py` there, which needs TensorFlow, not `make test`) are a
small CNN (conv, depthwise, pooling, FC, softmax), a DS-CNN KWS and an MLPerf-Tiny-AD-shaped
autoencoder (FC only). The reference is TensorFlow's TFLite interpreter with its reference
kernels (`tflite_ref`: TFLite Micro's arithmetic, which CMSIS-NN is bit-exact with). With
int8_rounding="tflite" nnc must give the same output codes (bar: 99.9% identical, all within
1 LSB; measured: all identical); with "onnx" it rounds once, as onnxruntime, and drifts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import nnc
from benchmarks.tflite_agreement import (
    MODELS,
    agreement,
    build_outputs,
    interp_outputs,
    load_fixture,
)
from nnc.compiler.errors import NncError

needs_board = pytest.mark.skipif(
    not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make install)")

BAR_EXACT_PCT = 99.9


def _meets_bar(r: dict) -> None:
    assert r["exact_pct"] >= BAR_EXACT_PCT and r["max_lsb"] <= 1, r


@pytest.mark.parametrize("name", MODELS)
def test_tflite_rounding_gives_tflites_codes(name: str) -> None:
    fx = load_fixture(name)
    assert len(fx.inputs) >= 40
    r = agreement(interp_outputs(fx, "tflite"), fx.outputs["tflite_ref"])
    _meets_bar(r)
    assert r["exact_pct"] == 100.0, r  # what the README states


@pytest.mark.parametrize("name", MODELS)
def test_onnx_rounding_drifts_from_tflite(name: str) -> None:
    """One rounding instead of TFLite's two: 1 LSB here and there, compounding over layers."""
    fx = load_fixture(name)
    r = agreement(interp_outputs(fx, "onnx"), fx.outputs["tflite_ref"])
    assert r["exact_pct"] < 95 and r["within_1_lsb_pct"] >= 95, r


@pytest.mark.parametrize("name", MODELS)
def test_host_build_gives_tflites_codes(name: str) -> None:
    fx = load_fixture(name)
    got, info = build_outputs(fx, "host", "tflite")
    assert info["int8_rounding"] == "tflite"
    _meets_bar(agreement(got, fx.outputs["tflite_ref"]))


@pytest.mark.parametrize("rounding", ["tflite", "onnx"])
@pytest.mark.parametrize("name", ["cnn", "kws"])
def test_generated_and_cmsis_nn_kernels_compute_the_interpreters_codes(
        name: str, rounding: str) -> None:
    """The rounding lives in the multiplier / shift constants: the graph interpreter, the
    generated kernels and the CMSIS-NN calls (which always round TFLite's way) agree bit for
    bit in both modes."""
    fx = load_fixture(name)
    want = interp_outputs(fx, rounding, 16)
    for variant in ("host", "host/cmsis-nn"):
        got, info = build_outputs(fx, variant, rounding, 16)
        assert info["int8_rounding"] == rounding
        assert (info["library_calls"] > 0) == (variant == "host/cmsis-nn")
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=f"{name} {variant} {rounding}")


@pytest.mark.parametrize("target", [
    "host",
    pytest.param("cortex-m7", marks=[pytest.mark.needs_arm, pytest.mark.skipif(
        not shutil.which("arm-none-eabi-gcc"), reason="needs gcc-arm-none-eabi")]),
])
def test_ad_shaped_model_is_int8_fully_connected_layers_only(target: str) -> None:
    """tf2onnx writes AD's dense layers (unknown batch) as DQ → MatMul → Add(DQ(bias int32))
    [→ Relu] → Q: each becomes one fully_connected_s8, the weights int8 in flash, no float; on
    Cortex-M each one an arm_fully_connected_s8 call."""
    fx = load_fixture("ad")
    compiled = nnc.compile(fx.onnx_path, target=target, input_shapes=fx.input_shapes,
                           bench=False, kernels="cmsis-nn" if target != "host" else None)
    info = compiled.info
    assert [lay["op"] for lay in info["layers"]] == ["fully_connected_s8"] * 10
    assert info["library_calls"] == (10 if target != "host" else 0)
    # the constants are the int8 weights plus int32 bias, multiplier and shift: nothing float
    dims = [160, 32, 32, 32, 32, 8, 32, 32, 32, 32, 160]
    int8_weights = sum(a * b for a, b in zip(dims, dims[1:], strict=False))
    assert info["weight_bytes"] == int8_weights + 4 * sum(dims[1:]) + 10 * 2 * 4
    model_c = compiled.source_dir / ("model.c" if target == "host" else "model/model.c")
    assert "float" not in model_c.read_text()


@needs_board
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.parametrize("kernels", [None, "cmsis-nn"])
def test_cortex_m7_rounds_the_tflite_way_by_default_and_matches_tflite(kernels) -> None:
    """The CNN on the emulated Cortex-M7, nnc's generated kernels (the default) and CMSIS-NN
    calls, the default rounding: TFLite's."""
    fx = load_fixture("cnn")
    compiled = nnc.compile(fx.onnx_path, target="cortex-m7", input_shapes=fx.input_shapes,
                           kernels=kernels)
    info = compiled.info
    assert info["int8_rounding"] == "tflite"
    assert (info.get("library_calls", 0) >= 6) if kernels else not info.get("library_calls")
    runs = [compiled.run(feed) for feed in fx.feeds()]
    got = [np.stack([r[n] for r in runs]) for n in fx.output_names]
    r = agreement(got, fx.outputs["tflite_ref"])
    _meets_bar(r)
    assert r["exact_pct"] == 100.0, r


def test_host_defaults_to_tflite_rounding_like_the_boards() -> None:
    """One default everywhere: a host build of a pre-quantized model gives the boards' bits."""
    fx = load_fixture("ad")
    compiled = nnc.compile(fx.onnx_path, target="host", input_shapes=fx.input_shapes,
                           bench=False)
    assert compiled.info["int8_rounding"] == "tflite"


def test_bad_rounding_is_a_clear_error() -> None:
    fx = load_fixture("ad")
    with pytest.raises(NncError, match=r"int8_rounding='nearest' is not supported; choose one "
                                       r"of \['tflite', 'onnx'\]"):
        nnc.compile(fx.onnx_path, input_shapes=fx.input_shapes, int8_rounding="nearest")
    with pytest.raises(NncError, match="quantize='int8' always rounds the TFLite way"):
        nnc.compile(fx.onnx_path, input_shapes=fx.input_shapes, quantize="int8",
                    calibration="random", int8_rounding="onnx")


def test_cli_int8_rounding_flag(tmp_path) -> None:
    fx = load_fixture("ad")
    (name, shape), = fx.input_shapes.items()
    spec = f"{name}={'x'.join(map(str, shape))}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nnc.compiler.cli", "compile",
                               str(fx.onnx_path), "--input-shape", spec, *args],
                              capture_output=True, text=True)

    r = cli("--int8-rounding", "tflite", "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "int8 rounding: tflite" in r.stdout
    assert json.loads((tmp_path / "out" / "nnc.json").read_text())["int8_rounding"] == "tflite"
    r = cli("--int8-rounding", "nearest", "-o", str(tmp_path / "bad"))
    assert r.returncode == 2 and "invalid choice: 'nearest'" in r.stderr
