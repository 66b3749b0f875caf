/* nnc portable CMSIS-NN subset: scratch sizes for arm_depthwise_conv_wrapper_s8.
 *
 * The kernel here needs no scratch; the getters report what CMSIS-NN's own kernels need so an
 * arena planned with this library also fits a real one. Only its channel-blocked "opt" kernel
 * (ch_mult 1, batch 1, unit dilation) uses scratch:
 *   - DSP: none for 3x3 with padding <= 1 (the 3x3 kernel), else KH*KW*C int16 values;
 *   - MVE: KH*KW taps of four 124-channel blocks of int8;
 *   - plain C: none. */
#include "arm_nnfunctions.h"

#define NNC_CH_IN_BLOCK_MVE 124

static int uses_opt(const cmsis_nn_dw_conv_params *p, const cmsis_nn_dims *in, const cmsis_nn_dims *out)
{
    return in->c == out->c && in->n == 1 && p->dilation.w <= 1 && p->dilation.h <= 1;
}

int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp(const cmsis_nn_dw_conv_params *dw_conv_params,
                                                          const cmsis_nn_dims *input_dims,
                                                          const cmsis_nn_dims *filter_dims,
                                                          const cmsis_nn_dims *output_dims)
{
    if (!uses_opt(dw_conv_params, input_dims, output_dims)) {
        return 0;
    }
    if (filter_dims->w == 3 && filter_dims->h == 3 && dw_conv_params->padding.h <= 1 &&
        dw_conv_params->padding.w <= 1) {
        return 0;
    }
    return input_dims->c * filter_dims->w * filter_dims->h * (int32_t)sizeof(int16_t);
}

int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size_mve(const cmsis_nn_dw_conv_params *dw_conv_params,
                                                          const cmsis_nn_dims *input_dims,
                                                          const cmsis_nn_dims *filter_dims,
                                                          const cmsis_nn_dims *output_dims)
{
    if (!uses_opt(dw_conv_params, input_dims, output_dims)) {
        return 0;
    }
    return 4 * NNC_CH_IN_BLOCK_MVE * filter_dims->w * filter_dims->h;
}

int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size(const cmsis_nn_dw_conv_params *dw_conv_params,
                                                      const cmsis_nn_dims *input_dims,
                                                      const cmsis_nn_dims *filter_dims,
                                                      const cmsis_nn_dims *output_dims)
{
#if defined(ARM_MATH_MVEI)
    return arm_depthwise_conv_wrapper_s8_get_buffer_size_mve(dw_conv_params, input_dims, filter_dims,
                                                             output_dims);
#elif defined(ARM_MATH_DSP)
    return arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp(dw_conv_params, input_dims, filter_dims,
                                                             output_dims);
#else
    (void)dw_conv_params;
    (void)input_dims;
    (void)filter_dims;
    (void)output_dims;
    return 0;
#endif
}
