# ruff: noqa: E501  (the loop-IR texts keep their printed lines)
"""Work-item mapping (backends/opencl/mapping.py): which loops become work items, and that the
mapping is legal: the OpenCL run of a hand-written loop module equals the loop-IR interpreter's
run of it, element for element."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnc.backends.opencl.build import build
from nnc.backends.opencl.emit import emit_opencl
from nnc.backends.opencl.mapping import WorkMapping, device_mappings, map_work
from nnc.backends.opencl.run import OpenCLModel
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loop_parser import parse_module

# A conv-shaped kernel: the channel loop's body is init + a reduction with shifted (padded)
# pieces + an epilogue, all through one local tile, written out in row blocks of 4.
CONV_LIKE = """\
loop_module @m arena=0 {
  inputs %x "x"
  outputs %y "y"
  buffer %x: f32[3,8,6] input
  buffer %y: f32[5,8,6] output
kernel @k0_conv(%x, %y) {
  local %tile0: f32[4,6] local
  for %i1 in 0..5 serial {
    for %i2 in 0..2 serial {
      for %j0 in 0..4 serial {
        for %j1 in 0..6 vectorized {
          %tile0[%j0, %j1] = 0.5:f32
        }
      }
      for %c0 in 0..3 serial {
        for %r0 in 0..4 serial {
          for %j2 in 0..5 vectorized {
            %tile0[%r0, (%j2 + 1:i64)] = (%tile0[%r0, (%j2 + 1:i64)] + %x[%c0, ((%i2 * 4:i64) + %r0), %j2])
          }
        }
        for %r1 in 0..3 serial {
          for %j3 in 0..6 vectorized {
            %tile0[(%r1 + 1:i64), %j3] = (%tile0[(%r1 + 1:i64), %j3] * %x[%c0, ((%i2 * 4:i64) + %r1), %j3])
          }
        }
      }
      for %j4 in 0..4 serial {
        for %j5 in 0..6 vectorized {
          %y[%i1, ((%i2 * 4:i64) + %j4), %j5] = max(%tile0[%j4, %j5], 0.0:f32)
        }
      }
    }
  }
}
}
"""

# Each row of the tile reads the row above it (a running sum down the rows): rows must not be
# spread; the channel loop still is.
ROW_SCAN = """\
loop_module @m arena=0 {
  inputs %x "x"
  outputs %y "y"
  buffer %x: f32[4,6] input
  buffer %y: f32[3,4,6] output
kernel @k0_scan(%x, %y) {
  local %tile0: f32[4,6] local
  for %i1 in 0..3 serial {
    for %j0 in 0..6 serial {
      %tile0[0:i64, %j0] = %x[0:i64, %j0]
    }
    for %r0 in 0..3 serial {
      for %j1 in 0..6 serial {
        %tile0[(%r0 + 1:i64), %j1] = (%tile0[%r0, %j1] + %x[(%r0 + 1:i64), %j1])
      }
    }
    for %r1 in 0..4 serial {
      for %j2 in 0..6 serial {
        %y[%i1, %r1, %j2] = %tile0[%r1, %j2]
      }
    }
  }
}
}
"""

# A reduction into one output element per channel through a scalar accumulator: nothing but the
# channel loop is independent.
SCALAR_ACC = """\
loop_module @m arena=0 {
  inputs %x "x"
  outputs %y "y"
  buffer %x: f32[4,6] input
  buffer %y: f32[4] output
kernel @k0_sum(%x, %y) {
  local %acc0: f32[] local
  for %i0 in 0..4 serial {
    %acc0[] = 0.0:f32
    for %r0 in 0..6 serial {
      %acc0[] = (%acc0[] + %x[%i0, %r0])
    }
    %y[%i0] = %acc0[]
  }
}
}
"""


def _mapping(text: str) -> WorkMapping:
    (k,) = parse_module(text).kernels
    return map_work(k)


def test_conv_like_body_spreads_rows_and_columns_too() -> None:
    m = _mapping(CONV_LIKE)
    # channels (i1) and row blocks (i2) from the outer nest, and the tile's rows through the body
    assert m.loops == ("tile0[0]", "i2", "i1") and m.global_size == (4, 2, 5)
    by_loop = {s.loop: (s.dim, s.shift) for s in m.spread}
    assert by_loop == {"j0": (0, 0), "r0": (0, 0), "r1": (0, 1), "j4": (0, 0)}
    assert m.private == (("tile0", 0),)  # each item keeps one row of the tile
    assert m.local_size("cpu") is None and m.local_size("gpu") == (4, 1, 1)
    assert m.launch("gpu") == ((4, 2, 5), (4, 1, 1))


def test_spread_fills_the_dimensions_the_outer_nest_leaves() -> None:
    m = map_work(parse_module(CONV_LIKE).kernels[0], max_dims=3)
    assert len(m.loops) == 3
    two = map_work(parse_module(CONV_LIKE).kernels[0], max_dims=2)
    assert two.loops == ("i2", "i1") and not two.spread


def test_row_dependence_is_not_spread() -> None:
    m = _mapping(ROW_SCAN)
    assert m.loops[-1] == "i1"
    assert all(s.loop not in ("r0", "r1") for s in m.spread)  # only the columns may spread


def test_scalar_accumulator_keeps_the_reduction_serial() -> None:
    m = _mapping(SCALAR_ACC)
    assert m.loops == ("i0",) and not m.spread


def test_gpu_launch_rounds_the_global_size_up() -> None:
    m = _mapping(SCALAR_ACC)
    assert m.launch("gpu") == ((4,), (4,))
    wide = WorkMapping(("i",), (100,), (), (("gpu", (64,)),))
    assert wide.launch("gpu") == ((128,), (64,)) and wide.launch("cpu") == ((100,), None)


def test_cpu_devices_keep_the_outer_nest_gpus_spread() -> None:
    (k,) = parse_module(CONV_LIKE).kernels
    maps = device_mappings(k)
    assert maps["cpu"].loops == ("i2", "i1") and not maps["cpu"].spread
    assert maps["gpu"] == maps["accelerator"] == map_work(k)
    cl = str(emit_opencl(parse_module(CONV_LIKE))["model.cl"])
    assert "#if NNC_CL_SPREAD" in cl and "#else /* CPU: i2, i1 */" in cl
    assert cl.count("__kernel void k0_k0_conv(") == 2
    assert "float tile0[6]" in cl and "float tile0[24]" in cl  # one row per item when spread


@pytest.mark.needs_opencl
@pytest.mark.parametrize("mapping", [None, "gpu"])
@pytest.mark.parametrize("name", ["conv_like", "row_scan", "scalar_acc"])
def test_mapped_kernel_equals_the_interpreter(name: str, mapping: str | None,
                                              tmp_path: Path) -> None:
    """Both mappings, on this device (PoCL's CPU device runs the GPU one when asked to)."""
    text = {"conv_like": CONV_LIKE, "row_scan": ROW_SCAN, "scalar_acc": SCALAR_ACC}[name]
    module = parse_module(text)
    x = module.buffer_map()["x"]
    feeds = {"x": np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)}
    want = run_loop_module(module, feeds)["y"]
    build(module, tmp_path, mapping=mapping)
    got = OpenCLModel(tmp_path).run(feeds)["y"]
    np.testing.assert_array_equal(got, want)


REVERSE = """\
loop_module @m arena=0 {
  inputs %x "x"
  outputs %y "y"
  buffer %x: f32[4] input
  buffer %y: f32[4] output
kernel @k0_rev(%x, %y) {
  for %i0 in 0..4 KIND {
    %y[(3:i64 - %i0)] = %x[%i0]
  }
}
}
"""


def test_loops_marked_parallel_are_taken_as_independent() -> None:
    """A reversed store is beyond the analysis (a negative stride); the schedule's promise is
    enough."""
    assert _mapping(REVERSE.replace("KIND", "serial")).loops == ()
    assert _mapping(REVERSE.replace("KIND", "parallel")).loops == ("i0",)


# A split loop with its remainder below it (a register tile's `oc_o` and the peeled last
# columns): the pieces write disjoint columns, so each tile and each remainder column is an item.
SPLIT_TAIL = """\
loop_module @m arena=0 {
  inputs %x "x"
  outputs %y "y"
  buffer %x: f32[10] input
  buffer %y: f32[10] output
kernel @k0_tail(%x, %y) {
  local %acc0: f32[4] local
  for %o in 0..2 serial {
    for %j0 in 0..4 serial {
      %acc0[%j0] = (%x[((%o * 4:i64) + %j0)] * 2.0:f32)
    }
    for %j1 in 0..4 serial {
      %y[((%o * 4:i64) + %j1)] = (%acc0[%j1] + 1.0:f32)
    }
  }
  for %j2 in 0..2 serial {
    %acc0[%j2] = %x[(8:i64 + %j2)]
  }
  for %j3 in 0..2 serial {
    %y[(8:i64 + %j3)] = (%acc0[%j3] - 1.0:f32)
  }
}
}
"""

# Two passes over the same elements: the second reads what the first wrote, so the pieces
# overlap and must not run as separate items (a spread that keeps each element's two passes in
# one item is legal: GPUs get it).
TWO_PASSES = """\
loop_module @m arena=0 {
  inputs %x "x"
  outputs %y "y"
  buffer %x: f32[4] input
  buffer %y: f32[4] output
kernel @k0_two(%x, %y) {
  for %i0 in 0..4 serial {
    %y[%i0] = %x[%i0]
  }
  for %i1 in 0..4 serial {
    %y[%i1] = (%y[%i1] * 2.0:f32)
  }
}
}
"""


def test_split_loop_and_remainder_become_items() -> None:
    m = _mapping(SPLIT_TAIL)
    assert m.loops == ("unit",) and m.global_size == (3,)
    assert m.units == ((0, 1, True), (1, 2, False))  # the tiles, then the remainder's 2 stmts


def test_overlapping_pieces_are_not_units() -> None:
    m = _mapping(TWO_PASSES)
    assert not m.units and "unit" not in m.loops
    assert m.loops == ("y[0]",) and {s.loop for s in m.spread} == {"i0", "i1"}
    assert device_mappings(parse_module(TWO_PASSES).kernels[0])["cpu"] == WorkMapping()


def opencl_modules(models: dict[str, object], bits: int = 128) -> dict[str, object]:
    """The OpenCL pipeline's loop modules of `models`, the register tiles `bits` wide (OpenCL's
    are the compiling CPU's width: pinned here, so the tiles are known)."""
    from dataclasses import replace

    from nnc.compiler.api import _target
    from nnc.compiler.onnx.importer import import_model
    from nnc.compiler.pipeline import default_pipeline
    from nnc.passes.manager import PassManager, parse_pipeline

    target = replace(_target("opencl"), vector_bits=bits,
                     vector_isa="avx512f" if bits == 512 else "sse2")
    return {n: PassManager(parse_pipeline(default_pipeline("opencl")),
                           target=target).run(import_model(m))  # type: ignore[arg-type]
            for n, m in models.items()}


def _tiled_modules(bits: int = 128) -> dict[str, object]:
    """The OpenCL pipeline's register-tiled conv (a partitioned row: peeled columns and the
    tile) and one-row gemm (the split `oc_o` loop and its remainder)."""
    from tests.backends.opencl.test_opencl import small_models

    models = small_models()
    return opencl_modules({n: models[n] for n in ("conv", "gemm")}, bits)


def _wide_models() -> dict[str, object]:
    """Models whose 512-bit tiles have 16-lane loops: a conv with lanes along 32 output
    channels, a depthwise conv with lanes along a 32-column row, a one-row gemm of 3 vectors."""
    from onnx import helper

    from tests.backends.opencl.test_opencl import _model, _vi, _w

    return {
        "conv32": _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                          helper.make_node("Relu", ["c"], ["y"])],
                         [_vi("x", [1, 5, 7, 9])], [_vi("y", [1, 32, 7, 9])],
                         [_w("w", [32, 5, 3, 3], 1), _w("b", [32], 2)]),
        "depthwise": _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=4,
                                              pads=[1, 1, 1, 1])],
                            [_vi("x", [1, 4, 5, 32])], [_vi("y", [1, 4, 5, 32])],
                            [_w("w", [4, 1, 3, 3], 3), _w("b", [4], 4)]),
        "gemm48": _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
                         [_vi("x", [1, 64])], [_vi("y", [1, 48])],
                         [_w("w", [48, 64], 5), _w("b", [48], 6)]),
    }


@pytest.mark.needs_opencl
@pytest.mark.parametrize("mapping", [None, "gpu"])
@pytest.mark.parametrize("name", ["conv32", "depthwise", "gemm48"])
def test_vector_code_equals_the_interpreter(name: str, mapping: str | None,
                                            tmp_path: Path) -> None:
    """16-lane tile loops as OpenCL vector code (float16 lanes, vload16/vstore16 on globals,
    the private tiles as aligned float16) compute what the loop interpreter does, bit for bit,
    on both mappings."""
    module = opencl_modules({name: _wide_models()[name]}, 512)[name]
    cl = str(emit_opencl(module)["model.cl"])  # type: ignore[arg-type]
    assert "16 lanes */" in cl and "vload16(0, " in cl
    if name != "depthwise":  # its lanes are a row: the private tile is spread on GPUs
        assert "*(float16 *)(acc" in cl
    x = module.buffer_map()["x"]  # type: ignore[attr-defined]
    feeds = {"x": np.random.default_rng(7).standard_normal(x.shape).astype(np.float32)}
    want = run_loop_module(module, feeds)  # type: ignore[arg-type]
    build(module, tmp_path, mapping=mapping)  # type: ignore[arg-type]
    got = OpenCLModel(tmp_path).run(feeds)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v)


def test_register_tiles_keep_their_pieces_as_items() -> None:
    mods = _tiled_modules()
    (conv,) = mods["conv"].kernels  # type: ignore[attr-defined]
    (gemm,) = mods["gemm"].kernels  # type: ignore[attr-defined]
    assert "Unroll(loop='ow_i')" in str(conv.schedule)  # the host's register tile
    maps = device_mappings(conv)
    assert maps["cpu"].loops == ("unit", "oh") and maps["cpu"].global_size == (3, 8)
    assert maps["gpu"].loops == ("acc0[0]", "unit", "oh")  # the tile's lanes spread on GPUs
    assert map_work(gemm).loops == ("unit",) and map_work(gemm).global_size == (3,)


@pytest.mark.needs_opencl
@pytest.mark.parametrize("mapping", [None, "gpu"])
@pytest.mark.parametrize("name", ["split_tail", "two_passes", "conv", "gemm", "conv@512",
                                  "gemm@512"])
def test_unit_mapping_equals_the_interpreter(name: str, mapping: str | None,
                                             tmp_path: Path) -> None:
    """Both mappings of the tiled kernels as the loop interpreter runs them, bit for bit; at
    512 bits the tiles' 16-lane loops are OpenCL vector code (float16, vload16)."""
    if name.startswith(("conv", "gemm")):
        kind, _, bits = name.partition("@")
        module = _tiled_modules(int(bits or 128))[kind]
    else:
        module = parse_module({"split_tail": SPLIT_TAIL, "two_passes": TWO_PASSES}[name])
    x = module.buffer_map()["x"]  # type: ignore[attr-defined]
    feeds = {"x": np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)}
    want = run_loop_module(module, feeds)  # type: ignore[arg-type]
    build(module, tmp_path, mapping=mapping)  # type: ignore[arg-type]
    got = OpenCLModel(tmp_path).run(feeds)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v)
