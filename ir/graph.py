"""The graph IR: an immutable, topologically ordered module of ops on statically typed tensors.

A `Graph` holds its inputs, constants (weights), ops and outputs. Values are named; every name is
defined exactly once (a graph input, a constant or an op output). Passes never mutate a graph: they
build a new one (`Graph.replace`).

>>> from nnc.ir.types import TensorType
>>> x = Value("x", TensorType((1, 4), "float32"))
>>> y = Value("y", TensorType((1, 4), "float32"))
>>> g = Graph("tiny", inputs=(x,), outputs=(y,), constants=(), ops=(Op("relu", ("x",), (y,)),))
>>> [op.kind for op in g.ops]
['relu']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nnc.ir.types import TensorType, tensor_type_of

AttrValue = int | float | str | bool | tuple["AttrValue", ...]


def fresh_name(base: str, used: set[str]) -> str:
    """`base`, or the first of `base_1`, `base_2`, ... not in `used`; records the name in `used`."""
    name, n = base, 0
    while name in used:
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


def _freeze(value: Any) -> AttrValue:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_freeze(v) for v in value)
    raise TypeError(f"unsupported attribute value {value!r}")


@dataclass(frozen=True, slots=True)
class Attrs(Mapping[str, AttrValue]):
    """An immutable, sorted attribute dictionary."""

    items_: tuple[tuple[str, AttrValue], ...] = ()

    @staticmethod
    def of(mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> Attrs:
        merged = dict(mapping or {})
        merged.update(kwargs)
        return Attrs(tuple(sorted((k, _freeze(v)) for k, v in merged.items())))

    def __getitem__(self, key: str) -> AttrValue:
        for k, v in self.items_:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def set(self, **kwargs: Any) -> Attrs:
        return Attrs.of(dict(self.items_), **kwargs)

    # Typed accessors: an attribute value is a union, these narrow it (and say which key is wrong).

    def get_int(self, key: str, default: int | None = None) -> int:
        return int(self._scalar(key, default))

    def get_float(self, key: str, default: float | None = None) -> float:
        return float(self._scalar(key, default))

    def get_ints(self, key: str, default: tuple[int, ...] | None = None) -> tuple[int, ...]:
        return tuple(int(v) for v in self._tuple(key, default))

    def get_floats(self, key: str, default: tuple[float, ...] | None = None) -> tuple[float, ...]:
        return tuple(float(v) for v in self._tuple(key, default))

    def _scalar(self, key: str, default: AttrValue | None) -> int | float | str | bool:
        v = self[key] if default is None or key in self else default
        if isinstance(v, tuple):
            raise TypeError(f"attribute {key}={v!r} is a tuple, expected a scalar")
        return v

    def _tuple(self, key: str, default: AttrValue | None) -> tuple[int | float | str | bool, ...]:
        v = self[key] if default is None or key in self else default
        if not isinstance(v, tuple):
            raise TypeError(f"attribute {key}={v!r} is not a tuple")
        flat = []
        for e in v:
            if isinstance(e, tuple):
                raise TypeError(f"attribute {key}={v!r} is nested, expected a flat tuple")
            flat.append(e)
        return tuple(flat)


@dataclass(frozen=True, slots=True)
class Value:
    name: str
    type: TensorType


@dataclass(frozen=True, slots=True, eq=False)
class Constant:
    """A named constant tensor (weights). The array is read-only."""

    value: Value
    data: np.ndarray

    @staticmethod
    def of(name: str, data: np.ndarray) -> Constant:
        arr = np.array(data, copy=True)
        arr.setflags(write=False)
        return Constant(Value(name, tensor_type_of(arr)), arr)

    @property
    def name(self) -> str:
        return self.value.name


@dataclass(frozen=True, slots=True)
class Op:
    """One operation. `inputs` are value names ("" marks an absent optional input).

    `body` is a nested graph for ops that carry a region (a fused op holds the ops it fuses:
    the body's inputs bind, in order, to this op's inputs).
    """

    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[Value, ...]
    attrs: Attrs = field(default_factory=Attrs)
    name: str = ""
    body: Graph | None = None

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def with_(self, **changes: Any) -> Op:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    name: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    constants: tuple[Constant, ...]
    ops: tuple[Op, ...]

    def replace(self, **changes: Any) -> Graph:
        return replace(self, **changes)

    # --- lookups (computed on demand; graphs are small enough) ---
    def value_types(self) -> dict[str, TensorType]:
        types = {v.name: v.type for v in self.inputs}
        types.update({c.name: c.value.type for c in self.constants})
        for op in self.ops:
            types.update({v.name: v.type for v in op.outputs})
        return types

    def constant_map(self) -> dict[str, np.ndarray]:
        return {c.name: c.data for c in self.constants}

    def producers(self) -> dict[str, Op]:
        return {v.name: op for op in self.ops for v in op.outputs}

    def consumers(self) -> dict[str, list[Op]]:
        users: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in op.inputs:
                if name:
                    users.setdefault(name, []).append(op)
        return users

    def output_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.outputs)
