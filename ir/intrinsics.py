"""Tensor intrinsics: small fixed-size computations a schedule maps a loop onto (`Intrinsic`
steps, see `nnc.ir.compute`), each with numpy semantics (what the loop-IR interpreter runs, so
every schedule is checked bit-exactly against the plain loop) and C text with a portable
fallback and the target's instructions where the compiler says it has them.

    dot4_s8(a, b, acc) = acc + sum(int32(a[i]) * int32(b[i]) for i in 0..3)    (int32, wraps)

In the loop IR the call is `Call("dot4_s8", (Load(a, idx), Load(b, idx), acc), "int32")`: the two
loads name the *first* of `width` consecutive elements (row-major) of each buffer. On Cortex-M4/M7
(ACLE `__ARM_FEATURE_SIMD32`) it is two `SXTB16` per operand and two `SMLAD` (dual 16-bit
multiply-accumulate); `dot16_s8` on Helium (`__ARM_FEATURE_MVE`) is one `VMLADAVA.S8` over two
16-byte vector loads. SMLAD and VMLADAVA wrap modulo 2^32 like the int32 sums of the loop IR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DotIntrinsic:
    name: str
    width: int
    c_text: str  # the C definition of `nnc_<name>(const int8_t *a, const int8_t *b, int32_t acc)`

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
