"""Each target's default pass pipeline, in one readable place."""

from __future__ import annotations

GRAPH_PASSES = (
    "fold-constants",
    "eliminate-dead-code",
    "fold-batchnorm",
    "fold-constants",
    "fuse-ops",
)

LOOP_PASSES = (
    "lower-to-loops",
    "default-schedule",
    "schedule",
    "plan-memory",
)

PIPELINES: dict[str, tuple[str, ...]] = {
    "host": GRAPH_PASSES + LOOP_PASSES,
}


def default_pipeline(target_kind: str) -> str:
    return ",".join(PIPELINES[target_kind])
