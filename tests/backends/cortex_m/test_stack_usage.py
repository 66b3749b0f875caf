"""Stack estimate from -fstack-usage files (no toolchain needed)."""

from __future__ import annotations

from pathlib import Path

from nnc.backends.cortex_m.build import call_graph, estimate_stack, stack_usage


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


def test_call_graph_follows_calls_into_the_library(tmp_path: Path) -> None:
    """-fcallgraph-info=su files: the deepest chain from Reset_Handler goes through nnc_run into
    the CMSIS-NN functions a kernel calls (static ones named file:function); functions without a
    frame (newlib) count 0, recursion once."""
    (tmp_path / "startup.ci").write_text(
        'graph: { title: "startup.c"\n'
        'node: { title: "Reset_Handler" label: "Reset_Handler\\nstartup.c:80:64\\n8 bytes '
        '(static)" }\n'
        'edge: { sourcename: "Reset_Handler" targetname: "main" label: "startup.c:93:5" }\n}\n')
    (tmp_path / "device_main.ci").write_text(
        'node: { title: "main" label: "main\\ndevice_main.c:153:5\\n144 bytes (dynamic)" }\n'
        'edge: { sourcename: "main" targetname: "printf" label: "x" }\n'
        'edge: { sourcename: "main" targetname: "nnc_run" label: "x" }\n')
    (tmp_path / "model.ci").write_text(
        'node: { title: "nnc_run" label: "nnc_run\\nmodel.c:55:5\\n16 bytes (static)" }\n'
        'edge: { sourcename: "nnc_run" targetname: "arm_convolve_wrapper_s8" label: "x" }\n'
        'edge: { sourcename: "nnc_run" targetname: "nnc_layer_begin" label: "x" }\n')
    (tmp_path / "arm_convolve_wrapper_s8.ci").write_text(
        'node: { title: "arm_convolve_wrapper_s8" label: "arm_convolve_wrapper_s8\\na.c:1:1\\n'
        '24 bytes (static)" }\n'
        'edge: { sourcename: "arm_convolve_wrapper_s8" targetname: "/cmsis/x.c:im2col" '
        'label: "x" }\n'
        'node: { title: "/cmsis/x.c:im2col" label: "im2col\\nx.c:1:1\\n120 bytes (static)" }\n'
        'edge: { sourcename: "/cmsis/x.c:im2col" targetname: "arm_convolve_wrapper_s8" '
        'label: "x" }\n')
    graph = call_graph(tmp_path)
    assert graph is not None
    assert graph.frames["/cmsis/x.c:im2col"] == 120 and "printf" not in graph.frames
    assert graph.deepest("Reset_Handler") == 8 + 144 + 16 + 24 + 120
    assert graph.deepest("nnc_layer_begin") == 0
    assert call_graph(tmp_path / "nothing") is None
