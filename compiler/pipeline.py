"""Each target's default pass pipeline, in one readable place."""

from __future__ import annotations

GRAPH_PASSES = (
    "fuse-qdq",  # an already-quantized model's QDQ / QLinear patterns → int8 ops
    "fold-constants",
    "eliminate-dead-code",
    "fold-batchnorm",
    "fold-constants",
    "layout-nhwc",  # int8 convs/pools channels-last; a no-op on float graphs
    "fuse-ops",
)

LOOP_PASSES = (
    "lower-to-loops",
    "default-schedule",
    "schedule",
    "plan-memory",
)

# stride-2 depthwise convs run on stride-1 rows (a step-2 slice after); depthwise convs with rows
# narrower than a vector run along their plane as one zero-padded row; other narrow ones get
# whole vector rows (explicit zero padding, a slice after), small dense convs explicit zero
# padding; narrow 1x1 convs run over their plane as one row; elementwise ops after those
# reshapes (a residual add) move before them, into the conv's epilogue
HOST_GRAPH_PASSES = GRAPH_PASSES[:-1] + ("depthwise-stride-rows", "flat-depthwise",
                                         "pad-depthwise-rows",
                                         "flatten-pointwise", "sink-reshapes") + GRAPH_PASSES[-1:]

PIPELINES: dict[str, tuple[str, ...]] = {
    # parallelize: checks parallel loops; with threads > 1 makes the outer legal loops parallel
    "host": HOST_GRAPH_PASSES + LOOP_PASSES + ("parallelize",),
    # RAM is the scarce resource: order the fused ops for the lowest peak of live activations
    # (after fuse-ops, so the ops are the kernels), and refuse a model that cannot fit.
    "cortex-m": GRAPH_PASSES + ("order-ops",) + LOOP_PASSES + ("check-fit",),
    # the host's passes; the outer independent loops become work items at emission
    # (backends/opencl/mapping.py)
    "opencl": GRAPH_PASSES + LOOP_PASSES,
    # the host's passes; backends/tvm renders the scheduled loop IR as TIR
    "tvm": GRAPH_PASSES + LOOP_PASSES,
}


def default_pipeline(target_kind: str) -> str:
    return ",".join(PIPELINES[target_kind])
