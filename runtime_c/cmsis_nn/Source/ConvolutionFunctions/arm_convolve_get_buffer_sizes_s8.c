/* nnc portable CMSIS-NN subset: scratch sizes for arm_convolve_wrapper_s8.
 *
 * The kernels here need no scratch. The getters report what CMSIS-NN's own kernels need (as
 * documented for its GCC builds) so an arena planned with this library also fits a real one:
 *   - 1x1, no padding, unit dilation (the "1x1" kernels): none;
 *   - otherwise, DSP and plain C: two im2col columns of int16, rhs_cols = KH*KW*C_IN rounded up
 *     to 4: 4 * rhs_cols bytes;
 *   - otherwise, MVE (Helium): four im2col columns of int8 padded to 16 lanes.
 * The _dsp/_mve variants let a host tool size for either core; the generic getter picks by the
 * core this file is compiled for. */
#include "arm_nnfunctions.h"

static int is_1x1(const cmsis_nn_conv_params *p, const cmsis_nn_dims *in, const cmsis_nn_dims *f)
{
    return f->h == 1 && f->w == 1 && p->padding.h == 0 && p->padding.w == 0 && p->dilation.h == 1 &&
           p->dilation.w == 1 && in->c == f->c;
}

static int32_t im2col_bytes(const cmsis_nn_dims *in, const cmsis_nn_dims *f, const int mve)
{
    const int32_t rhs_cols = f->h * f->w * in->c;
    if (mve) {
        return 4 * ((rhs_cols + 15) / 16) * 16;
    }
    return 2 * ((rhs_cols + 3) / 4 * 4) * (int32_t)sizeof(int16_t);
}

int32_t arm_convolve_wrapper_s8_get_buffer_size_dsp(const cmsis_nn_conv_params *conv_params,
                                                    const cmsis_nn_dims *input_dims,
                                                    const cmsis_nn_dims *filter_dims,
                                                    const cmsis_nn_dims *output_dims)
{
    (void)output_dims;
    return is_1x1(conv_params, input_dims, filter_dims) ? 0 : im2col_bytes(input_dims, filter_dims, 0);
}

int32_t arm_convolve_wrapper_s8_get_buffer_size_mve(const cmsis_nn_conv_params *conv_params,
                                                    const cmsis_nn_dims *input_dims,
                                                    const cmsis_nn_dims *filter_dims,
                                                    const cmsis_nn_dims *output_dims)
{
    (void)output_dims;
    return is_1x1(conv_params, input_dims, filter_dims) ? 0 : im2col_bytes(input_dims, filter_dims, 1);
}

int32_t arm_convolve_wrapper_s8_get_buffer_size(const cmsis_nn_conv_params *conv_params,
                                                const cmsis_nn_dims *input_dims,
                                                const cmsis_nn_dims *filter_dims,
                                                const cmsis_nn_dims *output_dims)
{
#if defined(ARM_MATH_MVEI)
    return arm_convolve_wrapper_s8_get_buffer_size_mve(conv_params, input_dims, filter_dims, output_dims);
#else
    return arm_convolve_wrapper_s8_get_buffer_size_dsp(conv_params, input_dims, filter_dims, output_dims);
#endif
}
