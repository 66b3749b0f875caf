"""The pass manager: registered passes, pipeline strings, verification, timing and IR dumps.

A pass is a plain function `fn(ir, ctx) -> ir` registered under a kebab-case name. Graph passes take
and return a `Graph`; `lower-to-loops` turns a `Graph` into a `LoopModule`; loop passes take and
return a `LoopModule`. Options are a frozen dataclass given in the pipeline string:

    fold-constants,fuse-ops,lower-to-loops,schedule{vector_width=8},plan-memory

Custom passes use the same API as ours:

    from nnc.passes.manager import register_pass

    @register_pass("count-ops")
    def count_ops(graph, ctx):
        print(len(graph.ops))
        return graph
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnc.ir.graph import Graph
from nnc.ir.loops import LoopModule

IR = Graph | LoopModule
PassFn = Callable[[Any, "PassContext"], Any]


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: PassFn
    options: type | None  # a frozen dataclass type, or None
    doc: str


_PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, options: type | None = None) -> Callable[[PassFn], PassFn]:
    """Register `fn(ir, ctx) -> ir` as pass `name`; `options` is a frozen dataclass of options."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise ValueError(f"pass names are kebab-case, got {name!r}")

    def wrap(fn: PassFn) -> PassFn:
        _PASSES[name] = PassInfo(name, fn, options, (fn.__doc__ or "").strip())
        return fn

    return wrap


def registered_passes() -> dict[str, PassInfo]:
    _load_builtin()
    return dict(_PASSES)


_BUILTIN = (
    "fold_constants", "eliminate_dead_code", "fold_batchnorm", "quantize", "layout_nhwc",
    "fuse_qdq", "fuse_ops", "flat_depthwise", "pad_depthwise_rows", "flatten_pointwise",
    "depthwise_stride_rows", "sink_reshapes",
    "order_ops",
    "lower_to_loops", "apply_tuning", "default_schedule", "schedule", "plan_memory",
    "parallelize", "check_fit",
)


def _load_builtin() -> None:
    import importlib

    for mod in _BUILTIN:
        importlib.import_module(f"nnc.passes.{mod}")


@dataclass
class PassContext:
    """What a pass sees besides the IR: its options, the target, and a scratch dict of facts
    passes leave for later ones (e.g. the memory plan's statistics)."""

    options: Any = None
    target: Any = None
    facts: dict[str, Any] = field(default_factory=dict)


class PassError(Exception):
    """A pass failed or left invalid IR; the message names the pass."""


@dataclass(frozen=True)
class PipelineStep:
    name: str
    options: Any


def _parse_value(text: str) -> Any:
    text = text.strip()
    if "," in text:
        return tuple(_parse_value(t) for t in text.split(","))
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d*\.\d*(e-?\d+)?", text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def parse_pipeline(text: str) -> list[PipelineStep]:
    """Parse `a,b{k=v; k2=1,2},c` into steps with their options objects."""
    _load_builtin()
    steps = []
    for m in re.finditer(r"\s*([a-z][a-z0-9-]*)\s*(\{[^}]*\})?\s*(,|$)", text):
        name, opts = m.group(1), m.group(2)
        if name not in _PASSES:
            raise PassError(f"unknown pass {name!r}; known: {', '.join(sorted(_PASSES))}")
        info = _PASSES[name]
        kwargs: dict[str, Any] = {}
        if opts:
            for item in filter(None, (s.strip() for s in opts[1:-1].split(";"))):
                key, _, val = item.partition("=")
                kwargs[key.strip()] = _parse_value(val)
        if kwargs and info.options is None:
            raise PassError(f"pass {name!r} takes no options")
        try:
            options = info.options(**kwargs) if info.options is not None else None
        except TypeError as e:
            raise PassError(f"bad options for pass {name!r}: {e}") from None
        steps.append(PipelineStep(name, options))
    return steps


def format_step(step: PipelineStep) -> str:
    if step.options is None or not dataclasses.fields(step.options):
        return step.name
    items = []
    for f in dataclasses.fields(step.options):
        v = getattr(step.options, f.name)
        items.append(f"{f.name}={','.join(map(str, v)) if isinstance(v, tuple) else v}")
    return f"{step.name}{{{'; '.join(items)}}}"


def verify_ir(ir: IR) -> None:
    if isinstance(ir, Graph):
        from nnc.ir.verify import verify_graph

        verify_graph(ir)
    elif isinstance(ir, LoopModule):
        from nnc.ir.loop_verify import verify_loop_module

        verify_loop_module(ir)


def print_ir(ir: IR) -> str:
    if isinstance(ir, Graph):
        from nnc.ir.printer import print_graph

        return print_graph(ir, elide_constants=True)
    from nnc.ir.loop_printer import format_module

    return format_module(ir)


class PassManager:
    """Runs a pipeline; verifies after each pass (unless NNC_VERIFY=0), records per-pass time, and
    writes the IR after each pass to `dump_dir` (or $NNC_DUMP_IR) as NN-pass-name.txt."""

    def __init__(
        self,
        pipeline: str | Sequence[PipelineStep],
        target: Any = None,
        verify: bool | None = None,
        dump_dir: str | Path | None = None,
    ) -> None:
        from nnc import config

        self.steps = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
        self.target = target
        self.verify = config.verify() if verify is None else verify
        dump = dump_dir if dump_dir is not None else config.dump_ir_dir()
        self.dump_dir = Path(dump) if dump else None
        self.timings: list[tuple[str, float]] = []
        self.facts: dict[str, Any] = {}

    def run(self, ir: IR) -> IR:
        _load_builtin()  # steps made in another process (unpickled) name passes not yet loaded
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            (self.dump_dir / "00-input.txt").write_text(print_ir(ir))
        for n, step in enumerate(self.steps, 1):
            info = _PASSES[step.name]
            ctx = PassContext(step.options, self.target, self.facts)
            t0 = time.perf_counter()
            try:
                ir = info.fn(ir, ctx)
            except PassError:
                raise
            except Exception as e:
                # user-visible errors raised inside passes (e.g. model too big) pass through
                if getattr(e, "user_error", False):
                    raise
                raise PassError(f"pass {step.name!r} failed: {type(e).__name__}: {e}") from e
            self.timings.append((step.name, time.perf_counter() - t0))
            if ir is None:
                raise PassError(f"pass {step.name!r} returned None instead of the IR")
            if self.verify:
                try:
                    verify_ir(ir)
                except Exception as e:
                    raise PassError(f"IR invalid after pass {step.name!r}: {e}") from e
            if self.dump_dir is not None:
                (self.dump_dir / f"{n:02d}-{step.name}.txt").write_text(print_ir(ir))
        return ir

    def pipeline_text(self) -> str:
        return ",".join(format_step(s) for s in self.steps)
