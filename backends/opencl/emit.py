"""Loop IR -> OpenCL: `emit_opencl(module)` returns model.cl (one `__kernel` per kernel) and the
host side (model.c + model.h with the C backend's API, weights.bin + blobs.c).

    >>> files = emit_opencl(module, prefix="nnc")      # doctest: +SKIP
    >>> sorted(files)                                   # doctest: +SKIP
    ['blobs.c', 'model.c', 'model.cl', 'model.h', 'nnc_opencl_prefix.h', 'weights.bin']

Memory: one device buffer for the arena (the planner's offsets), one for all constants
(weights.bin, each constant 64-byte aligned), one per model input and output. Every kernel
takes the buffers it touches as arguments and derives its tensors' pointers from them at
offsets fixed at compile time, so no sub-buffer is created (and CL_DEVICE_MEM_BASE_ADDR_ALIGN,
which only constrains sub-buffer origins, does not apply). Arguments are set once at init.

Kernels are `OpenCLEmitter` (a thin `CStyleEmitter` subclass) output; the outer independent
loops become work-item dimensions (`nnc.backends.opencl.mapping`). A register tile's vectorized
float32 loop of 2, 4, 8 or 16 iterations is OpenCL vector code (`vector_loop`: floatN values,
vloadN/vstoreN on global buffers, the private tile accessed as aligned floatN), so the device
compiler uses vector registers of the tile's width; any other loop stays scalar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nnc.backends.c.emit import (
    ADD,
    MUL,
    PRIMARY,
    UNARY,
    WEIGHTS_ALIGN,
    CExpr,
    CStyleEmitter,
    EmitError,
    ModuleEmitter,
    NameTable,
    c_string,
    kernel_comment,
)
from nnc.backends.opencl.mapping import (
    DEVICE_TYPES,
    WorkMapping,
    device_mappings,
    shrink_locals,
    unite,
)
from nnc.ir.affine import flat_offset
from nnc.ir.loops import (
    Binary,
    Buffer,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Load,
    LoopModule,
    Stmt,
    Store,
    Var,
    map_expr,
    uses_var,
    walk_expr,
    walk_stmts,
)

TEMPLATES = Path(__file__).parent / "templates"

# argument spaces, as in runtime_c/opencl/nnc_opencl.h
ARENA, WEIGHTS, INPUT, OUTPUT = 0, 1, 2, 3
_SPACE_CODES = {"arena": ARENA, "constant": WEIGHTS, "input": INPUT, "output": OUTPUT}
_ARG_NAMES = {ARENA: "nnc_arena", WEIGHTS: "nnc_weights", INPUT: "nnc_in", OUTPUT: "nnc_out"}

# OpenCL C has the C99 math names as overloads (no f suffix); nearbyint is spelled rint
_CL_MATH = {"round": "rint", "mod": "fmod"}

# vectorized loops of these extents over float32 become OpenCL vector code (floatN, vloadN,
# vstoreN): the device compiler then uses registers of that width (PoCL's LLVM keeps the
# loops it vectorizes itself at 256 bits on AVX-512 and did not vectorize the tiles' 4-lane
# loops at all beyond SSE); lane-wise IEEE arithmetic, so the results are the scalar loop's
VECTOR_WIDTHS = (2, 4, 8, 16)
LOCAL_ALIGN = 64  # bytes: private float arrays, so their lanes may be accessed as float16
_VECTOR_OPS = {"add": ("+", ADD), "sub": ("-", ADD), "mul": ("*", MUL)}

PREAMBLE = """\
/* OpenCL C has no <stdint.h>: its fixed-width types under the C names the emitter uses */
typedef char int8_t;
typedef uchar uint8_t;
typedef short int16_t;
typedef ushort uint16_t;
typedef int int32_t;
typedef uint uint32_t;
typedef long int64_t;
typedef ulong uint64_t;
#define INT64_C(x) ((long)(x##L))
#define UINT64_C(x) ((ulong)(x##UL))
#define UINT32_C(x) ((uint)(x##U))
#ifndef INT64_MIN
#define INT64_MIN (-0x7fffffffffffffffL - 1L)
#endif
#ifndef INT32_MIN
#define INT32_MIN (-2147483647 - 1)
#endif
#ifndef INT32_MAX
#define INT32_MAX 2147483647
#endif
/* ISO C: no contraction, so float results match the loop interpreter bit for bit (with the
 * vector code, contraction measured no faster on PoCL) */
#pragma OPENCL FP_CONTRACT OFF
"""


# float -> nearest-even half -> float without cl_khr_fp16 (halves are stored with
# vstore_half_rte, which rounds the same way; in between they are floats holding halves)
HALF_ROUNDING = """\
static float nnc_f16r(float x)
{
    uint u = as_uint(x), a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return x;                                  /* NaN */
    if (a >= 0x477ff000u) return as_float((u & 0x80000000u) | 0x7f800000u); /* to inf */
    if (a < 0x38800000u) return rint(x * 0x1p24f) * 0x1p-24f;      /* subnormal half */
    u += 0xfffu + ((u >> 13) & 1u);                                 /* 10 mantissa bits */
    return as_float(u & ~0x1fffu);
}
#define NNC_F16(x) nnc_f16r((float)(x))
"""


@dataclass(frozen=True, slots=True)
class KernelArg:
    """One argument of a kernel: the device buffer of `space` (`index`-th input/output)."""

    space: int
    index: int

    @property
    def name(self) -> str:
        base = _ARG_NAMES[self.space]
        return f"{base}{self.index}" if self.space in (INPUT, OUTPUT) else base


class OpenCLEmitter(CStyleEmitter):
    """OpenCL C kernels: `__kernel` functions over `__global` buffers, the mapped outer loops
    as `get_global_id(d)`, overloaded math names. Before each `kernel()` call the module
    emitter sets `work` (the mapping), `args` (the kernel's buffer arguments) and `places`
    (param -> (argument, byte offset))."""

    kernel_attributes = ()

    def __init__(self) -> None:
        super().__init__()
        self.work = WorkMapping()
        self.args: list[KernelArg] = []
        self.places: dict[str, tuple[KernelArg, int]] = {}

    def storage_type(self, dtype: str) -> str:
        # float16 tensors are `half` buffers read and written with vload_half/vstore_half_rte
        # (core OpenCL 1.2: no cl_khr_fp16 needed) and computed in float, as on the host
        return "half" if dtype == "float16" else super().storage_type(dtype)

    def local_decl(self, buf: Buffer, cname: str) -> str:
        if buf.dtype == "float16":  # a private half array needs cl_khr_fp16: floats that
            buf = Buffer(buf.name, buf.shape, "float32", buf.scope)  # hold rounded halves
        decl = super().local_decl(buf, cname)
        if buf.dtype == "float32" and buf.shape and buf.size > 1:  # vector lanes (float16)
            decl = f"__attribute__((aligned({LOCAL_ALIGN}))) {decl}"
        return decl

    def _global_half(self, name: str, indices: Sequence[Expr]) -> tuple[str, str] | None:
        """(pointer, index) of an element of a global float16 buffer, else None."""
        buf = self.buffer(name)
        if buf.dtype != "float16" or buf.scope == "local":
            return None
        text = self.element(name, indices)
        at = text.index("[")
        return text[:at], text[at + 1:-1]

    def expr_load(self, e: Load) -> CExpr:
        half = self._global_half(e.buffer, e.indices)
        if half is None:
            return super().expr_load(e)
        self.loaded.add(e.buffer)
        return CExpr(f"vload_half({half[1]}, {half[0]})", PRIMARY)

    def stmt_store(self, s: Store, depth: int) -> list[str]:
        half = self._global_half(s.buffer, s.indices)
        if half is None:
            return super().stmt_store(s, depth)
        if s.value.dtype != "float16":
            raise EmitError(f"store of a {s.value.dtype} value into float16 buffer "
                            f"{s.buffer!r}")
        value = self.expr(s.value).text
        return [f"{self.indent_unit * depth}vstore_half_rte({value}, {half[1]}, {half[0]});"]

    def math_fn(self, fn: str, dtype: str) -> str:
        return _CL_MATH.get(fn, super().math_fn(fn, "float64"))

    def loop_pragma(self, s: For) -> str | None:
        if s.kind == "unrolled":
            return f"#pragma unroll {min(max(s.extent, 1), 64)}"
        return None

    def stmt_for(self, s: For, depth: int) -> list[str]:
        spread = self.work.spread_of(s.var)
        if spread is not None:
            return self.spread_for(s, spread.dim, spread.shift, depth)
        dim = self.work.dim_of(s.var)
        if dim is None:
            return self.vector_loop(s, depth) or super().stmt_for(s, depth)
        pad = self.indent_unit * depth
        var = self.names.unique(s.var)
        self.vars[s.var] = var
        lines = [f"{pad}const ptrdiff_t {var} = (ptrdiff_t)get_global_id({dim});",
                 f"{pad}if ({var} >= {s.extent}) return;"]
        lines += self.block(s.body, depth)  # a mapped loop is alone in its parent: nothing follows
        del self.vars[s.var]
        return lines

    # ---- vector code for vectorized loops

    def _form(self, name: str, indices: Sequence[Expr]) -> dict[str, int] | None:
        names = {x.name for i in indices for x in walk_expr(i) if isinstance(x, Var)}
        return flat_offset(indices, self.buffer(name).shape, {n: 2 for n in names})

    def _lane_kind(self, e: Expr, var: str, written: dict[str, dict[str, int]]) -> str | None:
        """"s" (the same in every lane), "v" (lane l is iteration l) or None (no vector form)
        of an expression inside vectorized loop `var`; `written` holds each buffer the loop
        stores and the flat form of its stores."""
        if not uses_var(e, var):
            if any(isinstance(x, Load) and x.buffer in written for x in walk_expr(e)):
                return None  # reads what the loop writes: leave it to the scalar loop
            return "s"
        if e.dtype != "float32":
            return None
        if isinstance(e, Load):
            buf = self.buffer(e.buffer)
            if buf.dtype != "float32" or not self._vector_buffer(buf):
                return None
            form = self._form(e.buffer, e.indices)
            if form is None or form.get(var) != 1:
                return None
            if e.buffer in written and written[e.buffer] != form:
                return None  # another element than the one stored: a loop-carried value
            return "v"
        if isinstance(e, Binary) and e.op in _VECTOR_OPS:
            kinds = {self._lane_kind(x, var, written) for x in (e.a, e.b)}
            return None if None in kinds else "v"
        return None

    def _vector_buffer(self, buf: Buffer) -> bool:
        """A buffer vector code may touch: a private array, or a global that overlaps no other
        param (restrict), so reordering its accesses across lanes cannot change a result."""
        return buf.scope == "local" or buf.name in self._restrict

    def _vector_stores(self, body: Sequence[Stmt], var: str) -> dict[str, dict[str, int]] | None:
        """The buffers the loop body stores (each store contiguous along `var`, one form per
        buffer), or None when the body is not only such stores and ifs that do not depend on
        `var` (and read nothing the loop writes)."""
        out: dict[str, dict[str, int]] = {}
        for st in body:
            if isinstance(st, If):
                if st.orelse or uses_var(st.cond, var):
                    return None
                inner = self._vector_stores(st.then, var)
                if inner is None:
                    return None
                for b, f in inner.items():
                    if out.setdefault(b, f) != f:
                        return None
            elif isinstance(st, Store):
                buf = self.buffer(st.buffer)
                if buf.dtype != "float32" or st.value.dtype != "float32" or not buf.shape \
                        or not self._vector_buffer(buf):
                    return None
                form = self._form(st.buffer, st.indices)
                if form is None or form.get(var) != 1 or out.setdefault(st.buffer, form) != form:
                    return None
            else:
                return None
        return out

    def _at_zero(self, indices: Sequence[Expr], var: str) -> tuple[Expr, ...]:
        return tuple(map_expr(i, lambda x: Const(0, "int64")
                              if isinstance(x, Var) and x.name == var else None)
                     for i in indices)

    def _lane_address(self, name: str, indices: Sequence[Expr], var: str) -> str:
        """`pointer + offset` of lane 0 (iteration var = 0) of buffer[indices]."""
        text = self.element(name, self._at_zero(indices, var))
        at = text.index("[")
        return f"{text[:at]} + ({text[at + 1:-1]})"

    def _aligned_lanes(self, name: str, indices: Sequence[Expr], var: str, n: int) -> bool:
        """Whether buffer[indices]'s lanes are a private array's n-aligned floatN (its arrays
        are LOCAL_ALIGN-aligned): accessed as one, not through vloadN/vstoreN, which PoCL
        links as library calls after its work-item loops kept every private array a call
        touches in memory, one copy per work item."""
        buf = self.buffer(name)
        if buf.scope != "local" or buf.dtype != "float32" or 4 * n > LOCAL_ALIGN:
            return False
        form = self._form(name, self._at_zero(indices, var))
        return form is not None and all(c % n == 0 for c in form.values())

    def _vector_expr(self, e: Expr, var: str, n: int) -> CExpr:
        if not uses_var(e, var):
            return self.expr(e)
        if isinstance(e, Load):
            self.loaded.add(e.buffer)
            address = self._lane_address(e.buffer, e.indices, var)
            if self._aligned_lanes(e.buffer, e.indices, var, n):
                return CExpr(f"*(float{n} *)({address})", UNARY)
            return CExpr(f"vload{n}(0, {address})", PRIMARY)
        assert isinstance(e, Binary) and e.op in _VECTOR_OPS
        sym, prec = _VECTOR_OPS[e.op]
        a, b = self._vector_expr(e.a, var, n), self._vector_expr(e.b, var, n)
        return CExpr(f"{a.at(prec)} {sym} {b.at(prec - 1)}", prec)

    def _vector_block(self, body: Sequence[Stmt], var: str, n: int, depth: int) -> list[str]:
        pad = self.indent_unit * depth
        lines: list[str] = []
        for st in body:
            if isinstance(st, If):
                lines += [f"{pad}if ({self.text(st.cond)}) {{",
                          *self._vector_block(st.then, var, n, depth + 1), pad + "}"]
                continue
            assert isinstance(st, Store)
            value = self._vector_expr(st.value, var, n).text
            if not uses_var(st.value, var):
                value = f"(float{n})({value})"
            address = self._lane_address(st.buffer, st.indices, var)
            if self._aligned_lanes(st.buffer, st.indices, var, n):
                lines.append(f"{pad}*(float{n} *)({address}) = {value};")
            else:
                lines.append(f"{pad}vstore{n}({value}, 0, {address});")
        return lines

    def vector_loop(self, s: For, depth: int) -> list[str]:
        """A vectorized float32 loop as OpenCL vector code, one statement per vector (lane l
        is iteration l), when every store is contiguous along the loop and every operand is
        contiguous or the same in all lanes; [] when not (the scalar loop then)."""
        if s.kind != "vectorized" or s.extent not in VECTOR_WIDTHS:
            return []
        written = self._vector_stores(s.body, s.var)
        if not written:
            return []
        for st in walk_stmts(s.body):
            if isinstance(st, Store):
                if self._lane_kind(st.value, s.var, written) is None:
                    return []
                exprs: tuple[Expr, ...] = (*st.indices, st.value)
            else:
                exprs = (st.cond,) if isinstance(st, If) else ()
            for x in (x for e in exprs for x in walk_expr(e)):
                if isinstance(x, Load) and (not self._vector_buffer(self.buffer(x.buffer)) or (
                        x.buffer in written and not isinstance(st, Store))):
                    return []
            if isinstance(st, Store) and any(
                    isinstance(x, Load) and x.buffer in written
                    for e in st.indices for x in walk_expr(e)):
                return []
        pad = self.indent_unit * depth
        return [f"{pad}{{ /* {s.var}: {s.extent} lanes */",
                *self._vector_block(s.body, s.var, s.extent, depth + 1), pad + "}"]

    def spread_for(self, s: For, dim: int, shift: int, depth: int) -> list[str]:
        """An inner loop spread over dimension `dim`: this item runs iteration id - shift."""
        pad = self.indent_unit * depth
        var = self.names.unique(s.var)
        outer = self.vars.get(s.var)
        self.vars[s.var] = var
        at = f" - {shift}" if shift else ""
        lines = [f"{pad}{{",
                 f"{pad}    const ptrdiff_t {var} = (ptrdiff_t)get_global_id({dim}){at};",
                 f"{pad}    if ({var} >= 0 && {var} < {s.extent}) {{"]
        lines += self.block(s.body, depth + 2)
        if outer is None:
            del self.vars[s.var]
        else:
            self.vars[s.var] = outer
        return lines + [pad + "    }", pad + "}"]

    def stmt_callextern(self, s: Any, depth: int) -> list[str]:
        raise EmitError(f"kernel {self.kernel_fname}: library call {s.fn}() cannot run in "
                        "OpenCL (compile with kernels='generated')")

    def param_decl(self, buf: Buffer, cname: str, written: bool, restrict: bool) -> str:
        return "__global " + super().param_decl(buf, cname, written, restrict)

    def kernel_header(self, fname: str, params: Sequence[Buffer], decls: Sequence[str]) -> str:
        args = []
        for a in self.args:
            const = "const " if a.space in (WEIGHTS, INPUT) else ""
            args.append(f"__global {const}uchar *{a.name}")
        return f"__kernel void {fname}({', '.join(args) or 'void'})"

    def kernel_prologue(self, params: Sequence[Buffer], decls: Sequence[str]) -> list[str]:
        lines = []
        for b, decl in zip(params, decls, strict=True):
            arg, offset = self.places[b.name]
            cname = self.names[b.name]
            pointer = decl[: len(decl) - len(cname)].replace("*restrict ", "*").rstrip()
            base = f"{arg.name} + {offset}" if offset else arg.name
            lines.append(f"{decl} = ({pointer})({base});")
        return lines


class OpenCLModuleEmitter(ModuleEmitter):
    """model.cl and the host files of one LoopModule, on the C backend's layout logic."""

    only: str | None = None  # a device type whose mapping every device uses

    def weights_blob(self, used: list[str]) -> tuple[bytes, dict[str, int]]:
        """All constants the kernels use in one blob, each WEIGHTS_ALIGN-aligned."""
        blob = bytearray()
        where: dict[str, int] = {}
        for n in used:
            b = self.buf(n)
            if b.scope != "constant" or b.alias is not None:
                continue
            blob += bytes(-len(blob) % WEIGHTS_ALIGN)
            where[n] = len(blob)
            data = np.ascontiguousarray(np.asarray(self.m.constants[n]).astype(b.dtype))
            if data.dtype == np.bool_:
                data = data.astype(np.uint8)
            blob += data.astype(data.dtype.newbyteorder("<")).tobytes()
        return bytes(blob), where

    def place(self, name: str, blob_at: dict[str, int]) -> tuple[KernelArg, int]:
        """(device buffer argument, byte offset) of a global buffer."""
        r = self.root(name)
        out_index = next(i for i, o in enumerate(self.m.outputs) if o == r.name) \
            if r.scope == "output" else 0
        if r.scope == "arena":
            return KernelArg(ARENA, 0), self.offsets[r.name]
        if r.scope == "constant":
            return KernelArg(WEIGHTS, 0), blob_at[r.name]
        if r.scope == "input":
            return KernelArg(INPUT, self.m.inputs.index(r.name)), 0
        if r.scope == "output":
            return KernelArg(OUTPUT, out_index), 0
        raise EmitError(f"global buffer {name!r} has scope {r.scope!r}")

    def same_memory(self, k: Kernel, written: set[str]) -> dict[str, str] | None:
        """Params sharing a written param's memory exactly (in place), or None when some param
        overlaps a written one partially or with another shape."""
        out: dict[str, str] = {}
        for w in sorted(written):
            for p in k.params:
                if p == w or not self.regions[p].overlaps(self.regions[w]):
                    continue
                if self.regions[p] != self.regions[w] or self.buf(p).shape != self.buf(w).shape:
                    return None
                out.setdefault(p, out.get(w, w))
        return out

    def mappings(self, k: Kernel, written: set[str]) -> dict[str, WorkMapping]:
        """`k`'s work mapping per device type; with `only`, that type's mapping everywhere."""
        same = self.same_memory(k, written)
        if same is None:
            return {t: WorkMapping() for t in DEVICE_TYPES}
        maps = device_mappings(k, same)
        return {t: maps[self.only] for t in DEVICE_TYPES} if self.only else maps

    def emit(self) -> dict[str, str | bytes]:
        self.validate()
        m, p = self.m, self.p
        em = self.em
        assert isinstance(em, OpenCLEmitter)
        used = self.used_globals()
        blob, blob_at = self.weights_blob(used)
        kernels, layers, descs = [], [], []
        fnames = NameTable(reserved_prefixes=self.names.prefixes, parent=self.names)
        for i, k in enumerate(m.kernels):
            params, written, restrict = self.kernel_signature(k)
            fname = fnames.add(f"k{i}_{k.name}")
            maps = self.mappings(k, written)
            em.places = {b.name: self.place(b.name, blob_at) for b in params}
            em.args = sorted({a for a, _ in em.places.values()},
                             key=lambda a: (a.space, a.index))
            texts = []
            for work in dict.fromkeys((maps["gpu"], maps["cpu"])):  # spread variant first
                em.work = work
                kernel = shrink_locals(unite(k, work), work)
                texts.append(em.kernel(kernel, fname, params, written, restrict, self.names))
            text = texts[0] if len(texts) == 1 else (
                f"#if NNC_CL_SPREAD /* {', '.join(maps['gpu'].loops)} */\n{texts[0]}\n"
                f"#else /* CPU: {', '.join(maps['cpu'].loops)} */\n{texts[1]}\n#endif")
            kernels.append(kernel_comment(k) + "\n" + text)
            layers.append(self.layer_desc(k))
            descs.append(dict(name=fname, args=[(a.space, a.index) for a in em.args],
                              work_dim=[maps[t].work_dim for t in DEVICE_TYPES],
                              launch=launch_sizes(maps), loops=list(maps["cpu"].loops)))
        outputs = []
        for name in m.outputs:
            arg, offset = self.place(name, blob_at)
            outputs.append(dict(space=arg.space, index=arg.index, offset=offset))
        dtypes = {b.dtype for b in m.buffers} | {b.dtype for k in m.kernels for b in k.locals}
        extensions = ["cl_khr_fp64"] if "float64" in dtypes else []
        ctx = dict(
            p=p, P=p.upper(), model=m.name, helpers=list(em.helpers.values()),
            kernels=kernels, descs=descs, out_regions=outputs, extensions=extensions,
            preamble=PREAMBLE + (HALF_ROUNDING if "float16" in dtypes else ""),
            arena_size=self.arena_size, weights_size=len(blob),
            inputs=self.tensor_descs(m.inputs, m.input_names, "input"),
            outputs=self.tensor_descs(m.outputs, m.output_names, "output"),
            layers=layers, c_string=c_string,
        )
        env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                          keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
        return {
            "model.cl": env.get_template("model.cl.j2").render(**ctx),
            "model.h": env.get_template("model.h.j2").render(**ctx),
            "model.c": env.get_template("model.c.j2").render(**ctx),
            "blobs.c": env.get_template("blobs.c.j2").render(**ctx),
            "nnc_opencl_prefix.h": runtime_prefix_header(p),
            "weights.bin": blob,
        }


def runtime_prefix_header(prefix: str) -> str:
    """nnc_opencl_prefix.h: the runtime's functions become `prefix`_cl_* in this project."""
    return (f"/* Generated by nnc: the OpenCL runtime's functions are {prefix}_cl_* here, so "
            "models with\n * different prefixes link into one binary. */\n"
            f"#define NNC_CL_PREFIX {prefix}\n")


def launch_sizes(maps: dict[str, WorkMapping]) -> list[tuple[list[int], list[int]]]:
    """(global, local) sizes, three each, per device type in DEVICE_TYPES order (local 0: the
    driver picks), as the runtime's kernel table holds them."""
    out = []
    for t in DEVICE_TYPES:
        g, loc = maps[t].launch(t)
        out.append((list(g) + [1] * (3 - len(g)),
                    list(loc) + [1] * (3 - len(loc)) if loc else [0, 0, 0]))
    return out


def emit_opencl(module: LoopModule, prefix: str = "nnc",
                mapping: str | None = None) -> dict[str, str | bytes]:
    """The OpenCL project files of `module`; public host symbols start with `prefix`. Each
    device type gets its own work mapping; `mapping` (a device type) uses that type's on every
    device (so PoCL's CPU device can run, and tests check, the GPU mapping)."""
    if mapping is not None and mapping not in DEVICE_TYPES:
        raise EmitError(f"unknown device type {mapping!r}; choose one of {list(DEVICE_TYPES)}")
    me = OpenCLModuleEmitter(module, prefix, 0, OpenCLEmitter())
    me.only = mapping
    return me.emit()


def kernel_mappings(module: LoopModule, device_type: str = "cpu") -> list[WorkMapping]:
    """The work mapping of every kernel on `device_type`, as emit_opencl chooses it."""
    me = OpenCLModuleEmitter(module, "nnc", 0, OpenCLEmitter())
    return [me.mappings(k, me.kernel_signature(k)[1])[device_type] for k in module.kernels]
