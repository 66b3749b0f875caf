"""Registry of ONNX → graph-IR converters.

A converter is a function `(ctx: ConvertContext) -> list[str]` registered for an ONNX op type and
the first opset it handles; it returns the graph-IR value names of the node's outputs, in order
(returning an existing name, e.g. `[ctx.input(0)]` for Identity, makes the output an alias).
Converters emit graph-IR ops through `ctx.emit`, which infers output types with the op's type rule
(and folds the op to a constant when all its inputs are small constants).

    @converter("Relu")
    def relu(ctx):
        return ctx.emit("relu", [ctx.input(0)], outputs=ctx.node.output)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nnc.ir.types import TensorType

if TYPE_CHECKING:
    from nnc.compiler.onnx.importer import GraphBuilder

ConverterFn = Callable[["ConvertContext"], Sequence[str]]

# op_type -> list of (since_opset, fn), sorted by since
_CONVERTERS: dict[str, list[tuple[int, ConverterFn]]] = {}


def converter(op_type: str, since: int = 1) -> Callable[[ConverterFn], ConverterFn]:
    def wrap(fn: ConverterFn) -> ConverterFn:
        _CONVERTERS.setdefault(op_type, []).append((since, fn))
        _CONVERTERS[op_type].sort(key=lambda p: p[0])
        return fn

    return wrap


def find_converter(op_type: str, opset: int) -> ConverterFn | None:
    _load_all()
    best = None
    for since, fn in _CONVERTERS.get(op_type, []):
        if since <= opset:
            best = fn
    return best


def supported_op_types() -> set[str]:
    _load_all()
    return set(_CONVERTERS)


_LOADED = False


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from nnc.compiler.onnx import (  # noqa: F401
            control,
            elementwise,
            nn,
            quant,
            recurrent,
            reduce,
            shape,
        )


class ConversionError(Exception):
    """A node cannot be converted (bad attributes, unsupported mode, non-constant input...)."""


@dataclass
class ConvertContext:
    node: onnx.NodeProto
    opset: int
    builder: GraphBuilder
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.attrs = {a.name: helper.get_attribute_value(a) for a in self.node.attribute}
        for k, v in list(self.attrs.items()):
            if isinstance(v, bytes):
                self.attrs[k] = v.decode()
            elif isinstance(v, onnx.TensorProto):
                self.attrs[k] = numpy_helper.to_array(v)
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                self.attrs[k] = [s.decode() for s in v]

    # --- inputs
    @property
    def num_inputs(self) -> int:
        """Number of inputs, not counting trailing absent ("") ones."""
        names = list(self.node.input)
        while names and not names[-1]:
            names.pop()
        return len(names)

    def input(self, i: int) -> str:
        """Graph-IR name of input i ("" if absent)."""
        if i >= len(self.node.input) or not self.node.input[i]:
            return ""
        return self.builder.resolve(self.node.input[i])

    def has_input(self, i: int) -> bool:
        return bool(self.input(i))

    def type(self, i: int) -> TensorType | None:
        name = self.input(i)
        return self.builder.types[name] if name else None

    def value_type(self, name: str) -> TensorType:
        return self.builder.types[name]

    def const(self, i: int) -> np.ndarray | None:
        """The compile-time value of input i if it is a constant, else None (absent → None)."""
        name = self.input(i)
        return self.builder.constants.get(name) if name else None

    def require_const(self, i: int, what: str) -> np.ndarray:
        v = self.const(i)
        if v is None:
            raise ConversionError(
                f"input {i} ({what}) must be a compile-time constant; "
                f"nnc supports static shapes only{self.bind_hint(i)}"
            )
        return v

    def bind_hint(self, i: int) -> str:
        """'; fix it with --bind sr=VALUE' when input i is computed from graph inputs."""
        if i >= len(self.node.input) or not self.node.input[i]:
            return ""
        feeding = self.builder.graph_inputs_feeding(self.node.input[i])
        if not feeding:
            return ""
        return "; it depends on graph input(s) " + ", ".join(repr(n) for n in feeding) + \
            ": fix it with " + " ".join(f"--bind {n}=VALUE" for n in feeding)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    # --- outputs
    def emit(
        self,
        kind: str,
        inputs: Sequence[str],
        attrs: dict[str, Any] | None = None,
        outputs: Sequence[str] | None = None,
        num_outputs: int = 1,
    ) -> list[str]:
        """Append a graph-IR op; returns its output names. Pass `outputs=ctx.node.output` for the
        op that produces the node's own outputs, so the ONNX names survive."""
        return self.builder.emit(self.node, kind, inputs, attrs or {}, outputs, num_outputs)

    def inline(self, graph: onnx.GraphProto, label: str) -> list[str]:
        """Convert a subgraph (an If branch) in place; the graph-IR names of its outputs."""
        return self.builder.inline_graph(graph, self.opset, f"{label} of {self.node.op_type} "
                                         f"'{self.node.name}'")

    def constant(self, array: np.ndarray, hint: str = "const") -> str:
        """Add a new constant tensor; returns its name."""
        return self.builder.add_constant(np.asarray(array), hint)
