/* nnc portable CMSIS-NN subset: the fixed-point helpers every kernel shares (TFLite/gemmlowp
 * arithmetic). Internal to the library; generated code includes only arm_nnfunctions.h. */
#ifndef ARM_NNSUPPORTFUNCTIONS_H
#define ARM_NNSUPPORTFUNCTIONS_H

#include "arm_nn_math_types.h"
#include "arm_nn_types.h"

/* Right shifts of negative values are arithmetic on every compiler this library targets (GCC,
 * Clang, Arm Compiler); TFLite and gemmlowp rely on the same. */

/** m1 * m2 / 2^31 rounded to nearest, ties up (gemmlowp SaturatingRoundingDoublingHighMul); the
 * one overflow, (-2^31)^2, saturates. */
static inline int32_t arm_nn_doubling_high_mult(const int32_t m1, const int32_t m2)
{
    if (m1 == INT32_MIN && m2 == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t v = (int64_t)m1 * (int64_t)m2;
    v += v >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    /* divide by 2^31 truncating toward zero, without a 64-bit division call */
    if (v < 0) {
        v += ((int64_t)1 << 31) - 1;
    }
    return (int32_t)(v >> 31);
}

/** dividend / 2^exponent rounded to nearest, ties away from zero; exponent in [0, 31]. */
static inline int32_t arm_nn_divide_by_power_of_two(const int32_t dividend, const int32_t exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u);
    const int32_t remainder = dividend & mask;
    int32_t result = dividend >> exponent;
    int32_t threshold = mask >> 1;
    if (result < 0) {
        threshold++;
    }
    if (remainder > threshold) {
        result++;
    }
    return result;
}

/** TFLite MultiplyByQuantizedMultiplier: val * multiplier * 2^shift / 2^31, rounded. */
static inline int32_t arm_nn_requantize(const int32_t val, const int32_t multiplier, const int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    /* the left shift wraps like TFLite's int32 multiply; callers keep it in range */
    const int32_t shifted = (int32_t)((uint32_t)val << left);
    return arm_nn_divide_by_power_of_two(arm_nn_doubling_high_mult(shifted, multiplier), right);
}

static inline int32_t arm_nn_clamp(const int32_t v, const int32_t lo, const int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/** Tap range [*start, *end) of a window of `kernel` taps spaced `dilation` apart, beginning at input
 * coordinate `origin`, that falls inside [0, size). */
static inline void arm_nn_tap_range(const int32_t origin, const int32_t kernel, const int32_t dilation,
                                    const int32_t size, int32_t *start, int32_t *end)
{
    int32_t s = 0;
    int32_t e = kernel;
    if (origin < 0) {
        s = (-origin + dilation - 1) / dilation;
    }
    if (origin + (kernel - 1) * dilation >= size) {
        e = origin >= size ? 0 : (size - 1 - origin) / dilation + 1;
    }
    *start = s;
    *end = e > s ? e : s;
}

#endif /* ARM_NNSUPPORTFUNCTIONS_H */
