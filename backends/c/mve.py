"""Helium (MVE) code for a vectorized loop of int32 lane arithmetic: one store per iteration
of an expression over contiguous loads (elementwise int8 ops: add_s8, mul_s8 and the like).

gcc 12 does not vectorize the int8 <-> int32 widening and narrowing, nor the 64-bit multiply of
`requantize`, for MVE itself. Each group of 4 lanes becomes one block of intrinsics, one
temporary per node of the expression:

    y[i] = int8(min(max(requantize(int32(a[i]) - za, m, s) + zp, lo), hi))
      ->  int32x4_t v0 = vldrbq_s32(&a[g]);  v1 = vsubq_n_s32(v0, za);  v2 = vqrdmulhq_n_s32(..)
          ...  vstrbq_s32(&y[g], v7);

The arithmetic is the loop IR's, lane for lane: add/sub/mul wrap modulo 2^32 (VADD, VSUB,
VMUL), shifts by constants (VSHL, VSHR), min/max, and `requantize` (TFLite's
MultiplyByQuantizedMultiplier) as CMSIS-NN's `arm_requantize_mve`: VQRDMULH is the saturating
rounding doubling high multiply exactly; the rounding divide by 2^r (ties away from zero) is
VRSHR (ties up) after one less on negative lanes (VQADD: INT32_MIN stays, where TFLite's
remainder test gives INT32_MIN >> r too). An extent that is not a multiple of 4 ends in one
predicated group (VCTP: the lanes past the end neither load nor store). Anything else (a
gather, a division, a select, narrow arithmetic) returns None and the loop stays scalar.
"""

from __future__ import annotations

from typing import Any

from nnc.ir.loops import (
    Binary,
    Call,
    Cast,
    Const,
    Expr,
    For,
    Load,
    Store,
    Var,
    map_expr,
    uses_var,
    walk_expr,
)

GROUP = 4  # int32 lanes per Helium vector
STRAIGHT_GROUPS = 16  # at most this many groups straight-line; more run in a loop of groups

# (load intrinsic, element type, reinterpreted from unsigned) by buffer dtype, widened to int32
_LOADS = {"int8": ("vldrbq", "int8_t", False), "uint8": ("vldrbq", "uint8_t", True),
          "int16": ("vldrhq", "int16_t", False), "uint16": ("vldrhq", "uint16_t", True),
          "int32": ("vldrwq", "int32_t", False)}
# store intrinsic by buffer dtype, narrowing int32 lanes
_STORES = {"int8": ("vstrbq_s32", "int8_t"), "int16": ("vstrhq_s32", "int16_t"),
           "int32": ("vstrwq_s32", "int32_t")}
_VV = {"add": "vaddq_s32", "sub": "vsubq_s32", "mul": "vmulq_s32", "max": "vmaxq_s32",
       "min": "vminq_s32", "and": "vandq_s32", "or": "vorrq_s32", "xor": "veorq_s32"}
_VS = {"add": "vaddq_n_s32", "sub": "vsubq_n_s32", "mul": "vmulq_n_s32"}  # vector op scalar
_COMMUTATIVE = {"add", "mul", "max", "min", "and", "or", "xor"}


class _Unsupported(Exception):
    pass


class _Group:
    """The intrinsics of one group of lanes: `value` returns the C text of a node, as a vector
    temporary (`True`) or a scalar expression the lanes share (`False`)."""

    def __init__(self, em: Any, var: str, at: Expr, pred: str | None) -> None:
        self.em, self.var, self.at, self.pred = em, var, at, pred
        self.lines: list[str] = []

    def temp(self, text: str) -> str:
        name = f"nnc_v{len(self.lines)}"
        self.lines.append(f"int32x4_t {name} = {text};")
        return name

    def addr(self, ld: Load | Store) -> str:
        """&buffer[indices] at this group's first lane."""
        idx = tuple(map_expr(i, lambda x: self.at if isinstance(x, Var) and x.name == self.var
                             else None) for i in ld.indices)
        return "&" + self.em.element(ld.buffer, idx)

    def vector(self, e: Expr) -> str:
        text, is_vec = self.value(e)
        return text if is_vec else self.temp(f"vdupq_n_s32({text})")

    def value(self, e: Expr) -> tuple[str, bool]:
        if not uses_var(e, self.var):
            if e.dtype != "int32":
                raise _Unsupported
            return self.em.text(e), False
        if isinstance(e, Cast) and e.dtype == "int32" and isinstance(e.value, Load):
            return self.load(e.value), True
        if e.dtype != "int32":
            raise _Unsupported
        if isinstance(e, Load):
            return self.load(e), True
        if isinstance(e, Binary):
            return self.binary(e), True
        if isinstance(e, Call) and e.fn == "requantize":
            return self.requantize(*e.args), True
        raise _Unsupported

    def load(self, ld: Load) -> str:
        kind = _LOADS.get(ld.dtype)
        if kind is None or not self.em.lane_contiguous(ld, self.var):
            raise _Unsupported
        fn, _, unsigned = kind
        suffix = ("u32" if unsigned else "s32")
        addr = self.addr(ld)
        text = f"{fn}_z_{suffix}({addr}, {self.pred})" if self.pred else f"{fn}_{suffix}({addr})"
        self.em.loaded.add(ld.buffer)
        return self.temp(f"vreinterpretq_s32_u32({text})" if unsigned else text)

    def binary(self, e: Binary) -> str:
        a, b, op = e.a, e.b, e.op
        if op in ("shl", "shr"):
            if not isinstance(b, Const):
                raise _Unsupported
            n = int(b.value)
            x = self.vector(a)
            if n <= 0:
                if n < 0:
                    raise _Unsupported
                return x
            if op == "shl":  # nnc_shl: a shift by 32 or more gives 0
                return self.temp(f"vshlq_n_s32({x}, {n})") if n < 32 \
                    else self.temp("vdupq_n_s32(0)")
            return self.temp(f"vshrq_n_s32({x}, {min(n, 32)})")
        if op not in _VV:
            raise _Unsupported
        va, vb = self.value(a), self.value(b)
        if not va[1] and op in _COMMUTATIVE:
            va, vb = vb, va
        if not vb[1] and op in _VS:
            return self.temp(f"{_VS[op]}({self.as_vector(va)}, {vb[0]})")
        return self.temp(f"{_VV[op]}({self.as_vector(va)}, {self.as_vector(vb)})")

    def as_vector(self, v: tuple[str, bool]) -> str:
        return v[0] if v[1] else self.temp(f"vdupq_n_s32({v[0]})")

    def requantize(self, x: Expr, m: Expr, s: Expr) -> str:
        """TFLite's MultiplyByQuantizedMultiplier on the lanes (CMSIS-NN's
        arm_requantize_mve); constant multiplier and shift fold into immediates."""
        v = self.vector(x)
        if isinstance(m, Const) and isinstance(s, Const):
            shift = int(s.value)
            if shift > 0:
                v = self.temp(f"vshlq_n_s32({v}, {shift})") if shift < 32 \
                    else self.temp("vdupq_n_s32(0)")
            h = self.temp(f"vqrdmulhq_n_s32({v}, {self.em.text(m)})")
            if shift >= 0:
                return h
            fix = self.temp(f"vqaddq_s32({h}, vshrq_n_s32({h}, 31))")
            return self.temp(f"vrshrq_n_s32({fix}, {-shift})")
        mv, sv = self.value(m), self.vector(s)
        rng = self.em.value_range(s)
        right = sv
        if rng is None or rng[1] > 0:  # a left shift possible: the positive part first
            zero = self.temp("vdupq_n_s32(0)")
            v = self.temp(f"vshlq_s32({v}, vmaxq_s32({sv}, {zero}))")
            right = self.temp(f"vminq_s32({sv}, {zero})")
        h = self.temp(f"vqrdmulhq_s32({v}, {mv[0]})" if mv[1]
                      else f"vqrdmulhq_n_s32({v}, {mv[0]})")
        # negative lanes one less where the shift is a right shift (h & shift keeps the sign
        # bit of h only then): VRSHL by the negative shift rounds ties up, so away from zero
        fix = self.temp(f"vqaddq_s32({h}, vshrq_n_s32(vandq_s32({h}, {right}), 31))")
        return self.temp(f"vrshlq_s32({fix}, {right})")

    def store(self, st: Store) -> None:
        buf = self.em.buffer(st.buffer)
        kind = _STORES.get(buf.dtype)
        v = st.value
        if kind is None or not self.em.lane_contiguous(st, self.var):
            raise _Unsupported
        if buf.dtype != "int32":
            if not (isinstance(v, Cast) and v.dtype == buf.dtype and v.value.dtype == "int32"):
                raise _Unsupported
            v = v.value
        # an in-place store reads its own element only (each group loads before it stores)
        for ld in _loads(st.value):
            if ld.buffer == st.buffer and ld.indices != st.indices:
                raise _Unsupported
        x = self.vector(v)
        fn, _ = kind
        addr = self.addr(st)
        self.lines.append(f"{fn[:-4]}_p_s32({addr}, {x}, {self.pred});" if self.pred
                          else f"{fn}({addr}, {x});")


def _loads(e: Expr) -> list[Load]:
    return [x for x in walk_expr(e) if isinstance(x, Load)]


def elementwise_lanes(em: Any, s: For) -> list[str] | None:
    """The Helium code of vectorized loop `s` (a single store of int32 lane arithmetic), one
    block per group of 4 lanes (a loop of groups past STRAIGHT_GROUPS), or None. `em` is the
    C emitter (names, elements, constant ranges)."""
    if len(s.body) != 1 or not isinstance(s.body[0], Store) or s.extent < 1:
        return None
    st = s.body[0]
    full, rest = divmod(s.extent, GROUP)
    lines: list[str] = []
    try:
        if full > STRAIGHT_GROUPS:
            g = em.names.unique(f"{s.var}_g")
            saved = em.vars.get(g)
            em.vars[g] = g
            try:
                grp = _Group(em, s.var, Var(g) * GROUP, None)
                grp.store(st)
            finally:
                if saved is None:
                    del em.vars[g]
            lines += [f"for (ptrdiff_t {g} = 0; {g} < {full}; ++{g}) {{",
                      *("    " + x for x in grp.lines), "}"]
        else:
            for k in range(full):
                grp = _Group(em, s.var, Const(k * GROUP, "int64"), None)
                grp.store(st)
                lines += ["{", *("    " + x for x in grp.lines), "}"]
        if rest:
            grp = _Group(em, s.var, Const(full * GROUP, "int64"), "nnc_p")
            grp.store(st)
            lines += ["{", f"    mve_pred16_t nnc_p = vctp32q({rest});",
                      *("    " + x for x in grp.lines), "}"]
    except _Unsupported:
        return None
    return lines
