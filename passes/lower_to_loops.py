"""lower-to-loops: graph IR → loop IR. Every (fused) op becomes one kernel built by its op's
compute definition; intermediates become arena buffers; reshape-like ops become aliases (no copy).

A fused op lowers its anchor's compute with the epilogue ops applied to each value before it is
stored, so the chain has no intermediate buffer. If the anchor's loop nest reads back its own
output or stores it more than once (then an epilogue cannot apply), the fused op is lowered
unfused instead. Each kernel records the (input, output) buffer pairs that may share memory
(`Kernel.inplace`, see `inplace_pairs`); plan-memory decides whether they do.

Each kernel also gets its workload key (`Kernel.workload`, see `workload_key`): what it computes
on which shapes and target, without names, so equal layers share a key and a tuning cache entry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnc.ir.affine import flat_offset, injective
from nnc.ir.graph import Attrs, AttrValue, Graph, Op, fresh_name
from nnc.ir.loops import (
    Buffer,
    CallExtern,
    Expr,
    For,
    If,
    Kernel,
    KernelBuilder,
    Load,
    LoopModule,
    Stmt,
    Store,
    walk_expr,
    walk_stmts,
)
from nnc.ir.ops import ComputeContext, compute_elementwise, get_op, load_broadcast
from nnc.ir.printer import format_float, format_string
from nnc.ir.types import TensorType
from nnc.passes.manager import PassContext, register_pass


def c_identifier(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "t"
    if base[0].isdigit():
        base = "t_" + base
    return fresh_name(base[:48], used)


def _stores_and_loads(stmts: Sequence[Stmt], name: str) -> tuple[int, bool]:
    """Count Store statements to `name` and whether anything loads from `name`."""

    def loads_from(e: Expr) -> bool:
        return any(isinstance(x, Load) and x.buffer == name for x in walk_expr(e))

    stores, loads = 0, False
    for s in walk_stmts(stmts):
        if isinstance(s, Store):
            stores += s.buffer == name
            loads = loads or loads_from(s.value) or any(map(loads_from, s.indices))
        elif isinstance(s, If):
            loads = loads or loads_from(s.cond)
    return stores, loads


@dataclass
class _Accesses:
    """Where a kernel body reads and writes its buffers (see `inplace_pairs`)."""

    extents: dict[str, int] = field(default_factory=dict)
    # buffer -> [(indices, enclosing loop variables)]
    stores: dict[str, list[tuple[tuple[Expr, ...], tuple[str, ...]]]] = field(default_factory=dict)
    # buffer -> [(indices, the Store whose value holds the load, or None)]
    loads: dict[str, list[tuple[tuple[Expr, ...], Store | None]]] = field(default_factory=dict)
    extern: set[str] = field(default_factory=set)  # buffers named by external calls

    def expr(self, e: Expr, into: Store | None) -> None:
        for x in walk_expr(e):
            if isinstance(x, Load):
                self.loads.setdefault(x.buffer, []).append((x.indices, into))

    def stmt(self, s: object, loop_vars: tuple[str, ...]) -> None:
        if isinstance(s, For):
            self.extents[s.var] = s.extent
            for c in s.body:
                self.stmt(c, loop_vars + (s.var,))
        elif isinstance(s, If):
            self.expr(s.cond, None)
            for c in s.then + s.orelse:
                self.stmt(c, loop_vars)
        elif isinstance(s, Store):
            self.stores.setdefault(s.buffer, []).append((s.indices, loop_vars))
            for i in s.indices:
                self.expr(i, None)
            self.expr(s.value, s)
        elif isinstance(s, CallExtern):
            self.extern.update(a for a in s.args if isinstance(a, str))
            for a in s.args:
                if isinstance(a, Expr):
                    self.expr(a, None)


def inplace_pairs(stmts: Sequence[object], ins: Sequence[Buffer | None],
                  outs: Sequence[Buffer]) -> tuple[tuple[str, str], ...]:
    """(input, output) arena buffers of one kernel that may share bytes.

    Safe when the output is stored by one statement that reaches each element at most once and
    is never read, and every read of the input (same shape and dtype) sits in that statement's
    value at the element being stored: element e of the input is then last read just before
    element e of the output overwrites it. This holds for elementwise kernels and for the
    epilogue operands of fused kernels (the residual of conv + add).
    """
    acc = _Accesses()
    for s in stmts:
        acc.stmt(s, ())
    pairs: list[tuple[str, str]] = []
    for out in outs:
        if out.scope != "arena" or out.alias or out.name in acc.extern or out.name in acc.loads:
            continue
        sites = acc.stores.get(out.name, [])
        if len(sites) != 1:
            continue
        idx, loop_vars = sites[0]
        where = flat_offset(idx, out.shape, acc.extents)
        if where is None or not injective(where, loop_vars, acc.extents):
            continue
        for x in ins:
            if (x is None or x.scope != "arena" or x.name == out.name or x.shape != out.shape
                    or x.dtype != out.dtype or x.name in acc.stores or x.name in acc.extern
                    or (x.name, out.name) in pairs):
                continue
            reads = acc.loads.get(x.name, [])
            if reads and all(into is not None and into.buffer == out.name and into.indices == idx
                             and flat_offset(ix, x.shape, acc.extents) == where
                             for ix, into in reads):
                pairs.append((x.name, out.name))
    return tuple(pairs)


# ---------------------------------------------------------------- workload keys

# Inputs that are a layer's data (weights, biases, tables, per-channel statistics): the key has
# their type only, so layers that differ only in trained values share it. Every other constant
# input (requantization multipliers and shifts, zero points, scales, clip bounds, exponents)
# changes the arithmetic and enters the key by value.
DATA_INPUTS: dict[str, tuple[int, ...]] = {
    "conv": (1, 2), "depthwise_flat": (1, 3), "conv_transpose": (1, 2), "gemm": (0, 1, 2),
    "matmul": (0, 1),
    "conv_s8": (1, 4), "fully_connected_s8": (1, 4), "conv_integer": (1,),
    "matmul_integer": (0, 1), "qlinear_conv": (3, 8), "qlinear_matmul": (0, 3), "lut_s8": (1,),
    "batch_normalization": (1, 2, 3, 4), "instance_normalization": (1, 2),
    "layer_normalization": (1, 2), "prelu": (1,), "gather": (0,),
}
INLINE_VALUES = 8  # constants up to this many elements are spelled out, larger ones digested
_PLAIN = re.compile(r"[A-Za-z0-9_.+-]*")


def _key_attr(v: AttrValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, str):
        return v if _PLAIN.fullmatch(v) else format_string(v)
    if isinstance(v, tuple):
        return "[" + ",".join(_key_attr(x) for x in v) + "]"
    return str(v)


def _key_attrs(attrs: Attrs) -> str:
    return "{" + ",".join(f"{k}={_key_attr(v)}" for k, v in attrs.items()) + "}"


def _key_type(t: TensorType) -> str:
    """`i8[1,25,5,64]@NHWC`: no quantization parameters, which no compute definition reads
    (the arithmetic they imply is in attributes and constant inputs)."""
    return str(TensorType(t.shape, t.dtype, t.layout))


def _key_values(data: np.ndarray) -> str:
    """`[1,-2]` for a small constant, `#<8 hex digits of SHA-256>` of its little-endian bytes
    otherwise (the type, printed before, fixes shape and dtype)."""
    a = np.asarray(data)
    if a.size <= INLINE_VALUES:
        vals = a.reshape(-1).tolist()
        return "[" + ",".join(format_float(v) if isinstance(v, float) else str(v)
                              for v in vals) + "]"
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return "#" + hashlib.sha256(raw).hexdigest()[:8]


def target_key(target: Any) -> str:
    """`target=<cpu> isa=<vector isa>/<bits> features=<sorted flags>` of a `Target` (or `-`)."""
    if target is None:
        return "target=-"
    cpu = getattr(target, "mcpu", None) or getattr(target, "name", "-")
    isa = getattr(target, "vector_isa", None) or "-"
    features = ",".join(sorted(getattr(target, "features", ()))) or "-"
    return f"target={cpu} isa={isa}/{getattr(target, 'vector_bits', 0)} features={features}"


def workload_key(op: Op, types: Mapping[str, TensorType], constants: Mapping[str, np.ndarray],
                 target: str) -> str:
    """The workload of the kernel lowered from `op` (a fused op: its anchor and epilogue):

        conv+relu(f32[1,1,49,10], f32[64,1,10,4] const, f32[64] const) -> (f32[1,64,25,5])
        conv{dilations=[1,1],group=1,pads=[4,1,5,1],strides=[2,2]} relu{} target=host ...

    op kinds, input and output types (shape, dtype, layout), each op's attributes,
    the values of constant inputs that are not layer data (`DATA_INPUTS`) and `target`
    (`target_key`); no value, op, buffer or loop names. See docs/architecture.md."""
    chain = op.body.ops if op.body is not None else (op,)
    data = {o.inputs[i] for o in chain for i in DATA_INPUTS.get(o.kind, ()) if i < len(o.inputs)}
    ins = []
    for n in op.inputs:
        if not n:
            ins.append("-")
            continue
        text = _key_type(types[n])
        if n in constants:
            text += " const" if n in data else f" const={_key_values(constants[n])}"
        ins.append(text)
    outs = ", ".join(_key_type(v.type) for v in op.outputs)
    kinds = "+".join(o.kind for o in chain)
    attrs = " ".join(o.kind + _key_attrs(o.attrs) for o in chain)
    return f"{kinds}({', '.join(ins)}) -> ({outs}) {attrs} {target}"


@dataclass(frozen=True)
class LowerOptions:
    # "cmsis-nn": int8 ops CMSIS-NN can run become calls into it (nnc.backends.cmsis_nn);
    # the rest, and everything with "generated", get nnc's own loop nests
    kernels: str = "generated"


class _Lowering:
    def __init__(self, graph: Graph, kernels: str = "generated", mve: bool = False,
                 target: Any = None) -> None:
        self.graph = graph
        self.target = target_key(target)
        self.types = graph.value_types()
        self.cmsis = kernels == "cmsis-nn"
        self.mve = mve  # size library scratch for Helium (Cortex-M55)
        self.used: set[str] = set()
        self.buf: dict[str, Buffer] = {}  # graph value name -> buffer
        self.extra: list[Buffer] = []  # buffers with no graph value (flat views for copies)
        self.kernels: list[Kernel] = []
        self.outputs = {v.name for v in graph.outputs}
        self.constants: dict[str, np.ndarray] = {}  # buffer name -> data
        self.graph_constants = graph.constant_map()

    def packed(self, op: Op) -> Op:
        """op with the constant inputs its loop nest prefers (`OpDef.pack`: packed weights,
        folded input offsets) as new constant buffers; op itself when it has none."""
        pack = get_op(op.kind).pack
        if pack is None:
            return op
        arrays = [self.graph_constants.get(n) if n else None for n in op.inputs]
        found = pack(op.attrs, arrays, [bool(n) for n in op.inputs])
        if found is None:
            return op
        attrs, replaced = found
        inputs = list(op.inputs) + [""] * (max(replaced, default=0) + 1 - len(op.inputs))
        for k, data in replaced.items():
            key = f"{op.name or op.kind}#{len(self.kernels)}.packed{k}"  # unique per kernel
            b = self.new_buffer(key, tuple(data.shape), data.dtype.name, "constant")
            self.constants[b.name] = data
            inputs[k] = key
        return op.with_(inputs=tuple(inputs), attrs=attrs)

    def new_buffer(self, value_name: str, shape: tuple[int, ...], dtype: str, scope: str,
                   alias: str | None = None) -> Buffer:
        b = Buffer(c_identifier(value_name, self.used), shape, dtype, scope, alias=alias)
        self.buf[value_name] = b
        return b

    def kernel_name(self, kind: str) -> str:
        return c_identifier(f"k{len(self.kernels)}_{kind}", self.used)

    # ---- kernels
    def lower_extern(self, op: Op) -> bool:
        """op as a CMSIS-NN call, with its scratch in the arena; False if CMSIS-NN can't."""
        from nnc.passes.lower_cmsis_nn import lower_cmsis

        name = self.kernel_name(op.kind)

        def scratch(nbytes: int) -> Buffer | None:
            if nbytes <= 0:
                return None
            b = Buffer(c_identifier(f"{name}_scratch", self.used), (nbytes,), "int8", "arena")
            self.extra.append(b)
            return b

        mark = len(self.extra)
        ins = [self.buf[n] if n else None for n in op.inputs]
        outs = [self.buf[v.name] for v in op.outputs]
        k = lower_cmsis(op, name, ins, outs, scratch, opdef_macs(op, self.graph), self.mve)
        if k is None:
            del self.extra[mark:]
            return False
        self.kernels.append(k.replace(workload=self.workload(op)))
        return True

    def lower_plain(self, op: Op) -> None:
        if self.cmsis and self.lower_extern(op):
            return
        opdef = get_op(op.kind)
        b = KernelBuilder(self.kernel_name(op.kind))
        packed = self.packed(op)
        ins = [self.buf[n] if n else None for n in packed.inputs]
        outs = [self.buf[v.name] for v in op.outputs]
        ctx = ComputeContext(b, packed, ins, outs)
        if opdef.compute is not None:
            opdef.compute(ctx)
        else:
            assert opdef.scalar is not None
            compute_elementwise(ctx, opdef.scalar)
        self.finish(b, ins, outs, op, opdef_macs(op, self.graph))

    def lower_fused(self, op: Op) -> bool:
        assert op.body is not None
        anchor, epilogue = op.body.ops[0], op.body.ops[1:]
        opdef = get_op(anchor.kind)
        if opdef.alias or len(anchor.outputs) != 1:
            return False
        b = KernelBuilder(self.kernel_name(anchor.kind))
        packed = self.packed(anchor)
        ins = [self.buf[n] if n else None for n in packed.inputs]
        target = self.buf[op.outputs[0].name]
        av = anchor.outputs[0]
        virtual = Buffer(c_identifier(av.name + "_v", set(self.used)), av.type.shape,
                         av.type.dtype, "arena")
        chain0 = av.name

        def apply_epilogue(value: Expr, idx: tuple[Expr, ...]) -> Expr:
            chain = chain0
            for e_op in epilogue:
                args: list[Expr | None] = []
                for n in e_op.inputs:
                    if n == chain:
                        args.append(value)
                    elif n:
                        args.append(load_broadcast(self.buf[n], idx))
                    else:
                        args.append(None)
                scalar = get_op(e_op.kind).scalar
                assert scalar is not None
                value = scalar(args, e_op.attrs, e_op.outputs[0].type.dtype)  # type: ignore[arg-type]
                chain = e_op.outputs[0].name
            return value

        ctx = ComputeContext(b, packed, ins, [virtual], apply_epilogue, target)
        if opdef.compute is not None:
            opdef.compute(ctx)
        else:
            assert opdef.scalar is not None
            compute_elementwise(ctx, opdef.scalar)
        body = tuple(b._stack[0])
        stores, loads = _stores_and_loads(body, target.name)
        _, reads_virtual = _stores_and_loads(body, virtual.name)
        if stores != 1 or reads_virtual:
            return False
        extra_ins: list[Buffer | None] = [
            self.buf[n] for n in op.inputs if n and n not in anchor.inputs
        ]
        self.finish(b, ins + extra_ins, [target], op, opdef_macs(anchor, self.graph),
                    kind=op.attr("ops", anchor.kind))
        return True

    def finish(self, b: KernelBuilder, ins: Sequence[Buffer | None], outs: Sequence[Buffer],
               op: Op, macs: int, kind: str | None = None) -> None:
        params: list[str] = []
        for x in list(ins) + list(outs):
            if x is not None and x.name not in params:
                params.append(x.name)
        inplace = inplace_pairs(b._stack[0], ins, outs)
        self.kernels.append(b.build(params, op_kind=kind or op.kind, op_name=op.name, macs=macs,
                                    inplace=inplace, workload=self.workload(op)))

    def workload(self, op: Op) -> str:
        return workload_key(op, self.types, self.graph_constants, self.target)

    def lower_copy(self, src: Buffer, dst: Buffer, op_name: str) -> None:
        """dst[...] = src[...] element by element in row-major order (shapes may differ)."""
        n = dst.size
        fs = Buffer(c_identifier(src.name + "_flat", self.used), (n,), src.dtype, src.scope,
                    alias=src.name)
        fd = Buffer(c_identifier(dst.name + "_flat", self.used), (n,), dst.dtype, dst.scope,
                    alias=dst.name)
        self.extra += [fs, fd]
        b = KernelBuilder(self.kernel_name("copy"))
        with b.loop(n) as i:
            b.store(fd, (i,), fs[i])
        key = f"copy({src}) -> ({dst}) {self.target}"
        self.kernels.append(b.build((fs.name, fd.name, src.name, dst.name), op_kind="copy",
                                    op_name=op_name, workload=key))

    # ---- whole graph
    def run(self) -> LoopModule:
        g = self.graph
        input_names = {v.name for v in g.inputs}
        used_consts = {n for op in g.ops for n in op.inputs} | self.outputs
        for v in g.inputs:
            self.new_buffer(v.name, v.type.shape, v.type.dtype, "input")
        constants = self.constants
        for c in g.constants:
            if c.name in used_consts:
                b = self.new_buffer(c.name, c.value.type.shape, c.value.type.dtype, "constant")
                constants[b.name] = c.data
        out_bufs: dict[str, Buffer] = {}
        for v in g.outputs:
            if v.name in out_bufs:
                continue
            if v.name in input_names or v.name in constants or v.name in g.constant_map():
                # an output that is an input or a constant needs its own buffer and a copy
                out_bufs[v.name] = Buffer(c_identifier(v.name + "_out", self.used), v.type.shape,
                                          v.type.dtype, "output")
        for op in g.ops:
            opdef = get_op(op.kind) if op.body is None else None
            for k, v in enumerate(op.outputs):
                is_out = v.name in self.outputs
                if opdef is not None and opdef.alias and k == 0 and not is_out and op.inputs[0]:
                    src = self.buf[op.inputs[0]]
                    self.new_buffer(v.name, v.type.shape, v.type.dtype, src.scope, alias=src.name)
                else:
                    self.new_buffer(v.name, v.type.shape, v.type.dtype,
                                    "output" if is_out else "arena")
            if opdef is not None and opdef.alias:
                if op.outputs[0].name in self.outputs:
                    self.lower_copy(self.buf[op.inputs[0]], self.buf[op.outputs[0].name], op.name)
            elif op.body is not None:
                if self.cmsis and _cmsis_anchor(op) or not self.lower_fused(op):
                    self.lower_unfused(op)
            else:
                self.lower_plain(op)
        for name, dst in out_bufs.items():
            self.lower_copy(self.buf[name], dst, name)
        out_names = tuple(out_bufs[v.name].name if v.name in out_bufs else self.buf[v.name].name
                          for v in g.outputs)
        buffers = list(self.buf.values()) + list(out_bufs.values()) + self.extra
        # constants a packed copy replaced everywhere stay out of flash
        used = {p for k in self.kernels for p in k.params} | set(out_names)
        used |= {b.alias for b in buffers if b.alias and b.name in used}
        for b in buffers:
            if b.scope == "constant" and b.name not in used:
                del constants[b.name]
        buffers = [b for b in buffers if b.scope != "constant" or b.name in used]
        return LoopModule(
            name=c_identifier(g.name or "model", set()),
            buffers=tuple(buffers),
            kernels=tuple(self.kernels),
            inputs=tuple(self.buf[v.name].name for v in g.inputs),
            outputs=out_names,
            constants=constants,
            input_names=tuple(v.name for v in g.inputs),
            output_names=tuple(v.name for v in g.outputs),
        )

    def lower_unfused(self, op: Op) -> None:
        """Lower a fused op's body op by op, with intermediates in the arena."""
        assert op.body is not None
        final = op.outputs[0].name
        self.types.update(op.body.value_types())
        for inner in op.body.ops:
            for v in inner.outputs:
                if v.name != final:
                    self.new_buffer(v.name, v.type.shape, v.type.dtype, "arena")
            self.lower_plain(inner)


def _cmsis_anchor(op: Op) -> bool:
    """Whether a fused op starts with an op CMSIS-NN may run (then it is lowered op by op, the
    anchor as a library call)."""
    from nnc.passes.lower_cmsis_nn import supports

    assert op.body is not None
    return supports(op.body.ops[0])


def opdef_macs(op: Op, graph: Graph) -> int:
    opdef = get_op(op.kind)
    if opdef.macs is None:
        return 0
    types = graph.value_types()
    in_types = [types.get(n) if n else None for n in op.inputs]
    return int(opdef.macs(in_types, [v.type for v in op.outputs], op.attrs))


@register_pass("lower-to-loops", LowerOptions)
def lower_to_loops(graph: Graph, ctx: PassContext) -> LoopModule:
    """Lower every op to a kernel (one loop nest per fused group, or a CMSIS-NN call)."""
    opts = ctx.options or LowerOptions()
    if opts.kernels not in ("generated", "cmsis-nn"):
        raise ValueError(f"kernels={opts.kernels!r}: choose 'generated' or 'cmsis-nn'")
    mve = "mve" in getattr(ctx.target, "features", ())
    return _Lowering(graph, opts.kernels, mve, ctx.target).run()
