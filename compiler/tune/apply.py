"""Applying a tuning cache in `nnc.compile(..., tuning_cache=...)`: zero measurements, only
look-ups. The `apply-tuning` pass goes in front of `default-schedule` and gives each kernel
whose workload key, target key and objective have an ok record the best schedule measured;
default-schedule leaves those kernels alone.

`tuning_cache`: None = the default cache (`$NNC_TUNING_CACHE`, else
`$XDG_CACHE_HOME/nnc/tuning.sqlite`) if that file exists, else none; False = none; a path =
that file, which must exist. `NNC_TUNING_CACHE=off` turns the default off. Where a workload
has no record for this exact target, a record of another target of the same ISA family
(`isa=dsp/32`: Cortex-M4 and M7) applies, with a warning on the `nnc.tune` logger and the
targets in nnc.json's `tuning.family_fallbacks`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnc import config
from nnc.compiler.tune.cache import (
    CacheError,
    CacheLookup,
    TuningCache,
    default_cache_path,
    target_cpu,
)
from nnc.passes.manager import PipelineStep

OBJECTIVES = {"cortex-m": "qemu-instructions"}
HOST_OBJECTIVE = "host-ns"
OFF = ("off", "0", "none", "no")


def objective_for(target: Any) -> str:
    return OBJECTIVES.get(getattr(target, "kind", ""), HOST_OBJECTIVE)


def open_tuning(tuning_cache: str | os.PathLike[str] | bool | None,
                target: Any) -> CacheLookup | None:
    """The look-up `apply-tuning` reads, or None when no cache applies."""
    from nnc.passes.lower_to_loops import target_key

    if tuning_cache is False:
        return None
    if tuning_cache is None or tuning_cache is True:
        env = config.tuning_cache()
        if env is not None and env.lower() in OFF:
            return None
        path = default_cache_path()
        if not path.exists():
            if tuning_cache is True:
                raise CacheError(f"tuning cache {path}: no such file (`nnc tune` writes one)")
            return None
    else:
        path = Path(tuning_cache)
    cache = TuningCache.open(path, create=False)
    return CacheLookup(cache, target_key(target), objective_for(target))


def with_apply_tuning(steps: Sequence[PipelineStep]) -> list[PipelineStep]:
    """`steps` with apply-tuning right before default-schedule (or schedule), once; a pipeline
    with neither has no schedules to set."""
    out = [s for s in steps if s.name != "apply-tuning"]
    at = next((i for i, s in enumerate(out) if s.name == "default-schedule"),
              next((i for i, s in enumerate(out) if s.name == "schedule"), None))
    if at is None:
        return out
    return [*out[:at], PipelineStep("apply-tuning", None), *out[at:]]


def tuning_info(lookup: CacheLookup, facts: dict[str, Any]) -> dict[str, Any]:
    """nnc.json's "tuning" entry."""
    return {"cache": str(lookup.cache.path), "target": lookup.target,
            "objective": lookup.objective, "tuned_kernels": int(facts.get("tuned_kernels", 0)),
            "tuned_workloads": len(set(lookup.hits)),
            "family_fallbacks": sorted({target_cpu(t) for _, t in lookup.fallbacks})}
