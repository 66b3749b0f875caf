"""Stack estimate from -fstack-usage files (no toolchain needed)."""

from __future__ import annotations

from pathlib import Path

from nnc.backends.cortex_m.build import estimate_stack, stack_usage


def test_stack_estimate_from_su_files(tmp_path: Path) -> None:
    (tmp_path / "model.su").write_text(
        "model.c:10:13:k0_conv.constprop.0\t536\tstatic\n"
        "model.c:20:13:k1_gemm\t48\tstatic\n"
        "model.c:30:5:nnc_run\t80\tstatic\n")
    (tmp_path / "device_main.su").write_text(
        "device_main.c:153:5:main\t144\tdynamic\n"
        "device_main.c:50:6:nnc_layer_begin\t8\tstatic\n")
    (tmp_path / "startup.su").write_text("startup.c:98:6:Reset_Handler\t8\tstatic\n")
    frames = stack_usage(tmp_path, "nnc")
    assert frames["k0_conv"] == 536 and frames["main"] == 144
    assert estimate_stack(frames, ["k0_conv", "k1_gemm"], "nnc") == 8 + 144 + 80 + 536
