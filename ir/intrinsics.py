"""Tensor intrinsics: small fixed-size computations a schedule maps a loop onto (`Intrinsic`
steps, see `nnc.ir.compute`), each with numpy semantics (what the loop-IR interpreter runs, so
every schedule is checked bit-exactly against the plain loop) and C text with a portable
fallback and the target's instructions where the compiler says it has them.

    dot4_s8(a, b, acc) = acc + sum(int32(a[i]) * int32(b[i]) for i in 0..3)    (int32, wraps)

In the loop IR the call is `Call("dot4_s8", (Load(a, idx), Load(b, idx), acc), "int32")`: the two
loads name the *first* of `width` consecutive elements (row-major) of each buffer. On Cortex-M4/M7
(ACLE `__ARM_FEATURE_SIMD32`) it is two `SXTB16` per operand and two `SMLAD` (dual 16-bit
multiply-accumulate); `dot4_s8s16` takes b as int16 (weights widened by a `Widen` step): one
`PKHBT` + one `PKHTB` per a word in place of the two `SXTB16` per b word; `dot16_s8` on Helium
(`__ARM_FEATURE_MVE`) is one `VMLADAVA.S8` over two 16-byte vector loads. SMLAD and VMLADAVA
wrap modulo 2^32 like the int32 sums of the loop IR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DotIntrinsic:
    name: str
    width: int
    c_text: str  # the C definition of `nnc_<name>(const int8_t *a, const int8_t *b, int32_t acc)`
    operands: tuple[str, str] = ("int8", "int8")  # the element types of a and b

    def numpy(self, a: np.ndarray, ia: int, b: np.ndarray, ib: int, acc: int) -> np.int32:
        """acc + a[ia:ia+w] . b[ib:ib+w] on flat int8 arrays, wrapping in int32."""
        x = a.reshape(-1)[ia:ia + self.width].astype(np.int64)
        y = b.reshape(-1)[ib:ib + self.width].astype(np.int64)
        if len(x) != self.width or len(y) != self.width:
            raise IndexError(f"{self.name}: reads past the end of a buffer")
        total = (int(acc) + int(np.dot(x, y))) & 0xFFFFFFFF
        return np.int32(total - (1 << 32) if total >= 1 << 31 else total)


_PORTABLE = """    uint32_t s = (uint32_t)acc;
    for (int i = 0; i < {w}; ++i) s += (uint32_t)((int32_t)a[i] * (int32_t)b[i]);
    return (int32_t)s;"""

DOT_INTRINSICS: dict[str, DotIntrinsic] = {
    "dot4_s8": DotIntrinsic("dot4_s8", 4, """\
#include <string.h>
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
#include <arm_acle.h>
#endif
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
/* SXTB16 of the bytes 1 and 3: one instruction with its rotation (gcc emits ROR + SXTB16) */
static inline int32_t nnc_sxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#endif
static inline int32_t nnc_dot4_s8(const int8_t *a, const int8_t *b, int32_t acc) {
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
    int32_t x, y;  /* ACLE's int8x4_t / int16x2_t are int32_t */
    memcpy(&x, a, 4);
    memcpy(&y, b, 4);
    acc = __smlad(__sxtb16(x), __sxtb16(y), acc);
    return __smlad(nnc_sxtb16_ror8(x), nnc_sxtb16_ror8(y), acc);
#else
""" + _PORTABLE.format(w=4) + """
#endif
}"""),
    # b stored as int16 (a `Widen` step on the weights): no unpacking of b; a's two SXTB16
    # halves are packed back into natural order (PKHBT / PKHTB) once per a word, which an
    # unrolled register tile of output channels shares (gcc merges the copies' a work)
    "dot4_s8s16": DotIntrinsic("dot4_s8s16", 4, """\
#include <string.h>
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
#include <arm_acle.h>
/* one instruction each (gcc has no PKHBT / PKHTB intrinsic and emits AND / ORR for them) */
static inline int32_t nnc_s8s16_sxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline int32_t nnc_s8s16_pkhbt(int32_t lo, int32_t hi) {
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}
static inline int32_t nnc_s8s16_pkhtb(int32_t hi, int32_t lo) {
    int32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(hi), "r"(lo));
    return r;
}
#endif
static inline int32_t nnc_dot4_s8s16(const int8_t *a, const int16_t *b, int32_t acc) {
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
    int32_t x, y01, y23;
    memcpy(&x, a, 4);
    memcpy(&y01, b, 4);
    memcpy(&y23, b + 2, 4);
    int32_t even = __sxtb16(x), odd = nnc_s8s16_sxtb16_ror8(x);  /* (a0, a2), (a1, a3) */
    acc = __smlad(nnc_s8s16_pkhbt(even, odd), y01, acc);         /* (a0, a1) . (b0, b1) */
    return __smlad(nnc_s8s16_pkhtb(odd, even), y23, acc);        /* (a2, a3) . (b2, b3) */
#else
""" + _PORTABLE.format(w=4) + """
#endif
}""", ("int8", "int16")),
    "dot16_s8": DotIntrinsic("dot16_s8", 16, """\
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>
#endif
static inline int32_t nnc_dot16_s8(const int8_t *a, const int8_t *b, int32_t acc) {
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
    return vmladavaq_s8(acc, vldrbq_s8(a), vldrbq_s8(b));
#else
""" + _PORTABLE.format(w=16) + """
#endif
}"""),
}
