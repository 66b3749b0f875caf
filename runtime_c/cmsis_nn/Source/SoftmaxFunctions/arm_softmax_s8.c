/* nnc portable CMSIS-NN subset: s8 softmax, bit-exact with TFLite's int8 reference softmax, which
 * evaluates exp and 1/x in gemmlowp fixed point:
 *   - x - max is scaled by mult/shift into Q5.26 and exp() of it taken in Q0.31;
 *   - the exps are summed in Q12.19, the sum's reciprocal taken by Newton-Raphson;
 *   - each output is exp * reciprocal, rescaled to 1/256 steps and offset by -128. */
#include "arm_nnfunctions.h"
#include "arm_nnsupportfunctions.h"

#define ACCUM_BITS 12 /* integer bits of the Q12.19 sum of exps */

/* gemmlowp SaturatingRoundingMultiplyByPOT for a positive exponent: a saturating left shift */
static int32_t sat_left_shift(const int32_t x, const int32_t exponent)
{
    const int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

/* exp(a) for a in [-1/4, 0), a and the result in Q0.31: Taylor series around -1/8 */
static int32_t exp_on_interval_minus_quarter_to_zero(const int32_t a)
{
    const int32_t exp_minus_one_eighth = 1895147668; /* exp(-1/8) */
    const int32_t one_third = 715827883;
    const int32_t x = a + (1 << 28); /* a + 1/8 */
    const int32_t x2 = arm_nn_doubling_high_mult(x, x);
    const int32_t x3 = arm_nn_doubling_high_mult(x2, x);
    const int32_t x4 = arm_nn_doubling_high_mult(x2, x2);
    const int32_t x4_over_4 = arm_nn_divide_by_power_of_two(x4, 2);
    const int32_t poly = arm_nn_divide_by_power_of_two(
        arm_nn_doubling_high_mult(x4_over_4 + x3, one_third) + x2, 1);
    return exp_minus_one_eighth + arm_nn_doubling_high_mult(exp_minus_one_eighth, x + poly);
}

/* exp(a) for a <= 0 in Q5.26, result in Q0.31 (gemmlowp exp_on_negative_values) */
static int32_t exp_on_negative_values(const int32_t a)
{
    /* exp(-2^k) for k = -2 .. 4, in Q0.31 */
    static const int32_t exp_of_minus_pot[7] = {1672461947, 1302514674, 790015084, 290630308,
                                                39332535,   720401,     242};
    const int32_t one_quarter = 1 << 24; /* Q5.26 */
    const int32_t a_mod_quarter_minus_quarter = (a & (one_quarter - 1)) - one_quarter;
    int32_t result = exp_on_interval_minus_quarter_to_zero(sat_left_shift(a_mod_quarter_minus_quarter, 5));
    const int32_t remainder = a_mod_quarter_minus_quarter - a;
    for (int32_t k = 0; k < 7; k++) {
        if (remainder & (1 << (24 + k))) {
            result = arm_nn_doubling_high_mult(result, exp_of_minus_pot[k]);
        }
    }
    return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + a) for a in [0, 1) in Q0.31, result in Q0.31 (gemmlowp one_over_one_plus_x_for_x_in_0_1) */
static int32_t one_over_one_plus_x(const int32_t a)
{
    /* half_denominator = (a + 1) / 2, rounded (gemmlowp RoundingHalfSum) */
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    const int32_t c_48_over_17 = 1515870810;       /* Q2.29 */
    const int32_t c_neg_32_over_17 = -1010580540;  /* Q2.29 */
    const int32_t one_q2 = 1 << 29;
    int32_t x = c_48_over_17 + arm_nn_doubling_high_mult(half_denominator, c_neg_32_over_17);
    for (int32_t i = 0; i < 3; i++) {
        const int32_t one_minus_hd_x = one_q2 - arm_nn_doubling_high_mult(half_denominator, x);
        x = x + sat_left_shift(arm_nn_doubling_high_mult(x, one_minus_hd_x), 2);
    }
    return sat_left_shift(x, 1);
}

/* (x - max) in Q5.26: TFLite MultiplyByQuantizedMultiplierGreaterThanOne, shift in [0, 31] */
static int32_t scale_diff(const int32_t diff, const int32_t mult, const int32_t shift)
{
    return arm_nn_doubling_high_mult((int32_t)((uint32_t)diff << shift), mult);
}

static int32_t count_leading_zeros(uint32_t v)
{
    int32_t n = 0;
    if (v == 0) {
        return 32;
    }
    while ((v & 0x80000000u) == 0) {
        v <<= 1;
        n++;
    }
    return n;
}

void arm_softmax_s8(const int8_t *input,
                    const int32_t num_rows,
                    const int32_t row_size,
                    const int32_t mult,
                    const int32_t shift,
                    const int32_t diff_min,
                    int8_t *output)
{
    for (int32_t r = 0; r < num_rows; r++) {
        const int8_t *in = input + (ptrdiff_t)r * row_size;
        int8_t *out = output + (ptrdiff_t)r * row_size;
        int32_t max = in[0];
        for (int32_t c = 1; c < row_size; c++) {
            max = in[c] > max ? in[c] : max;
        }
        int32_t sum = 0;
        for (int32_t c = 0; c < row_size; c++) {
            const int32_t diff = in[c] - max;
            if (diff >= diff_min) {
                const int32_t scaled = scale_diff(diff, mult, shift);
                sum += arm_nn_divide_by_power_of_two(exp_on_negative_values(scaled), ACCUM_BITS);
            }
        }
        /* sum >= exp(0) in Q12.19, so it is positive: normalise it to [1, 2) and invert */
        const int32_t headroom = count_leading_zeros((uint32_t)sum);
        const int32_t reciprocal = one_over_one_plus_x(
            (int32_t)(((uint32_t)sum << headroom) - 0x80000000u));
        const int32_t bits_over_unit = ACCUM_BITS - headroom + 31 - 8;
        for (int32_t c = 0; c < row_size; c++) {
            const int32_t diff = in[c] - max;
            int32_t res = INT8_MIN;
            /* a sum >= 2^28 makes the shift 32..35 (undefined in C): every output rounds to 0 */
            if (diff >= diff_min && bits_over_unit <= 31) {
                const int32_t scaled = scale_diff(diff, mult, shift);
                const int32_t p = arm_nn_doubling_high_mult(reciprocal, exp_on_negative_values(scaled));
                res = arm_nn_clamp(arm_nn_divide_by_power_of_two(p, bits_over_unit) + INT8_MIN,
                                   INT8_MIN, INT8_MAX);
            }
            out[c] = (int8_t)res;
        }
    }
}
