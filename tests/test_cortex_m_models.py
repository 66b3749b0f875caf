"""Whole models on the emulated Cortex-M boards, through the public API.

The four MLPerf Tiny models (fp32) compile for cortex-m7, cortex-m4 and cortex-m55, run under QEMU
and match the host target (rtol 1e-4); the nine light models either compile for cortex-m7 or fail
with the clear "does not fit" error at the emulated board's default sizes.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import nnc
from benchmarks.models import LIGHT_MODELS, MODELS, load_light, sample_input
from nnc.compiler.errors import NncError

needs_tools = pytest.mark.skipif(
    not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
    reason="needs gcc-arm-none-eabi and qemu-system-arm (make install)")
BENCH_KEYS = {"target", "instructions", "instructions_per_mac", "macs", "ram_bytes",
              "flash_bytes", "layers"}


@pytest.fixture(scope="module")
def host_results():
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            model = MODELS[name]()
            feeds = sample_input(model)
            cache[name] = (model, feeds, nnc.compile(model, target="host").run(feeds))
        return cache[name]

    return get


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m4", "cortex-m55"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_tiny_on_board_matches_host(name, target, host_results):
    model, feeds, expected = host_results(name)
    compiled = nnc.compile(model, target=target)
    assert compiled.info["firmware"]["flash_bytes"] > compiled.info["weight_bytes"]
    got = compiled.run(feeds)
    for key, want in expected.items():
        # fp32: the host's clang contracts a*b+c into one FMA (-ffp-contract=on), the board's
        # gcc does not: AD's outputs (|y| ~ 1) differ by up to ~1e-6 (int8 is bit-identical:
        # tests/test_int8_differential.py)
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")
    bench = compiled.benchmark(inputs=feeds)
    assert BENCH_KEYS <= set(bench)
    assert bench["target"] == target and bench["macs"] == compiled.info["macs"]
    assert bench["instructions"] >= sum(layer["instructions"] for layer in bench["layers"]) > 0
    assert {"name", "op", "instructions", "macs"} <= set(bench["layers"][0])
    assert bench["flash_bytes"] == compiled.info["firmware"]["flash_bytes"]
    assert 1 < bench["instructions_per_mac"] < 50
    # icount makes the counts exact: a second run gives the same figures, layer by layer
    again = compiled.benchmark(inputs=feeds)
    assert again["instructions"] == bench["instructions"]
    assert [la["instructions"] for la in again["layers"]] == \
        [la["instructions"] for la in bench["layers"]]
    # planner bar (issue 3): the arena stays within 5% of the liveness floor
    assert compiled.info["arena_bytes"] <= 1.05 * compiled.info["arena_floor_bytes"]


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_fit_or_fail_clearly_on_cortex_m7(name, tmp_path):
    model, _, _ = load_light(name)
    out = tmp_path / "out"
    try:
        compiled = nnc.compile(model, target="cortex-m7", output_dir=out)
    except NncError as e:
        assert "does not fit cortex-m7" in str(e), str(e)
        assert "--ram" in str(e) or "--flash" in str(e)
        assert not out.exists()
    else:
        assert compiled.info["firmware"]["flash_bytes"] <= compiled.info["flash_bytes_limit"]


@needs_tools
@pytest.mark.needs_arm
@pytest.mark.slow
def test_bigger_part_given_with_ram_and_flash_builds(tmp_path):
    model, _, _ = load_light("squeezenet")
    with pytest.raises(NncError, match="does not fit cortex-m7"):
        nnc.compile(model, target="cortex-m7", output_dir=tmp_path / "small")
    compiled = nnc.compile(model, target="cortex-m7", output_dir=tmp_path / "big",
                           ram="16M", flash="16M")
    assert compiled.info["flash_bytes_limit"] == 16 << 20
    assert compiled.info["firmware"]["flash_bytes"] > compiled.info["weight_bytes"]
